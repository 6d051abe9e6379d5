"""GSM8K-like word problems: one person's count of some object changes through `difficulty` operations.

The solution always has the same shape, one line per operation ending in "a op b = c." and a final "#### answer",
so that a very small model can learn the format from a few hundred rows and has to read the numbers to get it
right. Names, objects and phrasings vary so that the numbers are the only thing worth copying.
"""

from __future__ import annotations

import random

from sftmix.data.example import Example, chat

MAX_DIFFICULTY = 5

NAMES = (
    "Tom", "Mia", "Sam", "Lily", "Ben", "Emma", "Noah", "Ava", "Leo", "Zoe", "Max", "Ella", "Jack", "Nora", "Omar",
    "Ruby", "Ali", "Grace", "Ivan", "Maya", "Luca", "Sara", "Finn", "Hana",
)
OBJECTS = (
    "apples", "stickers", "marbles", "pencils", "books", "cookies", "coins", "stamps", "cards", "shells",
    "balloons", "beads", "crayons", "eggs", "flowers", "candies", "blocks", "ribbons", "buttons", "plums",
    "pebbles", "postcards", "tickets", "toy cars",
)

# Opening sentence; the first solution line restates it as "{N} starts with {a} {o} and ...".
STARTS = (
    "{N} has {a} {o}.",
    "{N} owns {a} {o}.",
    "{N} collected {a} {o}.",
    "There are {a} {o} in {N}'s bag.",
    "In the morning {N} has {a} {o}.",
)
# Openings that are themselves an operation (k groups of b), used from difficulty 2 on.
GROUP_STARTS = (
    ("{N} has {k} bags with {b} {o} in each bag.", "{N} has {k} bags of {b} {o}"),
    ("{N} buys {k} packs of {o}. Each pack has {b} {o}.", "{N} buys {k} packs of {b} {o}"),
    ("{N} fills {k} boxes with {b} {o} each.", "{N} fills {k} boxes with {b} {o}"),
)
# (question sentence, solution clause) per operation; {F} is a second person.
ADDS = (
    ("{N} buys {b} more.", "buys {b} more"),
    ("{N} finds {b} more.", "finds {b} more"),
    ("{F} gives {N} {b} more.", "gets {b} more from {F}"),
    ("{N} wins {b} more in a game.", "wins {b} more"),
    ("{N} gets {b} more as a gift.", "gets {b} more as a gift"),
)
SUBS = (
    ("{N} gives {b} to {F}.", "gives {b} to {F}"),
    ("{N} loses {b} of them.", "loses {b}"),
    ("{N} sells {b} of them.", "sells {b}"),
    ("{N} uses {b} of them for a school project.", "uses {b}"),
    ("{F} borrows {b} of them.", "lends {b} to {F}"),
)
MULS = (
    ("The next week {N} ends up with {kw} as many {o} as before.", "ends up with {kw} as many"),
    ("By the end of the month {N} has {kw} as many {o}.", "ends up with {kw} as many"),
)
QUESTIONS = (
    "How many {o} does {N} have now?",
    "How many {o} does {N} have at the end?",
    "In the end, how many {o} does {N} have?",
)
CONNECTORS = ("", "Then ", "After that ", "Later ")
TIMES = {2: "twice", 3: "three times", 4: "four times", 5: "five times"}
# Largest operand by difficulty: difficulty 1 stays within numbers a child adds in their head.
MAX_OPERAND = {1: 20, 2: 30, 3: 50, 4: 80, 5: 100}
MAX_VALUE = 600


def _fill(template: str, **kw) -> str:
    return template.format(**kw)


def draw(rng: random.Random, difficulty: int) -> tuple[str, Example]:
    top = MAX_OPERAND[difficulty]
    name = rng.choice(NAMES)
    friend = rng.choice([f for f in NAMES if f != name])
    obj = rng.choice(OBJECTS)
    names = {"N": name, "F": friend, "o": obj}

    question: list[str] = []
    lines: list[str] = []
    chain: list[str] = []  # the arithmetic alone, e.g. "12+7": decides the split so eval sums are unseen sums
    ops_left = difficulty

    if difficulty >= 2 and rng.random() < 0.3:
        q, s = rng.choice(GROUP_STARTS)
        k, b = rng.randint(2, 5), rng.randint(2, min(12, top))
        value = k * b
        question.append(_fill(q, k=k, b=b, **names))
        lines.append(f"{_fill(s, k=k, b=b, **names)}: {k} * {b} = {value}.")
        chain.append(f"{k}*{b}")
        ops_left -= 1
        opening = None
    else:
        value = rng.randint(1, top)
        question.append(_fill(rng.choice(STARTS), a=value, **names))
        chain.append(str(value))
        opening = f"{name} starts with {value} {obj} and "

    for _ in range(ops_left):
        kinds = ["add"]
        if value > 0:
            kinds.append("sub")
        if difficulty >= 2 and 0 < value * 2 <= MAX_VALUE:
            kinds.append("mul")
        kind = rng.choice(kinds)
        if kind == "mul":
            k = rng.choice([m for m in range(2, 4 if difficulty < 4 else 6) if value * m <= MAX_VALUE])
            q, s = rng.choice(MULS)
            q, s = _fill(q, kw=TIMES[k], **names), _fill(s, kw=TIMES[k], **names)
            expr, new = f"{value} * {k}", value * k
            chain.append(f"*{k}")
        elif kind == "sub":
            b = rng.randint(1, min(value, top))
            q, s = (_fill(t, b=b, **names) for t in rng.choice(SUBS))
            expr, new = f"{value} - {b}", value - b
            chain.append(f"-{b}")
        else:
            b = rng.randint(1, top)
            q, s = (_fill(t, b=b, **names) for t in rng.choice(ADDS))
            expr, new = f"{value} + {b}", value + b
            chain.append(f"+{b}")
        if len(question) > 1 and q.startswith((name, friend)):
            q = rng.choice(CONNECTORS) + q
        question.append(q)
        if opening is not None:
            lines.append(f"{opening}{s}: {expr} = {new}.")
            opening = None
        else:
            lines.append(f"Then {name} {s}: {expr} = {new}.")
        value = new

    question.append(_fill(rng.choice(QUESTIONS), **names))
    text = " ".join(question)
    lines.append(f"#### {value}")
    return "".join(chain), chat(text, "\n".join(lines), question=text, answer=str(value))
