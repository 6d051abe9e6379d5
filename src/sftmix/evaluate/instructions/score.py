"""Instruction-following scores as the IFEval paper reports them, shared by the `ifeval` task and the built-in
`general` task.

Each item carries a list of instructions, each a named check `text -> bool`. Strict: the check holds on the reply
as it is. Loose: it holds on at least one of eight versions of the reply: as it is, without its first line, without
its last line, without both, and each of those with every "*" removed (markdown emphasis and stray preambles or
sign-offs must not decide a format check). Prompt level: all of an item's instructions hold; instruction level:
the share of all instructions that hold, over every item (a micro average, as the paper has it).

A reply that is not an answer at all follows nothing: empty, one token looped, or the prompt echoed back with
hardly a word of its own. Otherwise an echo would pass every instruction whose wording the prompt itself obeys
(a title in <<...>>, the keywords it quotes).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from ...data.example import Example
from ..scoring import degenerate, strip_echo

Check = tuple[str, Callable[[str], bool]]  # (instruction id, whether a text follows it)

# Words a reply must add of its own, beyond what it copied from the prompt, to count as more than an echo:
# at least this many, and at least this share of all its words.
MIN_OWN_WORDS = 3
MIN_OWN_SHARE = 0.2
_WORD = re.compile(r"\w+")


def loose_variants(response: str) -> list[str]:
    """The reply and the seven relaxed versions the loose score also tries (empty ones included: they never pass)."""
    lines = response.split("\n")
    cut = ["\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    plain = [response, *cut]
    return plain + [v.replace("*", "") for v in plain]


def why_not_an_answer(response: str, prompts: Sequence[str], allowed_prefix: str = "") -> str | None:
    """Why the reply is not an answer ("empty", "repeated" or "echo"), or None when it may be one. `allowed_prefix`
    is text the instructions ask the reply to begin with (IFEval's repeat-the-request): copying it is no echo."""
    reason = degenerate(response)
    if reason:
        return reason
    rest = response.strip()
    if allowed_prefix and rest.lower().startswith(allowed_prefix.strip().lower()):
        rest = rest[len(allowed_prefix.strip()):]
        if not _WORD.search(rest):
            return "echo"
    words = len(_WORD.findall(rest))
    own = len(_WORD.findall(strip_echo(rest, list(prompts))))
    if own < words and own < max(MIN_OWN_WORDS, MIN_OWN_SHARE * words):
        return "echo"
    return None


def score_reply(checks: Sequence[Check], response: str, prompts: Sequence[str], allowed_prefix: str = "") -> dict:
    """One item's row: {"score": prompt-level strict, "prompt_strict", "prompt_loose", "instruction_strict",
    "instruction_loose" (this item's shares), "instructions", "strict", "loose"} plus "degenerate" when it is."""
    response = response or ""
    reason = why_not_an_answer(response, prompts, allowed_prefix)
    if reason:
        strict = loose = [False] * len(checks)
    else:
        # the relaxed versions only, each once (the reply itself was tried by the strict check)
        relaxed = [v for v in dict.fromkeys(loose_variants(response)[1:]) if v.strip() and v != response]
        strict = [bool(fn(response)) for _, fn in checks]
        loose = [s or any(fn(v) for v in relaxed) for s, (_, fn) in zip(strict, checks)]
    n = max(len(checks), 1)
    row = {
        "score": float(all(strict)), "prompt_strict": float(all(strict)), "prompt_loose": float(all(loose)),
        "instruction_strict": sum(strict) / n, "instruction_loose": sum(loose) / n,
        "instructions": [i for i, _ in checks], "strict": strict, "loose": loose,
    }
    if reason:
        row["degenerate"] = reason
    return row


def summarize(rows: list[dict]) -> dict[str, float]:
    """Prompt-level strict/loose (mean over items) and instruction-level strict/loose (over all instructions)."""
    if not rows:
        return {"prompt_strict": 0.0, "prompt_loose": 0.0, "instruction_strict": 0.0, "instruction_loose": 0.0}
    total = sum(len(r["strict"]) for r in rows) or 1
    return {
        "prompt_strict": sum(r["prompt_strict"] for r in rows) / len(rows),
        "prompt_loose": sum(r["prompt_loose"] for r in rows) / len(rows),
        "instruction_strict": sum(sum(r["strict"]) for r in rows) / total,
        "instruction_loose": sum(sum(r["loose"]) for r in rows) / total,
    }


def first_completions(completions: list) -> list[str]:
    """The first of the n completions made per item (instruction following is scored greedy, on one reply)."""
    return [(c[0] if c else "") if isinstance(c, (list, tuple)) else c for c in completions]


# --- the built-in general task ------------------------------------------------------------------------------------


def general_checks(constraints: list[dict]) -> list[Check]:
    from ..constraints import check

    return [(c["kind"], lambda text, c=c: check(c, text)) for c in constraints]


def score_general(items: list[Example], completions: list) -> list[dict]:
    """The built-in general eval split (constraints from `sftmix.evaluate.constraints`), scored like IFEval."""
    from ..tasks import prompts_of

    return [score_reply(general_checks(e.meta["constraints"]), c, prompts_of(e))
            for e, c in zip(items, first_completions(completions))]
