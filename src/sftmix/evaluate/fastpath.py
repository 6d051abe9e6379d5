"""The engine's forward on a CPU: decode attention, weights packed once, and Llama-architecture layers in few ops.

The engine (engine.py) decides what to run; this module makes each forward cheaper without changing its result
beyond the last bits (which already differ between batch sizes in HF's own forward). Measured on a 2-core CPU with
SmolLM2-135M-Instruct, 120 quickstart prompts (docs/benchmarks.md):

- `_decode_attention`: one query token per row against that row's cached keys and values. Reading the cache is the
  work; torch's CPU flash kernel, built for query blocks, took about 1.6x as long and converted the boolean mask
  again in each layer. Here the additive mask is made once per step, the query heads of one key/value head share a
  matmul, and rows go in runs that skip the columns they never attend (`attention_runs`).
- `packed_linears`: `F.linear` hands MKL the weight row-major and MKL repacks it on every call; a decode step's
  weights stream from memory, so that is paid at every step. Packed once for oneDNN, a decode step's layer
  matmuls took 10-20% less time and the output layer (576 x 49,152) half.
- `FusedDecoder`: a Llama-architecture decoder (llama, mistral, qwen2) in the ops it needs: per layer one RMSNorm
  in three ops, one matmul for q, k and v, rotary on q and k at once, one matmul for gate and up, one for down. HF's
  modules issue about 60 small ops per layer; at a few dozen rows those cost as much as the matmuls. LoRA
  adapters are merged into the packed weights, so an adapter costs nothing per token. Its logits equal HF's
  forward's bit for bit with the same kernels (tests/test_generate.py), so greedy completions stay HF's.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)
DECODE_ATTENTION = "sftmix_decode"
RUN_PENALTY = 256  # row-columns a further run of decode rows must skip (see `attention_runs`)
MAX_PACKED_BYTES = 2 << 30  # a larger model's weights are not copied a second time
FUSED_MODELS = {"llama", "mistral", "qwen2"}
# Models whose forwards hand extra keyword arguments down to their attention function (`sftmix_runs`).
KWARGS_MODELS = FUSED_MODELS | {"qwen3", "phi3", "olmo2", "smollm3"}


def text_config(model):
    """The language model's config (a multimodal model nests it)."""
    return model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config


# --------------------------------------------------------------------------------------------------- attention


def decode_attention(query, key, value, additive_mask, scale: float, runs=None):
    """Attention of one query token per row ([rows, heads, 1, dim]) over [rows, kv heads, columns, dim] keys and
    values under an additive [rows, 1, 1, columns] mask; `runs` (see `attention_runs`) let runs of rows start later.
    Returns [rows, 1, heads, dim]."""
    rows, heads, _, dim = query.shape
    kv = key.shape[1]
    q = query.reshape(rows, kv, heads // kv, dim)
    out = query.new_empty((rows, kv, heads // kv, value.shape[-1]))
    for r0, r1, c0 in runs or [(0, rows, 0)]:
        scores = torch.matmul(q[r0:r1], key[r0:r1, :, c0:].transpose(-1, -2))  # [rows, kv, q heads per kv, cols]
        scores.mul_(scale).add_(additive_mask[r0:r1, :, :, c0:])
        torch.matmul(scores.softmax(-1), value[r0:r1, :, c0:], out=out[r0:r1])
    return out.reshape(rows, 1, heads, value.shape[-1])


def _decode_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """An HF attention function: sdpa, except for the engine's decode steps (one query token per row and an
    additive float mask), which `decode_attention` computes."""
    if query.shape[2] != 1 or attention_mask is None or attention_mask.dtype == torch.bool or dropout or kwargs.get(
            "softcap") is not None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    return decode_attention(query, key, value, attention_mask, scale, kwargs.get("sftmix_runs")), None


def attention_runs(starts: list[int], most: int = 4, penalty: int | None = None) -> list[tuple[int, int, int]]:
    """Cut the decode rows 0..n-1 into at most `most` runs of consecutive rows, each of which attends from its own
    earliest start column rather than the batch's (columns before a row's start are masked anyway). The cut skips
    the most such columns, each run beyond the first having to skip `penalty` row-columns (default RUN_PENALTY) to
    pay for its own matmuls. Returns (first row, end row, columns skipped at the front) per run.

    Why: rows admitted together are right-aligned at the same column, so a short prompt's row spans the longest
    prompt's columns too; with the three quickstart tasks (45 to 132 prompt tokens) a third of the columns read in
    decode attention were such padding. Admission fills slots longest prompt first, so rows stay nearly sorted."""
    penalty = RUN_PENALTY if penalty is None else penalty
    n = len(starts)
    s = np.asarray(starts, dtype=np.int64) - min(starts)
    if n < 2 or not s.any():
        return [(0, n, 0)]
    first = np.zeros((n, n), dtype=np.int64)  # first[i, j]: the earliest start among rows i..j (for j >= i)
    for i in range(n):
        first[i, i:] = np.minimum.accumulate(s[i:])
    length = np.arange(n)[None, :] - np.arange(n)[:, None] + 1
    skipped = np.where(length > 0, length * first, -np.inf)  # columns a run of rows i..j skips
    best = [np.concatenate([[-np.inf], skipped[0]])]  # best[k][j]: most skipped over rows 0..j-1 with k+1 runs
    back = []
    for _ in range(1, most):
        total = best[-1][:n, None] + skipped  # a run of rows i..j after k runs over rows 0..i-1
        back.append(total.argmax(0))
        best.append(np.concatenate([[-np.inf], total.max(0)]))
    k = max(range(most), key=lambda k: (best[k][n] - penalty * k, -k))
    runs, end = [], n
    for kk in range(k, 0, -1):
        start = int(back[kk - 1][end - 1])
        runs.append((start, end))
        end = start
    runs.append((0, end))
    return [(a, b, int(s[a:b].min())) for a, b in reversed(runs)]


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if DECODE_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(DECODE_ATTENTION, _decode_attention)
        # Masks the model builds itself (a caller without a 4D mask) are sdpa's, which `_decode_attention` hands on.
        ALL_MASK_ATTENTION_FUNCTIONS.register(DECODE_ATTENTION, sdpa_mask)


@contextmanager
def attention_for_decode(model):
    """Run an sdpa model on a CPU with `_decode_attention` for the duration (restored after, also on error); yields
    whether it did. Not reentrant: one engine run per model at a time (`sftmix serve` has one generating thread)."""
    cfg = text_config(model)
    # On a GPU, sdpa's fused kernels are the better choice; this path was measured on CPUs only.
    if getattr(cfg, "_attn_implementation", None) != "sdpa" or next(model.parameters()).device.type != "cpu":
        yield False
        return
    _register_attention()
    cfg._attn_implementation = DECODE_ATTENTION
    try:
        yield True
    finally:
        cfg._attn_implementation = "sdpa"


# ------------------------------------------------------------------------------------------------ packed weights


def _packable(weights: list[torch.Tensor]) -> bool:
    size = sum(w.numel() * w.element_size() for w in weights)
    return (bool(weights) and all(w.device.type == "cpu" and w.dtype == torch.float32 for w in weights)
            and size <= MAX_PACKED_BYTES and torch.backends.mkldnn.is_available())


def pack(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), None)


def packed_linear(weight, bias, x):
    rows = x.reshape(-1, x.shape[-1])
    y = torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "none", [], "")
    return y.view(*x.shape[:-1], y.shape[-1])


@contextmanager
def packed_linears(model):
    """On a CPU, every plain `nn.Linear` of an fp32 model (an adapter's base layers included) multiplies with a copy
    of its weight packed once for oneDNN, for the duration (restored after)."""
    # A module with a forward of its own (accelerate's hooks, say) keeps it.
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear and "forward" not in m.__dict__]
    if not _packable([m.weight for m in linears]):
        yield
        return
    patched = []
    try:
        try:
            for m in linears:
                m.forward = partial(packed_linear, pack(m.weight), None if m.bias is None else m.bias.detach())
                patched.append(m)
        except RuntimeError as e:  # a torch build without these oneDNN ops: MKL as before
            log.info("sftmix engine: oneDNN prepacked weights unavailable (%s)", e)
        yield
    finally:
        for m in patched:
            m.__dict__.pop("forward", None)


# ------------------------------------------------------------------------------------------ Llama-architecture


def _linear_weights(m) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(weight, bias) a projection applies: a plain Linear's, or a LoRA layer's with its active adapters merged in;
    None for anything else (DoRA, LoRA biases, other adapter types, quantized layers)."""
    if type(m) is torch.nn.Linear:
        return m.weight.detach(), None if m.bias is None else m.bias.detach()
    base = getattr(m, "base_layer", None)
    if type(base) is not torch.nn.Linear or not hasattr(m, "get_delta_weight") or not hasattr(m, "lora_A"):
        return None
    merged, disabled = getattr(m, "merged", False), getattr(m, "disable_adapters", False)
    if merged and disabled:  # PEFT unmerges for such a call; the base weight here still holds the adapters
        return None
    weight = base.weight.detach()
    if not merged and not disabled:
        for name in m.active_adapters:
            if name not in m.lora_A:
                continue
            # DoRA, LoRA biases and the variants (aLoRA, Arrow, ...) are not a plain B @ A added to the weight
            if (getattr(m, "use_dora", {}).get(name) or getattr(m, "lora_bias", {}).get(name)
                    or name in getattr(m, "lora_variant", {})):
                return None
            weight = weight + m.get_delta_weight(name).detach()
    return weight, None if base.bias is None else base.bias.detach()


def _concat(parts) -> tuple[torch.Tensor, torch.Tensor | None]:
    weights = torch.cat([w for w, _ in parts])
    if all(b is None for _, b in parts):
        return weights, None
    return weights, torch.cat([b if b is not None else w.new_zeros(w.shape[0]) for w, b in parts])


def fused_decoder(model) -> "FusedDecoder | None":
    """A FusedDecoder for `model` (HF or PEFT-wrapped) when it qualifies: an fp32 Llama-architecture model on a CPU
    with oneDNN, plain or LoRA projections, the default MLP; else None (the engine runs the model's own forward)."""
    cfg = text_config(model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(base, "model", None)
    if (getattr(cfg, "model_type", None) not in FUSED_MODELS or getattr(cfg, "hidden_act", None) != "silu"
            or getattr(cfg, "pretraining_tp", 1) != 1 or getattr(cfg, "mlp_bias", False)
            or decoder is None or not hasattr(decoder, "layers") or not hasattr(decoder, "rotary_emb")
            or type(getattr(decoder, "embed_tokens", None)) is not torch.nn.Embedding):
        return None
    heads, kv = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    head = _linear_weights(base.get_output_embeddings())
    if head is None or not _packable(list(base.parameters())):
        return None
    layers = []
    try:
        for layer in decoder.layers:
            a, mlp = layer.self_attn, layer.mlp
            if getattr(a, "scaling", dim**-0.5) != dim**-0.5 or getattr(a, "sliding_window", None):
                return None
            parts = [_linear_weights(p) for p in (a.q_proj, a.k_proj, a.v_proj, a.o_proj, mlp.gate_proj,
                                                  mlp.up_proj, mlp.down_proj)]
            if any(p is None for p in parts):
                return None
            norms = (layer.input_layernorm, layer.post_attention_layernorm)
            if any(set(dict(n.named_parameters())) != {"weight"} for n in norms):
                return None
            qkv, gate_up = _concat(parts[:3]), _concat(parts[4:6])
            layers.append((norms[0].weight.detach(), pack(qkv[0]), qkv[1], pack(parts[3][0]), parts[3][1],
                           norms[1].weight.detach(), pack(gate_up[0]), gate_up[1], pack(parts[6][0]), parts[6][1]))
        final = decoder.norm.weight.detach()
        return FusedDecoder(layers, decoder.embed_tokens.weight.detach(), final, pack(head[0]), head[1],
                            decoder.rotary_emb, heads, kv, dim, cfg.rms_norm_eps, cfg.intermediate_size)
    except (RuntimeError, AttributeError) as e:  # a torch build without oneDNN's packing, an unusual layer
        log.info("sftmix engine: the model's own forward (%s)", e)
        return None


class FusedDecoder:
    """The forward of a Llama-architecture decoder for the engine: token ids, position ids, a 4D mask (boolean for
    prefill, additive for decode) and the engine's SlotCache in; the last position's logits out."""

    def __init__(self, layers, embed, norm, head, head_bias, rotary, heads, kv, dim, eps, intermediate):
        self.layers, self.embed, self.norm, self.head, self.head_bias = layers, embed, norm, head, head_bias
        self.rotary, self.heads, self.kv, self.dim, self.eps, self.inter = rotary, heads, kv, dim, eps, intermediate

    def __call__(self, ids, pos, mask, cache, runs=None) -> torch.Tensor:
        b, q = ids.shape
        H, KV, D = self.heads, self.kv, self.dim
        x = F.embedding(ids, self.embed)
        cos, sin = self.rotary(x, pos)
        cos, sin = cos[:, :, None], sin[:, :, None]  # broadcast over the heads of [rows, tokens, heads, dim]
        for i, (ln1, qkv_w, qkv_b, o_w, o_b, ln2, gu_w, gu_b, down_w, down_b) in enumerate(self.layers):
            h = self._norm(x, ln1)
            qkv = packed_linear(qkv_w, qkv_b, h)
            qk = qkv[..., : (H + KV) * D].view(b, q, H + KV, D)
            half = D // 2
            qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin
            keys, values = cache.update(qk[:, :, H:].transpose(1, 2),
                                        qkv[..., (H + KV) * D :].view(b, q, KV, D).transpose(1, 2), i)
            query = qk[:, :, :H].transpose(1, 2)
            if q > 1 or mask.dtype == torch.bool:  # prefill: sdpa over the key/value heads repeated, as HF's does
                rep = H // KV
                att = F.scaled_dot_product_attention(query, keys.repeat_interleave(rep, 1),
                                                     values.repeat_interleave(rep, 1), attn_mask=mask,
                                                     scale=D**-0.5).transpose(1, 2)
            else:
                att = decode_attention(query, keys, values, mask, D**-0.5, runs)
            x = x + packed_linear(o_w, o_b, att.reshape(b, q, H * D))
            h = self._norm(x, ln2)
            gu = packed_linear(gu_w, gu_b, h)
            x = x + packed_linear(down_w, down_b, F.silu(gu[..., : self.inter]) * gu[..., self.inter :])
        return packed_linear(self.head, self.head_bias, self._norm(x[:, -1], self.norm)).float()

    def _norm(self, x, weight):
        # HF's RMSNorm, bit for bit; `x * x` rather than `pow(2)`, and not `F.rms_norm`: on a CPU both took 3x as long
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True).add_(self.eps)) * weight
