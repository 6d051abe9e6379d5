"""HumanEval-shaped problems from families of small functions, each parameterised by constants.

A family fixes what the function does up to its constants ("add k to every element"); a row also draws the
function and argument names and the example inputs. The split key is family + constants, so eval asks for the
same kinds of functions as train but never with constants seen in training: SFT can teach the pattern, not the
answer.

Expected outputs in the tests come from a separate reference implementation (`ref`), not from running the
canonical body, so a wrong body and a wrong test cannot agree by construction.
"""

from __future__ import annotations

import copy
import random
import string
import textwrap
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from sftmix.data.example import Example, code_example

MAX_DIFFICULTY = 3

LIST_ARGS = ("nums", "values", "numbers", "items", "data", "arr")
STR_ARGS = ("s", "text", "word", "string", "chars")
SENTENCE_ARGS = ("sentence", "text", "line", "s", "phrase")
INT_ARGS = ("n", "x", "value", "num", "k")
WORDS = (
    "apple", "river", "stone", "green", "table", "light", "music", "paper", "cloud", "tiger", "bread", "chair",
    "ocean", "pencil", "garden", "window", "rabbit", "yellow", "silver", "planet", "sun", "cat", "dog", "sky",
    "tree", "bird", "fish", "moon", "road", "rain", "snow", "wind", "car", "box", "cup", "map", "key", "hat",
    "banana", "castle", "dragon", "forest", "island", "market", "orange", "puzzle", "rocket", "summer",
    "level", "radar", "noon", "kayak", "civic", "refer", "a", "an", "is", "on", "to", "at", "elephant",
    "mountain", "umbrella", "computer", "notebook", "sandwich", "airplane", "chocolate", "butterfly",
    "adventure", "basketball", "strawberry", "rainbow", "dolphin", "kitchen", "blanket", "lantern",
)
SEP_NAMES = {
    " ": "space", ",": "comma", "-": "dash", "/": "slash", ";": "semicolon", "|": "bar", "+": "plus",
    ".": "dot", "*": "star", "_": "underscore",
}


@dataclass
class Task:
    family: str
    key: str  # family + constants: decides train/eval
    name: str
    args: list[tuple[str, str]]  # (argument name, annotation)
    returns: str
    doc: str
    body: str  # unindented; `render` indents it
    ref: Callable
    inputs: list[tuple]  # argument tuples; the first one is the docstring example


FAMILIES: dict[str, tuple[int, Callable[[random.Random], Task]]] = {}


def _family(difficulty: int):
    def register(fn):
        FAMILIES[fn.__name__.removeprefix("_f_")] = (difficulty, fn)
        return fn

    return register


def families(difficulty: int) -> list[str]:
    return [name for name, (d, _) in FAMILIES.items() if d == difficulty]


# --- input helpers ----------------------------------------------------------------------------------------------


def _distinct(rng: random.Random, make: Callable[[], tuple], count: int | None = None) -> list[tuple]:
    """`count` (4 or 5) argument tuples with distinct reprs."""
    count = count or rng.randint(4, 5)
    seen: set[str] = set()
    out: list[tuple] = []
    for _ in range(100 * count):
        args = make()
        if repr(args) not in seen:
            seen.add(repr(args))
            out.append(args)
            if len(out) == count:
                break
    return out


def _dedup(inputs: list[tuple]) -> list[tuple]:
    """Drop repeated argument tuples (after a family forced some inputs in), keeping the first."""
    seen: set[str] = set()
    out = []
    for args in inputs:
        if repr(args) not in seen:
            seen.add(repr(args))
            out.append(args)
    return out


def _ints(rng: random.Random, lo: int, hi: int, min_len: int = 1, max_len: int = 6) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(min_len, max_len))]


def _shuffled(rng: random.Random, items: list) -> list:
    return rng.sample(items, len(items))


def _sentence(rng: random.Random, min_words: int = 2, max_words: int = 6) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words)))


def _scramble(rng: random.Random, alphabet: str, min_len: int = 3, max_len: int = 10) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(min_len, max_len)))


def _near_length_sentence(rng: random.Random, k: int) -> str:
    """Words of k-1, k and k+1 letters (where WORDS has them), shuffled."""
    by_length = {n: [w for w in WORDS if len(w) == n] for n in (k - 1, k, k + 1)}
    words = [rng.choice(ws) for ws in by_length.values() if ws]
    rng.shuffle(words)
    return " ".join(words)


def _src(block: str) -> str:
    """A body written below as an indented triple-quoted block, turned back into unindented source."""
    return textwrap.dedent(block).strip("\n")


def _ident(text: str) -> str:
    """A piece of a function name for a constant: '-' -> 'dash', 7 -> '7', -3 -> 'minus_3'."""
    if isinstance(text, int):
        return f"minus_{-text}" if text < 0 else str(text)
    return SEP_NAMES.get(text, text)


# --- difficulty 1: one-line bodies ------------------------------------------------------------------------------


@_family(1)
def _f_add_const(rng):
    k = rng.randint(1, 30)
    a = rng.choice(LIST_ARGS)
    return Task(
        "add_const", f"add_const|{k}", rng.choice([f"add_{k}", f"add_{k}_to_each", f"increase_by_{k}"]),
        [(a, "list[int]")], "list[int]", f"Return a new list with {k} added to every element of {a}.",
        f"return [x + {k} for x in {a}]", lambda xs: [v + k for v in xs],
        _distinct(rng, lambda: (_ints(rng, 0, 30, 0, 5),)),
    )


@_family(1)
def _f_multiply_const(rng):
    k = rng.choice([*range(-9, -1), *range(2, 26)])
    a = rng.choice(LIST_ARGS)
    return Task(
        "multiply_const", f"multiply_const|{k}",
        rng.choice([f"multiply_by_{_ident(k)}", f"times_{_ident(k)}", f"scale_by_{_ident(k)}"]),
        [(a, "list[int]")], "list[int]", f"Return a new list with every element of {a} multiplied by {k}.",
        f"return [x * {k} for x in {a}]", lambda xs: [v * k for v in xs],
        _distinct(rng, lambda: (_ints(rng, 0, 12, 0, 5),)),
    )


@_family(1)
def _f_count_char(rng):
    c = rng.choice(string.ascii_lowercase + string.digits)
    a = rng.choice(STR_ARGS)
    alphabet = c * 3 + "".join(rng.sample(string.ascii_lowercase, 4))
    return Task(
        "count_char", f"count_char|{c}", rng.choice([f"count_{c}", f"count_char_{c}", f"how_many_{c}"]),
        [(a, "str")], "int", f"Return how many times the character '{c}' appears in {a}.",
        f"return {a}.count('{c}')", lambda s: sum(ch == c for ch in s),
        _distinct(rng, lambda: (_scramble(rng, alphabet, 0, 10),)),
    )


@_family(1)
def _f_keep_compare(rng):
    t = rng.randint(2, 30)
    greater = rng.random() < 0.5
    a = rng.choice(LIST_ARGS)
    word, op = ("greater", ">") if greater else ("less", "<")
    names = [f"keep_greater_than_{t}", f"above_{t}", f"filter_over_{t}"] if greater else [
        f"keep_less_than_{t}", f"below_{t}", f"filter_under_{t}"]
    return Task(
        "keep_compare", f"keep_compare|{op}|{t}", rng.choice(names), [(a, "list[int]")], "list[int]",
        f"Return the elements of {a} that are {word} than {t}, in their original order.",
        f"return [x for x in {a} if x {op} {t}]",
        (lambda xs: [v for v in xs if v > t]) if greater else (lambda xs: [v for v in xs if v < t]),
        _dedup([([t - 1, t, t + 1, rng.randint(0, t + 12)],),
                *_distinct(rng, lambda: (_ints(rng, max(0, t - 12), t + 12, 1, 7),), 4)])[:5],
    )


@_family(1)
def _f_repeat(rng):
    k = rng.randint(2, 9)
    sep = rng.choice(["", "-", " ", "+", "|", "/", "*"])
    a = rng.choice(STR_ARGS)
    if sep:
        doc, body = f"Return {k} copies of {a} joined by '{sep}'.", f"return '{sep}'.join([{a}] * {k})"
        name = rng.choice([f"repeat_{k}_with_{_ident(sep)}", f"join_{k}_copies_{_ident(sep)}"])
    else:
        doc, body = f"Return {a} repeated {k} times.", f"return {a} * {k}"
        name = rng.choice([f"repeat_{k}_times", f"times_{k}"])
    return Task(
        "repeat", f"repeat|{k}|{sep}", name, [(a, "str")], "str", doc, body,
        lambda s: sep.join(s for _ in range(k)),
        _distinct(rng, lambda: (rng.choice(WORDS[:20]) if rng.random() < 0.7 else rng.choice("abxyz"),)),
    )


def _affix_task(rng, family: str, at_start: bool) -> Task:
    affix = "".join(rng.choice(string.ascii_lowercase) for _ in range(2))
    a = rng.choice(STR_ARGS)
    where = "starts" if at_start else "ends"
    names = [f"starts_with_{affix}", f"begins_with_{affix}"] if at_start else [
        f"ends_with_{affix}", f"has_suffix_{affix}"]

    def make():
        core = _scramble(rng, "abcdeimnorst" + affix, 1, 6)
        mode = rng.randint(0, 3)
        if mode == 0:  # matching
            s = affix + core if at_start else core + affix
        elif mode == 1:  # the affix, but at the other end
            s = core + affix if at_start else affix + core
        elif mode == 2:  # only half of the affix
            s = affix[0] + core if at_start else core + affix[1]
        else:
            s = core
        return (s,)

    inputs = _distinct(rng, make)
    # Both outcomes must appear, otherwise "return True" (or a wrong affix) would pass.
    other = "q" if "q" not in affix else "z"
    inputs[0] = ((affix + "ing",) if at_start else ("re" + affix,))
    inputs[1] = ((other + affix,) if at_start else (affix + other,))
    return Task(
        family, f"{family}|{affix}", rng.choice(names), [(a, "str")], "bool",
        f"Return True if {a} {where} with '{affix}', otherwise False.",
        f"return {a}.{'startswith' if at_start else 'endswith'}('{affix}')",
        (lambda s: s[:2] == affix) if at_start else (lambda s: s[-2:] == affix),
        _dedup(inputs),
    )


@_family(1)
def _f_starts_with(rng):
    return _affix_task(rng, "starts_with", True)


@_family(1)
def _f_ends_with(rng):
    return _affix_task(rng, "ends_with", False)


@_family(1)
def _f_clamp(rng):
    lo = rng.randint(0, 20)
    hi = lo + rng.randint(2, 25)
    x = rng.choice(INT_ARGS)

    def make():
        return (rng.choice([rng.randint(0, lo + 1), rng.randint(lo, hi), rng.randint(hi - 1, hi + 20)]),)

    inputs = _distinct(rng, make, 3)
    inputs = [(max(0, lo - 3),), (hi + 7,), *inputs]
    return Task(
        "clamp", f"clamp|{lo}|{hi}", rng.choice([f"clamp_{lo}_{hi}", f"limit_{lo}_to_{hi}"]), [(x, "int")], "int",
        f"Return {x} limited to the range from {lo} to {hi}: values below {lo} become {lo} and values above "
        f"{hi} become {hi}.",
        f"return max({lo}, min({hi}, {x}))", lambda v: lo if v < lo else hi if v > hi else v,
        _dedup(inputs)[:5],
    )


@_family(1)
def _f_index_or_default(rng):
    i = rng.randint(0, 9)
    default = rng.choice([-1, 0, 100])
    a = rng.choice(LIST_ARGS)

    def make():
        return (_ints(rng, 1, 50, max(0, i - 2), i + 4),)

    inputs = _distinct(rng, make, 3)
    inputs = [(_ints(rng, 1, 50, i + 1, i + 3),), (_ints(rng, 1, 50, 0, i),), *inputs]
    return Task(
        "index_or_default", f"index_or_default|{i}|{default}",
        rng.choice([f"get_index_{i}", f"element_{i}_or_default", f"item_at_{i}"]), [(a, "list[int]")], "int",
        f"Return the element at index {i} of {a}, or {default} if {a} has no element at that index.",
        f"return {a}[{i}] if len({a}) > {i} else {default}",
        lambda xs: xs[i] if i < len(xs) else default,
        _dedup(inputs)[:5],
    )


@_family(1)
def _f_remove_char(rng):
    c = rng.choice(string.ascii_lowercase + " -.")
    a = rng.choice(STR_ARGS)
    label = {" ": "spaces", "-": "dashes", ".": "dots"}.get(c, c)
    alphabet = c * 3 + "".join(rng.sample(string.ascii_lowercase, 4))
    return Task(
        "remove_char", f"remove_char|{c}", rng.choice([f"remove_{label}", f"without_{label}", f"drop_{label}"]),
        [(a, "str")], "str", f"Return {a} with every '{c}' removed.",
        f"return {a}.replace('{c}', '')", lambda s: "".join(ch for ch in s if ch != c),
        _distinct(rng, lambda: (_scramble(rng, alphabet, 1, 10),)),
    )


@_family(1)
def _f_divisible(rng):
    k = rng.randint(2, 40)
    n = rng.choice(INT_ARGS)
    # k itself (no larger divisor claims it), a near miss, and for each prime p of k a multiple of k // p that is
    # not a multiple of k, so that every proper divisor of k gives a wrong answer somewhere.
    primes = [p for p in range(2, k + 1) if k % p == 0 and all(p % q for q in range(2, p))]
    forced = [(k,), (k * rng.randint(1, 5) + 1,), *((k * rng.randint(1, 5) + k // p,) for p in primes)]
    inputs = _dedup(forced + _distinct(rng, lambda: (k * rng.randint(0, 9) + rng.choice([0, rng.randint(1, k - 1)]),)))
    return Task(
        "divisible", f"divisible|{k}", rng.choice([f"divisible_by_{k}", f"is_multiple_of_{k}"]), [(n, "int")],
        "bool", f"Return True if {n} is divisible by {k}, otherwise False.",
        f"return {n} % {k} == 0", lambda v: v - (v // k) * k == 0, inputs[:5],
    )


@_family(1)
def _f_replace_char(rng):
    old, new = rng.sample(string.ascii_lowercase, 2)
    a = rng.choice(STR_ARGS)
    alphabet = old * 3 + new + "".join(rng.sample(string.ascii_lowercase, 3))
    return Task(
        "replace_char", f"replace_char|{old}|{new}", rng.choice([f"replace_{old}_with_{new}", f"swap_{old}_to_{new}"]),
        [(a, "str")], "str", f"Return {a} with every '{old}' replaced by '{new}'.",
        f"return {a}.replace('{old}', '{new}')", lambda s: "".join(new if ch == old else ch for ch in s),
        _distinct(rng, lambda: (_scramble(rng, alphabet, 1, 10),)),
    )


@_family(1)
def _f_take_chars(rng):
    k = rng.randint(1, 15)
    first = rng.random() < 0.5
    a = rng.choice(STR_ARGS)
    side = "first" if first else "last"
    return Task(
        "take_chars", f"take_chars|{side}|{k}",
        rng.choice([f"{side}_{k}_chars", f"take_{side}_{k}", f"{side}_{k}_characters"]), [(a, "str")], "str",
        f"Return the {side} {k} characters of {a} (all of {a} if it is shorter).",
        f"return {a}[:{k}]" if first else f"return {a}[-{k}:]",
        (lambda s: s[:k]) if first else (lambda s: s[max(0, len(s) - k):]),
        _distinct(rng, lambda: (_scramble(rng, string.ascii_lowercase, max(0, k - 2), k + 6),)),
    )


@_family(1)
def _f_count_equal(rng):
    t = rng.randint(0, 30)
    a = rng.choice(LIST_ARGS)
    return Task(
        "count_equal", f"count_equal|{t}", rng.choice([f"count_{t}s", f"count_value_{t}", f"how_many_equal_{t}"]),
        [(a, "list[int]")], "int", f"Return how many elements of {a} are equal to {t}.",
        f"return {a}.count({t})", lambda xs: len([v for v in xs if v == t]),
        # t itself occurs in every input, or any other constant would count 0 just as well.
        _distinct(rng, lambda: (_shuffled(rng, _ints(rng, max(0, t - 3), t + 3, 0, 5) + [t] * rng.randint(1, 2)),)),
    )


# --- difficulty 2: loops and conditions -------------------------------------------------------------------------


@_family(2)
def _f_sum_remainder(rng):
    k = rng.randint(2, 7)
    r = rng.randint(0, k - 1)
    a = rng.choice(LIST_ARGS)
    if r == 0:
        doc = f"Return the sum of the elements of {a} that are divisible by {k}."
        names = ["sum_even"] if k == 2 else [f"sum_multiples_of_{k}", f"sum_divisible_by_{k}"]
    else:
        doc = f"Return the sum of the elements of {a} that leave remainder {r} when divided by {k}."
        names = ["sum_odd"] if k == 2 else [f"sum_remainder_{r}_mod_{k}", f"sum_mod_{k}_is_{r}"]
    body = _src(f"""
        total = 0
        for x in {a}:
            if x % {k} == {r}:
                total += x
        return total
    """)
    return Task(
        "sum_remainder", f"sum_remainder|{k}|{r}", rng.choice(names), [(a, "list[int]")], "int", doc, body,
        lambda xs: sum(v for v in xs if v % k == r), _distinct(rng, lambda: (_ints(rng, 0, 40, 2, 7),)),
    )


@_family(2)
def _f_count_letters(rng):
    if rng.random() < 0.15:
        letters, names = "aeiou", ["count_vowels", "vowel_count"]
    else:
        letters = "".join(sorted(rng.sample(string.ascii_lowercase, rng.randint(2, 4))))
        names = [f"count_{letters}", f"count_letters_{letters}"]
    a = rng.choice(STR_ARGS)
    alphabet = letters * 2 + "".join(rng.sample(string.ascii_lowercase, 5))
    body = _src(f"""
        count = 0
        for ch in {a}:
            if ch in '{letters}':
                count += 1
        return count
    """)
    return Task(
        "count_letters", f"count_letters|{letters}", rng.choice(names), [(a, "str")], "int",
        f"Return how many characters of {a} are one of the letters in '{letters}'.", body,
        lambda s: sum(1 for ch in s if letters.find(ch) >= 0),
        _dedup([("".join(rng.sample(letters + "xyz", len(letters) + 3)),),
                *_distinct(rng, lambda: (_scramble(rng, alphabet, 2, 12) if rng.random() < 0.6
                                         else _sentence(rng, 1, 3),), 4)]),
    )


@_family(2)
def _f_running_sum(rng):
    k = rng.randint(0, 30)
    a = rng.choice(LIST_ARGS)
    body = _src(f"""
        result = []
        total = {k}
        for x in {a}:
            total += x
            result.append(total)
        return result
    """)

    def ref(xs):
        return [k + sum(xs[: i + 1]) for i in range(len(xs))]

    return Task(
        "running_sum", f"running_sum|{k}", rng.choice([f"running_sum_from_{k}", f"cumulative_from_{k}"]),
        [(a, "list[int]")], "list[int]",
        f"Return the running totals of {a} starting from {k}: the i-th output is {k} plus the sum of the first "
        "i + 1 elements.",
        body, ref, _distinct(rng, lambda: (_ints(rng, 0, 20, 0, 6),)),
    )


@_family(2)
def _f_first_index_greater(rng):
    t = rng.randint(0, 30)
    a = rng.choice(LIST_ARGS)
    body = _src(f"""
        for i in range(len({a})):
            if {a}[i] > {t}:
                return i
        return -1
    """)

    def ref(xs):
        return next((i for i, v in enumerate(xs) if v > t), -1)

    # A few small values first, so the answer is not always index 0.
    inputs = _distinct(rng, lambda: (_ints(rng, 0, t, 0, 3) + _ints(rng, max(0, t - 5), t + 10, 1, 5),))
    inputs[-1] = (_ints(rng, 0, t, 1, 4),)  # nothing greater: -1
    inputs[0] = ([rng.randint(0, t), t, t + 1, t + 2],)  # the boundary itself is not greater
    return Task(
        "first_index_greater", f"first_index_greater|{t}",
        rng.choice([f"first_above_{t}", f"index_first_over_{t}"]), [(a, "list[int]")], "int",
        f"Return the index of the first element of {a} that is greater than {t}, or -1 if there is none.",
        body, ref, _dedup(inputs),
    )


@_family(2)
def _f_transform_words(rng):
    k = rng.randint(2, 8)
    longer = rng.random() < 0.5
    upper = rng.random() < 0.5
    a = rng.choice(SENTENCE_ARGS)
    cmp_word, op = ("longer", ">") if longer else ("shorter", "<")
    how = "in upper case" if upper else "capitalized (first letter in upper case)"
    method = "upper" if upper else "capitalize"
    body = _src(f"""
        words = []
        for w in {a}.split(' '):
            if len(w) {op} {k}:
                w = w.{method}()
            words.append(w)
        return ' '.join(words)
    """)

    def ref(s):
        out = []
        for w in s.split(" "):
            hit = len(w) > k if longer else len(w) < k
            out.append((w.upper() if upper else w[:1].upper() + w[1:]) if hit else w)
        return " ".join(out)

    return Task(
        "transform_words", f"transform_words|{op}|{k}|{method}",
        rng.choice([f"{method}_{cmp_word}_than_{k}", f"{method}_words_{cmp_word}_than_{k}"]), [(a, "str")], "str",
        f"Return {a} with every word {cmp_word} than {k} letters {how}. Words are separated by single spaces.",
        body, ref, _dedup([(_near_length_sentence(rng, k),), *_distinct(rng, lambda: (_sentence(rng, 2, 6),), 4)]),
    )


@_family(2)
def _f_rejoin(rng):
    seps = [" ", ",", "-", "/", ";", "|"]
    old, new = rng.sample(seps, 2)
    reverse = rng.random() < 0.5
    a = rng.choice(SENTENCE_ARGS)
    if reverse:
        doc = f"Split {a} on '{old}', reverse the order of the pieces and join them with '{new}'."
        body = _src(f"""
            pieces = []
            for piece in {a}.split('{old}'):
                pieces.insert(0, piece)
            return '{new}'.join(pieces)
        """)
        names = [f"reverse_{_ident(old)}_to_{_ident(new)}", f"flip_{_ident(old)}_parts_{_ident(new)}"]
    else:
        doc = f"Split {a} on '{old}' and join the pieces with '{new}'."
        body = _src(f"""
            pieces = []
            for piece in {a}.split('{old}'):
                pieces.append(piece)
            return '{new}'.join(pieces)
        """)
        names = [f"{_ident(old)}_to_{_ident(new)}", f"resplit_{_ident(old)}_{_ident(new)}"]

    def ref(s):
        parts = s.split(old)
        return new.join(parts[::-1] if reverse else parts)

    return Task(
        "rejoin", f"rejoin|{old}|{new}|{reverse}", rng.choice(names), [(a, "str")], "str", doc, body, ref,
        _distinct(rng, lambda: (old.join(rng.choice(WORDS) for _ in range(rng.randint(2, 5))),)),
    )


@_family(2)
def _f_count_words_length(rng):
    k = rng.randint(2, 8)
    mode = rng.choice(["more than", "fewer than", "exactly"])
    op = {"more than": ">", "fewer than": "<", "exactly": "=="}[mode]
    a = rng.choice(SENTENCE_ARGS)
    tag = {"more than": "longer", "fewer than": "shorter", "exactly": "exactly"}[mode]
    body = _src(f"""
        count = 0
        for w in {a}.split():
            if len(w) {op} {k}:
                count += 1
        return count
    """)
    checks = {">": lambda n: n > k, "<": lambda n: n < k, "==": lambda n: n == k}[op]
    return Task(
        "count_words_length", f"count_words_length|{op}|{k}",
        rng.choice([f"count_words_{tag}_{k}", f"words_{tag}_{k}_letters"]), [(a, "str")], "int",
        f"Return how many words in {a} have {mode} {k} letters. Words are separated by spaces.", body,
        lambda s: sum(1 for w in s.split() if checks(len(w))),
        _dedup([(_near_length_sentence(rng, k),), *_distinct(rng, lambda: (_sentence(rng, 2, 7),), 4)]),
    )


@_family(2)
def _f_multiples_up_to(rng):
    k = rng.randint(2, 30)
    n = rng.choice(INT_ARGS)
    body = _src(f"""
        result = []
        for i in range(1, {n} + 1):
            if i % {k} == 0:
                result.append(i)
        return result
    """)
    inputs = _distinct(rng, lambda: (rng.randint(0, 4 * k),))
    inputs[0] = (2 * k + rng.randint(0, k - 1),)
    return Task(
        "multiples_up_to", f"multiples_up_to|{k}", rng.choice([f"multiples_of_{k}", f"list_multiples_{k}"]),
        [(n, "int")], "list[int]", f"Return the list of numbers from 1 to {n} (inclusive) that are divisible by {k}.",
        body, lambda v: list(range(k, v + 1, k)), _dedup(inputs),
    )


@_family(2)
def _f_count_between(rng):
    lo = rng.randint(0, 15)
    hi = lo + rng.randint(1, 15)
    a = rng.choice(LIST_ARGS)
    body = _src(f"""
        count = 0
        for x in {a}:
            if {lo} <= x <= {hi}:
                count += 1
        return count
    """)
    return Task(
        "count_between", f"count_between|{lo}|{hi}", rng.choice([f"count_between_{lo}_{hi}", f"in_range_{lo}_{hi}"]),
        [(a, "list[int]")], "int", f"Return how many elements of {a} are between {lo} and {hi}, inclusive.", body,
        lambda xs: len([v for v in xs if v >= lo and v <= hi]),
        # Bounds and their outer neighbours, weighted so that only the range [lo, hi] counts exactly 5 of them.
        _dedup([(_shuffled(rng, [lo - 1, lo, lo, hi, hi, hi, hi + 1]),),
                *_distinct(rng, lambda: (_ints(rng, max(0, lo - 5), hi + 5, 2, 8),), 4)]),
    )


@_family(2)
def _f_all_below(rng):
    t = rng.randint(1, 40)
    a = rng.choice(LIST_ARGS)
    body = _src(f"""
        for x in {a}:
            if x >= {t}:
                return False
        return True
    """)
    inputs = _distinct(rng, lambda: (_ints(rng, max(0, t - 8), t + 3, 1, 5),))
    inputs[0] = (_shuffled(rng, _ints(rng, 0, t - 1, 1, 3) + [t - 1]),)  # the largest allowed value
    inputs[1] = ([max(0, t - 2), t],)  # the bound itself is not smaller
    return Task(
        "all_below", f"all_below|{t}", rng.choice([f"all_below_{t}", f"all_less_than_{t}"]), [(a, "list[int]")],
        "bool", f"Return True if every element of {a} is smaller than {t}, otherwise False. An empty list gives True.",
        body, lambda xs: max(xs, default=t - 1) < t, _dedup(inputs),
    )


@_family(2)
def _f_largest_below(rng):
    t = rng.randint(3, 40)
    a = rng.choice(LIST_ARGS)
    body = _src(f"""
        best = -1
        for x in {a}:
            if x < {t} and x > best:
                best = x
        return best
    """)
    inputs = _distinct(rng, lambda: (_ints(rng, max(0, t - 10), t + 10, 1, 7),))
    inputs[-1] = (_ints(rng, t, t + 9, 1, 3),)  # nothing below: -1
    inputs[0] = (rng.sample([t - 1, t, t + 3, rng.randint(0, t)], 4),)
    return Task(
        "largest_below", f"largest_below|{t}", rng.choice([f"largest_below_{t}", f"max_under_{t}"]),
        [(a, "list[int]")], "int",
        f"Return the largest element of {a} that is smaller than {t}, or -1 if there is none. "
        "All elements are non-negative.",
        body, lambda xs: max([v for v in xs if v < t], default=-1), _dedup(inputs),
    )


@_family(2)
def _f_label_multiples(rng):
    k = rng.randint(2, 7)
    word = rng.choice(["fizz", "buzz", "ping", "pong", "boom", "zap", "hop"])
    n = rng.choice(INT_ARGS)
    body = _src(f"""
        result = []
        for i in range(1, {n} + 1):
            if i % {k} == 0:
                result.append('{word}')
            else:
                result.append(str(i))
        return result
    """)
    inputs = _distinct(rng, lambda: (rng.randint(0, 12),))
    inputs[0] = (rng.randint(k + 1, 2 * k + 2),)
    return Task(
        "label_multiples", f"label_multiples|{k}|{word}", rng.choice([f"{word}_{k}", f"label_{k}_as_{word}"]),
        [(n, "int")], "list[str]",
        f"Return a list of strings for the numbers 1 to {n}: multiples of {k} become '{word}' and every other "
        "number becomes its digits, like '4'.",
        body, lambda v: [word if i % k == 0 else f"{i}" for i in range(1, v + 1)], _dedup(inputs),
    )


# --- difficulty 3: a little more logic --------------------------------------------------------------------------


@_family(3)
def _f_rotate(rng):
    k = rng.randint(1, 20)
    left = rng.random() < 0.5
    a = rng.choice(LIST_ARGS)
    side = "left" if left else "right"
    motion = "the first element moves to the end" if left else "the last element moves to the front"
    if left:
        body = _src(f"""
            if not {a}:
                return []
            shift = {k} % len({a})
            return {a}[shift:] + {a}[:shift]
        """)
    else:
        body = _src(f"""
            if not {a}:
                return []
            cut = len({a}) - {k} % len({a})
            return {a}[cut:] + {a}[:cut]
        """)

    def ref(xs):
        xs = list(xs)
        for _ in range(k if xs else 0):
            xs = xs[1:] + xs[:1] if left else xs[-1:] + xs[:-1]
        return xs

    return Task(
        "rotate", f"rotate|{side}|{k}", rng.choice([f"rotate_{side}_{k}", f"shift_{side}_by_{k}"]),
        [(a, "list[int]")], "list[int]",
        f"Return {a} rotated to the {side} by {k} steps; in each step {motion}. An empty list gives [].",
        # Lengths 7 and 8 together tell all shifts 1..20 apart; short lists check the wrap-around.
        body, ref, [(rng.sample(range(1, 30), 7),), (rng.sample(range(1, 30), 8),),
                    *_distinct(rng, lambda: (rng.sample(range(1, 30), rng.randint(0, 5)),), 3)],
    )


@_family(3)
def _f_caesar(rng):
    k = rng.randint(1, 25)
    forward = rng.random() < 0.5
    a = rng.choice(STR_ARGS)
    direction = "forward" if forward else "backward"
    sign = "+" if forward else "-"
    body = _src(f"""
        result = []
        for ch in {a}:
            if 'a' <= ch <= 'z':
                ch = chr((ord(ch) - ord('a') {sign} {k}) % 26 + ord('a'))
            result.append(ch)
        return ''.join(result)
    """)
    low = string.ascii_lowercase
    shift = k if forward else -k
    table = str.maketrans(low, low[shift % 26:] + low[: shift % 26])
    return Task(
        # Forward k and backward 26 - k are the same function: one split key, so eval never repeats a train cipher.
        "caesar", f"caesar|{shift % 26}", rng.choice([f"shift_{direction}_{k}", f"caesar_{direction}_{k}"]),
        [(a, "str")], "str",
        f"Shift every lowercase letter of {a} {k} places {direction} in the alphabet, wrapping around between "
        "'z' and 'a'. Other characters stay the same.",
        body, lambda s: s.translate(table),
        _dedup([(rng.choice(WORDS[:20]) + " xyz",),
                *_distinct(rng, lambda: (_sentence(rng, 1, 3) + rng.choice(["", "!", " 42", "Z"]),), 4)]),
    )


@_family(3)
def _f_chunks(rng):
    k = rng.randint(2, 5)
    fill = rng.randint(0, 9)
    a = rng.choice(LIST_ARGS)
    body = _src(f"""
        chunks = []
        for i in range(0, len({a}), {k}):
            chunk = {a}[i:i + {k}]
            while len(chunk) < {k}:
                chunk.append({fill})
            chunks.append(chunk)
        return chunks
    """)

    def ref(xs):
        out = [list(xs[i:i + k]) for i in range(0, len(xs), k)]
        if out:
            out[-1] += [fill] * (k - len(out[-1]))
        return out

    inputs = _distinct(rng, lambda: (_ints(rng, 10, 40, 0, 9),))
    inputs[0] = (_ints(rng, 10, 40, k + 1, 2 * k - 1),)  # the last chunk needs padding
    return Task(
        "chunks", f"chunks|{k}|{fill}", rng.choice([f"chunks_of_{k}_pad_{fill}", f"split_{k}_fill_{fill}"]),
        [(a, "list[int]")], "list[list[int]]",
        f"Split {a} into consecutive chunks of {k} elements. If the last chunk is shorter than {k}, pad it at the "
        f"end with the number {fill}. An empty list gives [].",
        body, ref, _dedup(inputs),
    )


@_family(3)
def _f_pairs_with_sum(rng):
    t = rng.randint(0, 30)
    a = rng.choice(LIST_ARGS)
    body = _src(f"""
        count = 0
        for i in range(len({a})):
            for j in range(i + 1, len({a})):
                if {a}[i] + {a}[j] == {t}:
                    count += 1
        return count
    """)

    def ref(xs):
        return sum(1 for i, u in enumerate(xs) for v in xs[i + 1:] if u + v == t)

    inputs = _distinct(rng, lambda: (_ints(rng, 0, t + 3, 2, 7),))
    x = rng.randint(0, t)
    inputs[0] = ([x, t - x, rng.randint(0, t), t - x],)  # at least two pairs
    return Task(
        "pairs_with_sum", f"pairs_with_sum|{t}", rng.choice([f"pairs_summing_to_{t}", f"count_pairs_{t}"]),
        [(a, "list[int]")], "int",
        f"Return how many pairs of positions i < j satisfy {a}[i] + {a}[j] == {t}.", body, ref, _dedup(inputs),
    )


@_family(3)
def _f_longest_run_above(rng):
    t = rng.randint(0, 20)
    a = rng.choice(LIST_ARGS)
    body = _src(f"""
        best = 0
        current = 0
        for x in {a}:
            if x > {t}:
                current += 1
                best = max(best, current)
            else:
                current = 0
        return best
    """)

    def ref(xs):
        runs = "".join("1" if v > t else "0" for v in xs).split("0")
        return max(len(r) for r in runs)

    return Task(
        "longest_run_above", f"longest_run_above|{t}", rng.choice([f"longest_run_over_{t}", f"streak_above_{t}"]),
        [(a, "list[int]")], "int",
        f"Return the length of the longest run of consecutive elements of {a} that are all greater than {t} "
        "(0 if there is none).",
        # Runs broken only by t itself, with t + 1 inside them: neighbouring thresholds give other lengths.
        body, ref, _dedup([([t + 2, t + 1, t + 2, t, t + 1, t + 3, t + 1],),
                           *_distinct(rng, lambda: (_ints(rng, max(0, t - 5), t + 6, 1, 9),), 4)]),
    )


@_family(3)
def _f_palindrome_ignoring(rng):
    c = rng.choice(string.ascii_lowercase + " -._*")
    a = rng.choice(STR_ARGS)
    label = {" ": "spaces", "-": "dashes", ".": "dots", "_": "underscores", "*": "stars"}.get(c, c)
    body = _src(f"""
        cleaned = {a}.lower().replace('{c}', '')
        return cleaned == cleaned[::-1]
    """)

    def ref(s):
        kept = [ch for ch in s.lower() if ch != c]
        return kept == kept[::-1]

    def sprinkle(s: str) -> str:
        chars = list(s)
        for _ in range(rng.randint(1, 3)):
            chars.insert(rng.randint(0, len(chars)), c)
        return "".join(ch.upper() if rng.random() < 0.2 else ch for ch in chars)

    letters = "".join(ch for ch in "abdeimnorstxyz" if ch != c)

    def make():
        half = _scramble(rng, letters[:-3], 1, 4)
        pal = half + rng.choice(["", rng.choice(letters[-3:])]) + half[::-1]
        return (rng.choice([sprinkle(pal), pal, sprinkle(half + "q"), half + c + "q"]),)

    inputs = _distinct(rng, make)
    p, q = letters[:2]
    # A palindrome only once the c's are gone (they sit asymmetrically), and one that never is.
    inputs[0] = (p.upper() + c + q + q + p + c + c,)
    inputs[1] = (sprinkle(p + q + "y" + p),)
    return Task(
        "palindrome_ignoring", f"palindrome_ignoring|{c}",
        rng.choice([f"is_palindrome_without_{label}", f"palindrome_ignoring_{label}"]), [(a, "str")], "bool",
        f"Return True if {a} reads the same forwards and backwards once every '{c}' is removed, ignoring upper "
        "and lower case, otherwise False.",
        body, ref, _dedup(inputs),
    )


@_family(3)
def _f_steps_to_zero(rng):
    k = rng.randint(2, 30)
    n = rng.choice(INT_ARGS)
    body = _src(f"""
        rest = {n}
        steps = 0
        while rest > 0:
            if rest >= {k}:
                rest -= {k}
            else:
                rest -= 1
            steps += 1
        return steps
    """)
    inputs = _distinct(rng, lambda: (rng.randint(k, 6 * k),))
    inputs[0] = (2 * k + rng.randint(1, k - 1),)
    inputs[1] = (rng.randint(0, k - 1),)
    return Task(
        "steps_to_zero", f"steps_to_zero|{k}", rng.choice([f"steps_to_zero_by_{k}", f"count_steps_{k}"]),
        [(n, "int")], "int",
        f"Starting from {n}, subtract {k} while the number is at least {k}, then subtract 1 until it reaches 0. "
        "Return how many subtractions were made.",
        body, lambda v: v // k + v % k, _dedup(inputs),
    )


@_family(3)
def _f_most_common_above(rng):
    t = rng.randint(0, 20)
    a = rng.choice(LIST_ARGS)
    body = _src(f"""
        counts = {{}}
        for x in {a}:
            if x > {t}:
                counts[x] = counts.get(x, 0) + 1
        best = -1
        for x, c in counts.items():
            if best == -1 or c > counts[best] or (c == counts[best] and x < best):
                best = x
        return best
    """)

    def ref(xs):
        counts = Counter(v for v in xs if v > t)
        return min(counts, key=lambda v: (-counts[v], v)) if counts else -1

    inputs = _distinct(rng, lambda: (_ints(rng, max(0, t - 4), t + 5, 2, 9),))
    inputs[-1] = (_ints(rng, 0, t, 1, 3),)  # nothing above: -1
    # Counts fall as values rise (t-1: 4, t: 3, t+1: 2, t+2: 1), so every other threshold picks another value.
    inputs[0] = (_shuffled(rng, [x for n, x in zip((4, 3, 2, 1), range(t - 1, t + 3)) for _ in range(n) if x >= 0]),)
    return Task(
        "most_common_above", f"most_common_above|{t}", rng.choice([f"mode_above_{t}", f"most_common_over_{t}"]),
        [(a, "list[int]")], "int",
        f"Return the value that appears most often in {a} among the elements greater than {t}. Break ties by "
        f"returning the smaller value; return -1 if no element is greater than {t}.",
        body, ref, _dedup(inputs),
    )


@_family(3)
def _f_jumps(rng):
    k = rng.randint(1, 30)
    a = rng.choice(LIST_ARGS)
    body = _src(f"""
        result = []
        for i in range(1, len({a})):
            if {a}[i] - {a}[i - 1] >= {k}:
                result.append(i)
        return result
    """)

    def ref(xs):
        return [i for i, (u, v) in enumerate(zip(xs, xs[1:]), start=1) if v - u >= k]

    inputs = _distinct(rng, lambda: (_ints(rng, 0, 2 * k + 5, 2, 8),))
    inputs[0] = ([3, 3 + k, 3 + k + k - 1, 2],)
    return Task(
        "jumps", f"jumps|{k}", rng.choice([f"jumps_of_{k}", f"rises_at_least_{k}"]), [(a, "list[int]")],
        "list[int]", f"Return the indices i (i >= 1) where {a}[i] is larger than {a}[i - 1] by at least {k}.",
        body, ref, _dedup(inputs),
    )


@_family(3)
def _f_running_max(rng):
    k = rng.randint(0, 30)
    a = rng.choice(LIST_ARGS)
    body = _src(f"""
        result = []
        best = {k}
        for x in {a}:
            if x > best:
                best = x
            result.append(best)
        return result
    """)

    def ref(xs):
        return [max([k, *xs[: i + 1]]) for i in range(len(xs))]

    inputs = _distinct(rng, lambda: (_ints(rng, 0, k + 15, 1, 7),))
    inputs[0] = ([max(0, k - 3), k + 4, k + 1, k + 9],)
    return Task(
        "running_max", f"running_max|{k}", rng.choice([f"running_max_from_{k}", f"peak_so_far_{k}"]),
        [(a, "list[int]")], "list[int]",
        f"Return a list whose i-th element is the largest of {k} and the first i + 1 elements of {a}.",
        body, ref, _dedup(inputs),
    )


# --- rendering --------------------------------------------------------------------------------------------------


def _call(name: str, args: tuple) -> str:
    return f"{name}({', '.join(repr(v) for v in args)})"


def render(task: Task) -> tuple[str, str, str]:
    """(prompt, canonical_solution, test) in HumanEval's layout."""
    sig = ", ".join(f"{arg}: {ann}" for arg, ann in task.args)
    # The reference may mutate its arguments; expected values are computed on copies.
    expected = [task.ref(*copy.deepcopy(args)) for args in task.inputs]
    doc = "\n    ".join(textwrap.wrap(task.doc, 96))
    prompt = (
        f"def {task.name}({sig}) -> {task.returns}:\n"
        f'    """{doc}\n'
        f"    >>> {_call(task.name, task.inputs[0])}\n"
        f"    {expected[0]!r}\n"
        f'    """\n'
    )
    solution = textwrap.indent(task.body, "    ") + "\n"
    asserts = "".join(
        f"    assert {_call('candidate', args)} == {out!r}\n" for args, out in zip(task.inputs, expected)
    )
    return prompt, solution, f"def check(candidate):\n{asserts}"


def draw(rng: random.Random, difficulty: int) -> tuple[str, Example] | None:
    family = rng.choice(families(difficulty))
    task = FAMILIES[family][1](rng)
    if len(task.inputs) < 3:  # forced inputs collided with drawn ones: too few asserts to be a fair test
        return None
    prompt, solution, test = render(task)
    ex = code_example(
        prompt, solution, canonical_solution=solution, test=test, entry_point=task.name, family=task.family,
    )
    return task.key, ex
