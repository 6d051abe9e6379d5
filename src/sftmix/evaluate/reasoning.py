"""The reasoning suite of Zhang et al. 2024 (SPEC study 2): twelve zero-shot tasks in three domains.

  symbolic    last_letter_concat, first_letter_concat, list_reversal, coin_flip
  logical     babi_deduction, babi_induction, clutrr_kinship, logical_ordering
  arithmetic  gsm_style, svamp_style, multistep_arithmetic, addsub

No data ships for them, so each task draws its items offline from a seeded stream (param `seed`; `limit` or `n`
items, 100 by default) with an answer computed alongside the question; `path` loads a JSONL/JSON file of
{question, answer} rows (optional `choices`) instead. Every item's meta carries `answer`, the answer `kind` that
decides the comparison, and `domain`; `domain_scores` averages task scores per domain.

Scoring reads the first marked answer ("The answer is ...", "####", \\boxed{}) and falls back to the answer-shaped
text at the end of the reply; text copied from the question and replies that loop one token never count.
"""

from __future__ import annotations

import itertools
import random
import re

from ..data.example import Example, chat
from ..errors import SftmixError
from .scoring import extract_number, marked_answers, numbers_equal
from .settings import GenSettings
from .tasks import SUITES, Task, int_param, score_answers, task

DOMAINS = {
    "symbolic": ("last_letter_concat", "first_letter_concat", "list_reversal", "coin_flip"),
    "logical": ("babi_deduction", "babi_induction", "clutrr_kinship", "logical_ordering"),
    "arithmetic": ("gsm_style", "svamp_style", "multistep_arithmetic", "addsub"),
}
REASONING_TASKS = tuple(t for names in DOMAINS.values() for t in names)
DOMAIN_OF = {t: d for d, names in DOMAINS.items() for t in names}

HINTS = {
    "letters": "<letters>", "list": "<the list>", "yesno": "yes or no", "number": "<number>", "choice": "<answer>",
    "text": "<answer>",
}
SUFFIX = '\n\nThink it through, then end your reply with "The answer is {hint}."'


def domain_scores(scores: dict[str, float]) -> dict[str, float]:
    """Mean task score per reasoning domain, over the suite's tasks present in `scores` ({task: score})."""
    out = {}
    for domain, names in DOMAINS.items():
        got = [scores[t] for t in names if t in scores]
        if got:
            out[domain] = sum(got) / len(got)
    return out


# ------------------------------------------------------------------------------------------------- answers

_WORDS = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


def _norm_letters(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _norm_list(text: str) -> tuple[str, ...]:
    return tuple(_WORDS.findall(text.lower()))


def _choice_pattern(choices: list[str], synonyms: dict[str, str]) -> re.Pattern:
    names = sorted({c.lower() for c in choices} | set(synonyms), key=len, reverse=True)
    return re.compile(r"(?<![\w-])(" + "|".join(re.escape(n) for n in names) + r")(?![\w-])", re.IGNORECASE)


def extract_answer(text: str, meta: dict) -> str | None:
    """The normalised answer in `text` (already stripped of echoed prompt text) for an item's answer kind."""
    kind = meta["kind"]
    if kind == "number":
        return extract_number(text)
    marked = [seg for _, seg in marked_answers(text) if seg.strip()]
    if kind == "yesno":
        for seg in marked:
            m = re.search(r"\b(yes|no)\b", seg, re.IGNORECASE)
            if m:
                return m.group(1).lower()
        # unmarked, a yes/no counts where it stands alone ("No, ...", "... so yes."), not in "no idea"
        found = {w.lower() for w in re.findall(r"\b(yes|no)\b(?=\s*[.!,;:)]|\s*$)", text, re.IGNORECASE)}
        return found.pop() if len(found) == 1 else None  # both words: a hedge, not an answer
    if kind == "choice":
        synonyms = meta.get("synonyms", {})
        pattern = _choice_pattern(meta["choices"], synonyms)
        for seg in marked:
            m = pattern.search(seg)
            if m:
                return synonyms.get(m.group(1).lower(), m.group(1).lower())
        hits = pattern.findall(text)
        return synonyms.get(hits[-1].lower(), hits[-1].lower()) if hits else None
    # letters, list, text: the marked phrase, else the reply's last line (last word for letters)
    if marked:
        phrase = marked[0]
    else:
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        if not lines:
            return None
        phrase = lines[-1].split()[-1] if kind == "letters" else lines[-1]
    phrase = phrase.strip().strip("\"'`*“”‘’").strip()
    if kind == "letters":
        return _norm_letters(phrase) or None
    if kind == "list":
        return ", ".join(_norm_list(phrase)) or None
    return " ".join(_norm_list(phrase)) or None


def normalise_reference(meta: dict) -> str | None:
    kind, ans = meta["kind"], str(meta["answer"])
    if kind == "number":
        return extract_number(ans.rsplit("####", 1)[-1])
    if kind == "letters":
        return _norm_letters(ans)
    if kind == "list":
        return ", ".join(_norm_list(ans))
    if kind in ("yesno", "choice"):
        a = ans.strip().lower()
        return meta.get("synonyms", {}).get(a, a)
    return " ".join(_norm_list(ans))


def _same(kind: str, predicted: str | None, reference: str | None) -> bool:
    if predicted is None or reference is None:
        return False
    return numbers_equal(predicted, reference) if kind == "number" else predicted == reference


def score_reasoning(items: list[Example], completions: list[list[str]]) -> list[dict]:
    return score_answers(items, completions, lambda e: normalise_reference(e.meta),
                         lambda text, e: extract_answer(text, e.meta), lambda e, a, ref: _same(e.meta["kind"], a, ref))


# ---------------------------------------------------------------------------------------------- vocabularies

FIRST_NAMES = (
    "Elon", "Maria", "Kenji", "Amara", "Lucas", "Ingrid", "Ravi", "Sofia", "Tobias", "Chloe", "Dmitri", "Fatima",
    "Hugo", "Yara", "Pablo", "Greta", "Nikhil", "Olga", "Samir", "Wendy", "Bruno", "Leila", "Oscar", "Tamsin",
    "Felix", "Naomi", "Victor", "Hazel", "Mateo", "Priya", "Quentin", "Rosa",
)
SURNAMES = (
    "Musk", "Lopez", "Tanaka", "Okafor", "Becker", "Larsen", "Patel", "Rossi", "Weber", "Dubois", "Ivanov",
    "Haddad", "Moreau", "Silva", "Garcia", "Novak", "Sharma", "Petrov", "Khan", "Brooks", "Costa", "Nasser",
    "Wilde", "Frost", "Kaplan", "Mendez", "Quinn", "Hughes", "Young", "Adler", "Bishop", "Clark",
)
THINGS = (
    "apple", "pencil", "guitar", "window", "rocket", "candle", "tiger", "bottle", "mirror", "ladder", "pillow",
    "castle", "violin", "carrot", "anchor", "helmet", "lemon", "wallet", "tractor", "feather", "island", "basket",
    "hammer", "planet", "kettle", "button", "jacket", "garden", "sponge", "marble",
)
WOMEN = ("Anna", "Beth", "Clara", "Diana", "Ella", "Fiona", "Gwen", "Hannah", "Iris", "Julia", "Kate", "Laura",
         "Mona", "Nina", "Olivia", "Paula", "Rita", "Sara", "Tina", "Vera")
MEN = ("Adam", "Boris", "Carl", "David", "Eric", "Frank", "George", "Henry", "Ivan", "Jack", "Karl", "Liam",
       "Mark", "Nick", "Owen", "Peter", "Rolf", "Sean", "Tom", "Walter")
COLORS = ("red", "blue", "green", "yellow", "white", "gray", "orange", "purple", "black", "brown", "pink")
# (singular, plural) for bAbI deduction's "X are afraid of Y".
ANIMALS = (("sheep", "sheep"), ("wolf", "wolves"), ("cat", "cats"), ("mouse", "mice"), ("dog", "dogs"),
           ("lion", "lions"), ("fox", "foxes"), ("rabbit", "rabbits"), ("snake", "snakes"), ("owl", "owls"))
SPECIES = ("swan", "frog", "lion", "rhino", "parrot", "snail", "zebra", "crow", "whale", "goose")


# ------------------------------------------------------------------------------------------------ symbolic


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _concat(rng: random.Random, first: bool):
    k = rng.randint(2, 4)
    words = [rng.choice(FIRST_NAMES)] + [rng.choice(SURNAMES) for _ in range(k - 1)]
    which = "first" if first else "last"
    answer = "".join((w[0] if first else w[-1]).lower() for w in words)
    q = f'Take the {which} letter of each word in "{" ".join(words)}" and concatenate them (in lower case).'
    return q, answer, "letters", {}


def gen_last_letter(rng):
    return _concat(rng, first=False)


def gen_first_letter(rng):
    return _concat(rng, first=True)


def gen_list_reversal(rng):
    xs = rng.sample(THINGS, rng.randint(4, 7))
    q = f"Reverse the order of this list: {', '.join(xs)}."
    return q, ", ".join(reversed(xs)), "list", {}


def gen_coin_flip(rng):
    people = rng.sample(WOMEN + MEN, rng.randint(2, 5))
    flips = [rng.random() < 0.5 for _ in people]
    lines = ["A coin is heads up."]
    for p, f in zip(people, flips):
        lines.append(f"{p} flips the coin." if f else f"{p} does not flip the coin.")
    lines.append('Is the coin still heads up? Note that "flip" here means "turn over".')
    return " ".join(lines), "yes" if sum(flips) % 2 == 0 else "no", "yesno", {}


# ------------------------------------------------------------------------------------------------- logical


def gen_babi_deduction(rng):
    kinds = rng.sample(ANIMALS, 4)
    fears = {}
    for i, (sing, plural) in enumerate(kinds):
        fears[plural] = rng.choice([k for j, k in enumerate(kinds) if j != i])
    facts = [f"{plural.capitalize()} are afraid of {feared[1]}." for plural, feared in fears.items()]
    names = rng.sample(WOMEN + MEN, 3)
    members = [(n, rng.choice(kinds)) for n in names]
    facts += [f"{n} is {_a(sing)}." for n, (sing, _) in members]
    rng.shuffle(facts)
    who, (_, plural) = rng.choice(members)
    answer = fears[plural][1]
    choices = [p for _, p in ANIMALS]
    synonyms = {s: p for s, p in ANIMALS if s != p}
    return " ".join(facts) + f" What is {who} afraid of?", answer, "choice", {"choices": choices, "synonyms": synonyms}


def gen_babi_induction(rng):
    kinds = rng.sample(SPECIES, 3)
    colors = dict(zip(kinds, rng.sample(COLORS, 3)))
    names = rng.sample(WOMEN + MEN, 4)
    facts = []
    for n, k in zip(names[:3], kinds):
        facts.append([f"{n} is {_a(k)}.", f"{n} is {colors[k]}."])
    rng.shuffle(facts)
    target = rng.choice(kinds)
    story = " ".join(s for pair in facts for s in pair) + f" {names[3]} is {_a(target)}."
    return story + f" What color is {names[3]}?", colors[target], "choice", {"choices": list(COLORS)}


# C is B's r2 and B is A's r1 -> C is A's ...; (female word, male word). Two hops, as CLUTRR's k=2 stories.
KIN_WORDS = {"parent": ("mother", "father"), "child": ("daughter", "son"), "sibling": ("sister", "brother"),
             "spouse": ("wife", "husband")}
KIN_COMPOSE = {
    ("parent", "parent"): ("grandmother", "grandfather"),
    ("parent", "sibling"): ("aunt", "uncle"),
    ("child", "child"): ("granddaughter", "grandson"),
    ("child", "spouse"): ("daughter-in-law", "son-in-law"),
    ("sibling", "child"): ("niece", "nephew"),
    ("sibling", "spouse"): ("sister-in-law", "brother-in-law"),
    ("spouse", "parent"): ("mother-in-law", "father-in-law"),
    ("spouse", "sibling"): ("sister-in-law", "brother-in-law"),
    ("sibling", "parent"): ("mother", "father"),
    ("child", "sibling"): ("daughter", "son"),
}
KIN_CHOICES = sorted({w for pair in list(KIN_WORDS.values()) + list(KIN_COMPOSE.values()) for w in pair})
KIN_SYNONYMS = {"grandma": "grandmother", "grandpa": "grandfather", "mom": "mother", "mum": "mother",
                "dad": "father", "granny": "grandmother"}


def gen_clutrr(rng):
    (r1, r2), words = rng.choice(sorted(KIN_COMPOSE.items()))
    female_b = rng.random() < 0.5
    # couples are opposite-sex here so that every relation word reads unambiguously
    female_a = (not female_b) if r1 == "spouse" else rng.random() < 0.5
    female_c = (not female_b) if r2 == "spouse" else rng.random() < 0.5
    a = rng.choice(WOMEN if female_a else MEN)
    b = rng.choice([n for n in (WOMEN if female_b else MEN) if n != a])
    c = rng.choice([n for n in (WOMEN if female_c else MEN) if n not in (a, b)])
    w1 = KIN_WORDS[r1][0 if female_b else 1]
    w2 = KIN_WORDS[r2][0 if female_c else 1]
    facts = [f"{b} is {a}'s {w1}.", f"{c} is {b}'s {w2}."]
    rng.shuffle(facts)
    q = " ".join(facts) + f" How is {c} related to {a}? Answer with one kinship word, e.g. aunt or son-in-law."
    return q, words[0 if female_c else 1], "choice", {"choices": KIN_CHOICES, "synonyms": KIN_SYNONYMS}


ORDINALS = ("first", "second", "third", "fourth", "fifth")


def _clue_text(clue, noun: str) -> str:
    kind, x, y = clue
    if kind == "left":
        return f"The {x} {noun} is to the left of the {y} {noun}."
    if y == 0:
        return f"The {x} {noun} is the leftmost."
    return f"The {x} {noun} is the {ORDINALS[y]} from the left."


def _holds(clue, order) -> bool:
    kind, x, y = clue
    return order.index(x) < order.index(y) if kind == "left" else order.index(x) == y


def gen_logical_ordering(rng):
    k = rng.randint(3, 5)
    noun = rng.choice(("book", "car", "house", "flag", "vase"))
    order = rng.sample(COLORS, k)
    candidates = [("left", x, y) for x, y in itertools.permutations(order, 2) if order.index(x) < order.index(y)]
    candidates += [("pos", x, order.index(x)) for x in order]
    rng.shuffle(candidates)
    perms = list(itertools.permutations(order))
    clues = []
    for clue in candidates:  # add clues until one order is left, then drop the ones not needed
        clues.append(clue)
        if sum(all(_holds(c, p) for c in clues) for p in perms) == 1:
            break
    for clue in list(clues):
        rest = [c for c in clues if c is not clue]
        if sum(all(_holds(c, p) for c in rest) for p in perms) == 1:
            clues = rest
    slot = rng.randrange(k)
    q = (f"There are {k} {noun}s in a row: " + ", ".join(f"{_a(c)} one" for c in sorted(order)) + ". "
         + " ".join(_clue_text(c, noun) for c in clues)
         + f" Which {noun} is the {ORDINALS[slot]} from the left? Answer with its color.")
    return q, order[slot], "choice", {"choices": sorted(order)}


# ---------------------------------------------------------------------------------------------- arithmetic


def gen_svamp(rng):
    name = rng.choice(WOMEN + MEN)
    thing = rng.choice(("pens", "marbles", "stamps", "cookies", "cards", "shells", "coins", "books"))
    start, change = rng.randint(5, 60), rng.randint(1, 40)
    gain = rng.random() < 0.5
    if not gain:
        change = rng.randint(1, start)
    end = start + change if gain else start - change
    verb = rng.choice(("found", "bought", "was given")) if gain else rng.choice(("gave away", "lost", "sold"))
    ask = rng.choice(("end", "start", "change"))
    if ask == "end":
        facts, q, ans = f"{name} had {start} {thing}. {name} {verb} {change} {thing}.", f"How many {thing} does {name} have now?", end
    elif ask == "start":
        facts, q, ans = f"{name} {verb} {change} {thing}. Now {name} has {end} {thing}.", f"How many {thing} did {name} have at first?", start
    else:
        facts, q, ans = f"{name} had {start} {thing}. After some {thing} were {'added' if gain else 'taken away'}, {name} has {end} {thing}.", \
            f"How many {thing} were {'added' if gain else 'taken away'}?", change
    # SVAMP's variation: the question may come before the facts
    text = f"{q} {facts}" if rng.random() < 0.3 else f"{facts} {q}"
    return text, str(ans), "number", {}


def _expr(rng, depth: int) -> tuple[str, int]:
    if depth == 0:
        v = rng.randint(-9, 9)
        return str(v), v
    (ls, lv), (rs, rv) = _expr(rng, depth - 1), _expr(rng, depth - 1)
    op = rng.choice("+-*")
    value = lv + rv if op == "+" else lv - rv if op == "-" else lv * rv
    return f"({ls} {op} {rs})", value


def gen_multistep(rng):
    depth = rng.choice((2, 2, 3))
    text, value = _expr(rng, depth)
    return f"Compute the value of {text[1:-1]} =", str(value), "number", {}


ADDSUB = (
    # (story, answer from the numbers a, b, c)
    ("{N} picked {a} red apples and {b} green apples. {N} gave {c} apples to a neighbour. How many apples does {N} "
     "have left?", lambda a, b, c: a + b - c),
    ("There were {a} birds on a tree. {b} more birds came and then {c} flew away. How many birds are on the tree "
     "now?", lambda a, b, c: a + b - c),
    ("{N} has {a} boxes with {b} crayons in each box. {N} loses {c} crayons. How many crayons are left?",
     lambda a, b, c: a * b - c),
    ("A library had {a} books. It lent out {b} books and got {c} new ones. How many books does it have now?",
     lambda a, b, c: a - b + c),
    ("{N} baked {a} muffins. {N} sold {b} of them and shared the rest equally among {c} friends, with none left "
     "over. How many muffins did each friend get?", lambda a, b, c: (a - b) // c),
    ("A class has {a} girls and {b} boys. They split into teams of {c}. How many teams are there?",
     lambda a, b, c: (a + b) // c),
)


def gen_addsub(rng):
    i = rng.randrange(len(ADDSUB))
    story, f = ADDSUB[i]
    while True:
        a, b, c = rng.randint(2, 40), rng.randint(2, 40), rng.randint(2, 12)
        if i == 4:
            b = rng.randint(1, a - 1) if a > 2 else 1
            if (a - b) % c:
                continue
        if i == 5 and (a + b) % c:
            continue
        if i == 3 and b > a:
            continue
        if i == 2:
            a, b = rng.randint(2, 9), rng.randint(2, 12)
        value = f(a, b, c)
        if value >= 0:
            break
    return story.format(N=rng.choice(WOMEN + MEN), a=a, b=b, c=c), str(value), "number", {}


GENERATORS = {
    "last_letter_concat": gen_last_letter, "first_letter_concat": gen_first_letter,
    "list_reversal": gen_list_reversal, "coin_flip": gen_coin_flip,
    "babi_deduction": gen_babi_deduction, "babi_induction": gen_babi_induction,
    "clutrr_kinship": gen_clutrr, "logical_ordering": gen_logical_ordering,
    "svamp_style": gen_svamp, "multistep_arithmetic": gen_multistep, "addsub": gen_addsub,
}
# What each task's answers are when its items come from a file.
KINDS = {"last_letter_concat": "letters", "first_letter_concat": "letters", "list_reversal": "list",
         "coin_flip": "yesno", "babi_deduction": "text", "babi_induction": "text", "clutrr_kinship": "choice",
         "logical_ordering": "text", "gsm_style": "number", "svamp_style": "number",
         "multistep_arithmetic": "number", "addsub": "number"}


# ---------------------------------------------------------------------------------------------------- items


def _item(name: str, i: int, seed: int, question: str, answer: str, kind: str, extra: dict) -> Example:
    prompt = question + SUFFIX.format(hint=HINTS[kind])
    return chat(prompt, f"The answer is {answer}.", id=f"{name}-{seed}-{i}", question=question, answer=answer,
                kind=kind, domain=DOMAIN_OF[name], ability="reasoning", **extra)


def generate_items(name: str, n: int, seed: int = 0, difficulty: int = 3) -> list[Example]:
    """`n` items of reasoning task `name`, the same for the same seed on every machine (a string-seeded stream);
    repeated questions are skipped, so the first k of n items are the items for n = k."""
    if name == "gsm_style":
        from ..data.builtin import BuiltinSourceError, generate

        try:
            rows = generate("math", "eval", n, seed=seed, difficulty=difficulty)
        except BuiltinSourceError as e:
            raise SftmixError(f"task gsm_style: {e}") from None
        return [_item(name, i, seed, e.meta["question"], e.meta["answer"], "number", {}) for i, e in enumerate(rows)]
    rng = random.Random(f"sftmix-reasoning|{name}|{seed}")
    seen, out, misses = set(), [], 0
    while len(out) < n:
        q, a, kind, extra = GENERATORS[name](rng)
        if q in seen:
            misses += 1
            if misses > 10_000:
                raise SftmixError(f"task {name}: ran out of distinct questions after {len(out)} items")
            continue
        seen.add(q)
        out.append(_item(name, len(out), seed, q, a, kind, extra))
    return out


def load_items(name: str, path: str, limit: int | None) -> list[Example]:
    """Items from a JSON/JSONL file of {question, answer} rows (optional `choices`; `id`)."""
    from ..data.formats import read_records
    from ..errors import DataError

    try:
        records = read_records(path)
    except DataError as e:
        raise SftmixError(f"task {name}: {e}") from None
    out = []
    for i, r in enumerate(records[:limit] if limit else records):
        where = f"{path} row {i}"
        if not isinstance(r, dict) or not isinstance(r.get("question"), str) or not r["question"].strip():
            raise SftmixError(f"{where}: expected an object with a non-empty string 'question' and an 'answer'")
        if not isinstance(r.get("answer"), (str, int, float)) or isinstance(r.get("answer"), bool) or str(r["answer"]).strip() == "":
            raise SftmixError(f"{where}: field 'answer' must be a non-empty string or a number")
        kind, extra = KINDS[name], {}
        if isinstance(r.get("choices"), list) and r["choices"]:
            kind, extra = "choice", {"choices": [str(c) for c in r["choices"]]}
        elif kind == "choice":
            extra = {"choices": KIN_CHOICES, "synonyms": KIN_SYNONYMS}
        ex = _item(name, i, 0, r["question"].strip(), str(r["answer"]).strip(), kind, extra)
        ex.meta["id"] = str(r.get("id", f"{name}-file-{i}"))
        out.append(ex)
    if not out:
        raise SftmixError(f"task {name}: {path} has no rows")
    return out


def _build(name: str, limit: int | None, n: int | None, seed: int, path: str | None, difficulty: int = 3) -> Task:
    seed = int_param(name, "seed", seed)
    if path:
        items = load_items(name, path, limit or n)
        params = {"path": path}
    else:
        count = int_param(name, "n", n, 1) if n is not None else 100
        items = generate_items(name, min(count, limit) if limit else count, seed, difficulty)
        params = {"seed": seed} | ({"difficulty": difficulty} if name == "gsm_style" else {})
    return Task(name, "reasoning", "accuracy", items, score_reasoning, GenSettings(max_new_tokens=256),
                domain=DOMAIN_OF[name], params=params)


def _factory(name: str):
    if name == "gsm_style":
        def factory(limit: int | None = None, n: int | None = None, seed: int = 0, path: str | None = None,
                    difficulty: int = 3) -> Task:
            return _build(name, limit, n, seed, path, difficulty)
    else:
        def factory(limit: int | None = None, n: int | None = None, seed: int = 0, path: str | None = None) -> Task:
            return _build(name, limit, n, seed, path)

    factory.__doc__ = (f"Reasoning suite, {DOMAIN_OF[name]} domain: {name.replace('_', ' ')}; zero-shot, exact answer. "
                       f"Items drawn from `seed` (`limit` or `n` of them, 100 by default) or read from `path`.")
    return factory


for _name in REASONING_TASKS:
    task(_name)(_factory(_name))
SUITES["reasoning"] = list(REASONING_TASKS)
SUITES.update({d: list(names) for d, names in DOMAINS.items()})
