"""Chats -> token ids with labels on assistant tokens only.

The conversation is rendered once with the chat template; the character span of every assistant turn is found by
rendering the prefix up to that turn, and tokens whose characters fall in a span are trained on. This works for any
template whose rendering of a prefix is a prefix of the full rendering (chatml, vicuna, alpaca, SmolLM2's, Llama 3's),
and is checked rather than assumed.
"""

from __future__ import annotations

from ..data.example import Example
from ..errors import SftmixError

IGNORE = -100


def render(tok, messages, add_generation_prompt: bool = False) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tok, messages) -> tuple[str, list[tuple[int, int]]]:
    full = render(tok, messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = len(render(tok, messages[:i], add_generation_prompt=True)) if i else 0
        end_text = render(tok, messages[: i + 1])
        if not full.startswith(end_text) or not end_text.startswith(render(tok, messages[:i], add_generation_prompt=True)):
            raise SftmixError(
                "the chat template does not render a conversation's prefix as a prefix of the whole conversation, "
                "so assistant tokens cannot be located; choose chat_template: chatml, vicuna or alpaca"
            )
        spans.append((start, len(end_text)))
    return full, spans


def encode(tok, example: Example, max_length: int | None = None) -> dict:
    """Token ids and labels (IGNORE outside assistant turns), cut to `max_length` when given."""
    text, spans = assistant_spans(tok, example.messages)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True, truncation=max_length is not None,
              max_length=max_length)
    labels = []
    for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]):
        inside = b > a and any(s <= a < e for s, e in spans)
        labels.append(tid if inside else IGNORE)
    return {"input_ids": list(enc["input_ids"]), "labels": labels}


def prepare(tok, examples: list[Example], max_length: int, truncation: str = "drop") -> tuple[list[dict], dict]:
    """Encode a stage's rows under an explicit truncation policy, and count what it cost.

    - a row whose prompt fills `max_length` (no assistant token left to predict) is dropped;
    - a row longer than `max_length` whose answer starts inside it loses its end (and its end-of-turn token, so the
      model would not learn to stop there): dropped with truncation="drop", trained cut with "keep";
    - a row with no assistant turn at all is dropped.
    """
    data = []
    counts = {"rows_in": len(examples), "rows_dropped_prompt_too_long": 0, "rows_truncated": 0, "tokens_cut": 0,
              "rows_dropped_no_answer": 0, "truncation": truncation}
    for e in examples:
        x = encode(tok, e, None)
        n = len(x["input_ids"])
        if not any(lbl != IGNORE for lbl in x["labels"][1:]):
            counts["rows_dropped_no_answer"] += 1
            continue
        if n > max_length:
            cut = {"input_ids": x["input_ids"][:max_length], "labels": x["labels"][:max_length]}
            if not any(lbl != IGNORE for lbl in cut["labels"][1:]):
                counts["rows_dropped_prompt_too_long"] += 1
                continue
            counts["rows_truncated"] += 1
            counts["tokens_cut"] += n - max_length
            if truncation == "drop":
                continue
            x = cut
        data.append(x)
    counts["rows_dropped"] = counts["rows_in"] - len(data)
    return data, counts
