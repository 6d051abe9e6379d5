"""Batched greedy generation with HF transformers.

Prompts are sorted by length so each batch pads little, left-padded as decoder-only generation requires, and
returned in the caller's order.
"""

from __future__ import annotations

from ..models import stop_token_ids


def generate(model, tok, conversations: list[list[dict]], max_new_tokens: int, batch_size: int = 16,
             progress: bool = True, desc: str = "generate") -> list[str]:
    import torch

    texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    out: list[str] = [""] * len(texts)
    stops = stop_token_ids(tok)
    tok.padding_side = "left"
    device = next(model.parameters()).device
    model.eval()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(texts), desc=desc, unit="item", leave=False, disable=None)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.inference_mode():
            gen = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops, pad_token_id=tok.pad_token_id,
                temperature=None, top_p=None, top_k=None,
            )
        for i, row in zip(idx, gen[:, enc["input_ids"].shape[1] :]):
            out[i] = tok.decode(row, skip_special_tokens=True).strip()
        if bar:
            bar.update(len(idx))
    if bar:
        bar.close()
    return out
