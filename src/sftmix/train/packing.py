"""Padding-free batches: the examples of a micro-batch laid end to end in one row, with no attention across them.

Layout (what `DataCollatorWithFlattening` does for flash attention): input ids concatenated, position ids restarting
at 0 for every example, and the boundaries as `cu_seq_lens_q`/`_k` (cumulative lengths). Targets are shifted within
each example before concatenation, so the last token of one example never predicts the first of the next.

Attention:
- `flash_attention_2` (CUDA, flash-attn installed) reads the boundaries itself (variable-length kernel).
- everywhere else the trainer switches the model to `sftmix_varlen`, registered here: sdpa run causally on each
  example's slice of the row. That is exact (the same computation as an unpadded example on its own), costs the sum
  of squared lengths rather than the square of the row, and needs no mask: transformers builds none for an attention
  implementation it has no mask function for.
"""

from __future__ import annotations

IGNORE = -100
VARLEN = "sftmix_varlen"


def shifted(labels: list[int]) -> list[int]:
    """Next-token targets of one example: position i is trained to predict token i+1; the last predicts nothing."""
    return labels[1:] + [IGNORE]


def pack(batch: list[dict]) -> dict:
    """One row [1, T] from a list of {"input_ids", "labels"} (labels unshifted, as `encode` returns them): the
    model's keyword arguments (the boundaries under the names flash attention reads) plus "targets"."""
    import torch

    ids, targets, pos, cu = [], [], [], [0]
    for x in batch:
        n = len(x["input_ids"])
        ids.extend(x["input_ids"])
        targets.extend(shifted(x["labels"]))
        pos.extend(range(n))
        cu.append(cu[-1] + n)
    row = {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "targets": torch.tensor([targets], dtype=torch.long),
        "position_ids": torch.tensor([pos], dtype=torch.long),
    }
    row["cu_seq_lens_q"] = row["cu_seq_lens_k"] = torch.tensor(cu, dtype=torch.int32)
    row["max_length_q"] = row["max_length_k"] = max(len(x["input_ids"]) for x in batch)
    return row


def pad(batch: list[dict], pad_id: int) -> dict:
    """Right-padded rows [B, T] with an attention mask, targets shifted per example (IGNORE on padding)."""
    import torch

    n = max(len(x["input_ids"]) for x in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    targets = torch.full((len(batch), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, x in enumerate(batch):
        k = len(x["input_ids"])
        ids[i, :k] = torch.tensor(x["input_ids"])
        targets[i, :k] = torch.tensor(shifted(x["labels"]))
        mask[i, :k] = 1
    return {"input_ids": ids, "targets": targets, "attention_mask": mask}


def varlen_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Attention of a packed row: causal sdpa on each example's slice. query: [B, H, T, D] -> out [B, T, H, D]."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu = kwargs.pop("cu_seq_lens_q", None)
    for k in ("cu_seq_lens_k", "max_length_q", "max_length_k", "position_ids", "is_causal"):
        kwargs.pop(k, None)
    if cu is None:  # an unpacked call (e.g. generation after training): plain sdpa
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    bounds = cu.tolist()
    outs = [
        sdpa_attention_forward(
            module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None, dropout=dropout, scaling=scaling,
            is_causal=True, **kwargs,
        )[0]
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    return torch.cat(outs, dim=1), None


def register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(VARLEN, varlen_sdpa)


def attention_for_packing(model, device: str) -> str:
    """The attention implementation packed rows run with on this model and device."""
    current = getattr(model.config, "_attn_implementation", None)
    if current and current.startswith("flash_attention"):
        return current
    if device == "cuda":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
    return VARLEN
