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


def encode(tok, example: Example, max_length: int) -> dict:
    text, spans = assistant_spans(tok, example.messages)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True, truncation=True, max_length=max_length)
    labels = []
    for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]):
        inside = b > a and any(s <= a < e for s, e in spans)
        labels.append(tid if inside else IGNORE)
    return {"input_ids": enc["input_ids"], "labels": labels}
