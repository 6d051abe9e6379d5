"""sftmix's generation engine: continuous batching over a slot KV cache, for any HF causal LM (PEFT-wrapped too).

Why not `model.generate` in fixed batches: a batch decodes until its longest member is done, so rows that finished
early keep costing a full row of compute, and every prompt is left-padded to the longest in its batch. Here:

- The KV cache is one preallocated buffer per layer, `[slots, kv_heads, columns, head_dim]`. Every active row writes
  its next token at the same column `hi`, so a decode step is one forward over the active rows and writes in place
  (no per-step `torch.cat` of the whole cache, which is what a DynamicCache does).
- A row that finishes leaves at once: the last active row is copied into its slot, so active rows stay `0..n-1` and
  the forward never computes a finished or empty row.
- Waiting prompts take free slots: they are prefilled together (sorted by length, so they pad little) directly into
  their slots, right-aligned to end at column `hi - 1`, and decode with the others from the next step on.
- A per-slot `valid` column mask says which columns hold the row's own tokens; a row attends only to those, with
  its own position ids, so padding and stale columns from earlier occupants never reach its computation.
- The token prefix that all prompts share (the chat template's system turn) is computed once and copied into each
  row's columns instead of being prefilled again for every prompt.
- n samples of a prompt prefill it once and copy the row.
- Sampling draws from one torch.Generator per (prompt, sample), seeded from the settings' seed, so a sample does not
  depend on which other sequences shared its batch.

Each forward is fastpath.py's: on a CPU, a Llama-architecture model (fp32, plain or LoRA) runs as a `FusedDecoder`;
any other model runs its own forward with an explicit 4D mask, through the engine's decode attention (sdpa models)
and prepacked Linear weights. Models with sliding-window or non-attention layers, or other attention kernels, are
left to `generate_hf` by the caller (see `supported`).
"""

from __future__ import annotations

import inspect
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from . import fastpath
from .fastpath import text_config as _text_config

log = logging.getLogger(__name__)
MIN_SHARED_PREFIX = 4  # shorter common prefixes are not worth a separate forward
GROUP_MIN_LENGTH = 0.9  # a prefill group takes prompts down to this fraction of its longest one


# ------------------------------------------------------------------------------------------------------- cache


class _SlotLayer(CacheLayerMixin):
    """One layer's keys and values for every slot; reads and writes the window its pool is set to."""

    is_sliding = False
    is_compileable = False

    def __init__(self, pool: "SlotCache"):
        super().__init__()
        self.pool = pool

    def allocate(self, heads: int, k_dim: int, v_dim: int, dtype, device) -> None:
        p = self.pool
        self.keys = torch.zeros((p.slots, heads, p.capacity, k_dim), dtype=dtype, device=device)
        self.values = torch.zeros((p.slots, heads, p.capacity, v_dim), dtype=dtype, device=device)
        self.dtype, self.device = dtype, device
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.allocate(key_states.shape[1], key_states.shape[-1], value_states.shape[-1], key_states.dtype,
                      key_states.device)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        p = self.pool
        end = p.w0 + key_states.shape[-2]
        self.keys[p.r0 : p.r1, :, p.w0 : end] = key_states
        self.values[p.r0 : p.r1, :, p.w0 : end] = value_states
        return self.keys[p.r0 : p.r1, :, p.a0 : end], self.values[p.r0 : p.r1, :, p.a0 : end]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.pool.w0 + query_length - self.pool.a0, 0

    def get_seq_length(self) -> int:
        return self.pool.w0 - self.pool.a0

    def get_max_length(self) -> int:
        return -1


class SlotCache(Cache):
    """A transformers Cache whose forward window is set by the engine before each call: rows `r0:r1` write their new
    keys/values at columns `w0:w0+q` and attend over columns `a0:w0+q` (masked by the engine's 4D mask)."""

    def __init__(self, slots: int, capacity: int):
        self.slots, self.capacity = slots, capacity
        self.r0 = self.r1 = self.w0 = self.a0 = 0
        super().__init__(layers=[])

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        while len(self.layers) <= layer_idx:
            self.layers.append(_SlotLayer(self))
        return self.layers[layer_idx].update(key_states, value_states)

    def window(self, r0: int, r1: int, w0: int, a0: int) -> None:
        self.r0, self.r1, self.w0, self.a0 = r0, r1, w0, a0

    def _tensors(self):
        for layer in self.layers:
            if layer.is_initialized:
                yield layer.keys
                yield layer.values

    def copy_row(self, src: int, dst: int, c0: int, c1: int) -> None:
        for t in self._tensors():
            t[dst, :, c0:c1] = t[src, :, c0:c1]

    def shift(self, rows: int, c0: int, c1: int, delta: int) -> None:
        """Move columns c0:c1 of the first `rows` slots by `delta` (either way; the ranges may overlap)."""
        for t in self._tensors():
            t[:rows, :, c0 + delta : c1 + delta] = t[:rows, :, c0:c1].clone()

    def grow(self, capacity: int) -> None:
        for layer in self.layers:
            if layer.is_initialized:
                for name in ("keys", "values"):
                    old = getattr(layer, name)
                    new = old.new_zeros(old.shape[:2] + (capacity,) + old.shape[3:])
                    new[:, :, : old.shape[2]] = old
                    setattr(layer, name, new)
        self.capacity = capacity

    def put(self, r0: int, r1: int, c0: int, prefix: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Copy a shared prefix's keys/values (one `[1, heads, P, dim]` pair per layer) into rows r0:r1 at c0."""
        while len(self.layers) < len(prefix):
            self.layers.append(_SlotLayer(self))
        for layer, (k, v) in zip(self.layers, prefix):
            if not layer.is_initialized:
                layer.allocate(k.shape[1], k.shape[-1], v.shape[-1], k.dtype, k.device)
            layer.keys[r0:r1, :, c0 : c0 + k.shape[2]] = k
            layer.values[r0:r1, :, c0 : c0 + v.shape[2]] = v


# ------------------------------------------------------------------------------------------------------ engine


@dataclass
class EngineStats:
    """Machine-independent figures of one run."""

    sequences: int = 0
    prompt_tokens: int = 0  # all prompts' tokens, samples counted once per prompt
    shared_prefix_tokens: int = 0  # computed once, copied into every row
    prefill_tokens: int = 0  # tokens computed in prefill forwards (real tokens)
    prefill_padding: int = 0  # pad positions computed in prefill forwards
    generated_tokens: int = 0  # tokens produced, each sequence's stop token included
    forwards: int = 0  # model forward passes (prefix + prefills + decode steps)
    decode_steps: int = 0
    decode_rows: int = 0  # sum over decode steps of the rows in the step; each one a useful token
    seconds: float = 0.0

    def figures(self) -> dict:
        d = dict(self.__dict__)
        d["tokens_per_decode_step"] = self.decode_rows / max(self.decode_steps, 1)
        computed = self.prefill_padding + self.prefill_tokens + self.decode_rows
        d["padding_fraction"] = self.prefill_padding / max(computed, 1)
        return d


@dataclass
class _Seq:
    prompt: int  # index into the prompts
    sample: int
    gen: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None


def supported(model) -> str | None:
    """None if the engine can run `model`; otherwise why not (the caller falls back to HF generate)."""
    cfg = _text_config(model)
    if getattr(cfg, "is_encoder_decoder", False):
        return "encoder-decoder models are not supported"
    impl = getattr(cfg, "_attn_implementation", None) or "eager"
    if impl not in ("sdpa", "eager"):
        return f"attention implementation {impl!r} takes no custom masks"
    types = getattr(cfg, "layer_types", None)
    if types and any(t != "full_attention" for t in types):
        return "the model has sliding-window or non-attention layers"
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return "the model uses sliding-window attention"
    return None


def _cache_arg(module) -> str:
    """transformers 5.2x renamed the forward's `past_key_values` to `cache` (and warns on the old name)."""
    base = module.get_base_model() if hasattr(module, "get_base_model") else module
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


def _seed(seed: int, prompt: int, sample: int) -> int:
    # Distinct, stable streams per (seed, prompt, sample); splitmix-style mixing keeps neighbours uncorrelated.
    x = (seed * 0x9E3779B97F4A7C15 + prompt * 0xBF58476D1CE4E5B9 + sample * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    return x & (2**63 - 1)


def _common_prefix(prompts: list[list[int]]) -> int:
    first = prompts[0]
    n = min(len(p) for p in prompts) - 1  # every row keeps at least one token of its own for its first logits
    for p in prompts[1:]:
        i = 0
        while i < n and p[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


class Engine:
    """Generate token ids for many prompts with continuous batching. `slots` rows decode at once."""

    def __init__(self, model, stop_ids: list[int], slots: int = 32, pad_id: int = 0, max_prefill_tokens: int = 4096,
                 max_cache_bytes: int = 4 << 30):
        self.model = model
        self.stop_ids = set(stop_ids)
        self.slots = self.max_slots = max(1, slots)
        self.max_cache_bytes = max_cache_bytes
        self.pad_id = pad_id
        self.max_prefill_tokens = max_prefill_tokens
        self.device = next(model.parameters()).device
        cfg = _text_config(model)
        self.float_mask = (getattr(cfg, "_attn_implementation", None) or "eager") != "sdpa"
        self.dtype = next(model.parameters()).dtype
        self.cache_arg = _cache_arg(model)

    # ---------------------------------------------------------------------------------------------- public

    def run(self, prompts: list[list[int]], max_new_tokens: int | list[int], n: int = 1, do_sample: bool = False,
            temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
            stop_check: Callable[[list[int]], bool] | list | None = None,
            on_finish: Callable[[int], None] | None = None) -> tuple[list[list[list[int]]], EngineStats]:
        """For each prompt, `n` lists of generated ids (a stop token ends a list and is not included).
        `stop_check(ids)` ends a sequence early (text stop strings); `on_finish(k)` reports k finished sequences.
        `max_new_tokens` and `stop_check` may also be lists, one per prompt: prompts of several tasks then share
        one run, so the batch stays full where one task's prompts would leave it to a few long stragglers."""
        per_prompt = isinstance(max_new_tokens, (list, tuple))
        self.max_new = list(max_new_tokens) if per_prompt else [max_new_tokens] * len(prompts)
        checks = stop_check if isinstance(stop_check, (list, tuple)) else [stop_check] * len(prompts)
        if len(self.max_new) != len(prompts) or len(checks) != len(prompts):
            raise ValueError("max_new_tokens and stop_check lists need one entry per prompt")
        self.stop_checks = checks
        self.do_sample, self.temperature, self.top_p = do_sample, temperature, top_p
        self.on_finish = on_finish
        stats = self.stats = EngineStats(sequences=len(prompts) * n, prompt_tokens=sum(map(len, prompts)))
        t0 = time.perf_counter()
        if not prompts:
            return [], stats
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        self.prompts = prompts
        self.seqs: list[_Seq] = []
        # Longest prompts first: admission groups have similar lengths, so prefill pads little.
        for i in sorted(range(len(prompts)), key=lambda i: -len(prompts[i])):
            for j in range(n):
                g = None
                if do_sample:
                    g = torch.Generator(device=self.device)
                    g.manual_seed(_seed(seed, i, j))
                self.seqs.append(_Seq(i, j, generator=g))
        self.queue = list(range(len(self.seqs)))[::-1]  # pop() takes the next one
        self.done: list[list[int] | None] = [None] * len(self.seqs)

        self.P = _common_prefix(prompts) if len(prompts) > 1 else 0
        if self.P < MIN_SHARED_PREFIX:
            self.P = 0
        stats.shared_prefix_tokens = self.P
        span = max(len(p) + m for p, m in zip(prompts, self.max_new)) + 1  # the most columns one row ever needs
        column, total = self._column_bytes(), len(prompts) * n
        # Admitted all at once (when the slots and the cache budget allow), every row is right-aligned at the longest
        # prompt's end and `hi` stays below `tight`: no slack, which would only cost zeroing memory never used (for
        # the quickstart, a fifth of 2 GiB). Otherwise slack columns let `hi` run on past later admissions; when it
        # reaches the end, the active window slides back to column 0.
        tight = max(map(len, prompts)) + max(self.max_new) + 1
        at_once = total <= min(self.max_slots, self.max_cache_bytes // (tight * column))
        capacity = tight if at_once else span + max(32, span // 4)
        # As many slots as asked, as long as their keys and values fit the cache budget (a large model's long rows
        # would otherwise take more memory than the machine has).
        fit = self.max_cache_bytes // (capacity * column)
        self.slots = max(1, min(self.max_slots, total, fit))
        if fit < min(self.max_slots, total):
            log.info("sftmix engine: %d sequences at once, not %d: their keys and values fit a %.1f GiB cache",
                     self.slots, self.max_slots, self.max_cache_bytes / 2**30)
        self.pool = SlotCache(self.slots, capacity)
        self.valid = torch.zeros((self.slots, self.pool.capacity), dtype=torch.bool, device=self.device)
        self.slot_seq: list[int] = []  # sequence held by each active slot
        self.slot_pos: list[int] = []  # position id of each active slot's next token
        self.slot_start: list[int] = []  # first column each active slot uses
        self.last: list[int] = []  # each active slot's last token
        self.hi = 0

        # A Llama-architecture model on a CPU runs as a FusedDecoder; any other model runs its own forward with the
        # engine's decode attention (sdpa models) and prepacked Linear weights.
        with torch.inference_mode():
            self.fused = fastpath.fused_decoder(self.model) if self.device.type == "cpu" else None
        own = self.fused is None
        attention = fastpath.attention_for_decode(self.model) if own else nullcontext(False)
        packing = fastpath.packed_linears(self.model) if own else nullcontext()
        try:
            with torch.inference_mode(), attention as fast, packing:
                self.additive_decode = self.fused is not None or bool(fast) or self.float_mask
                # Runs of rows reach the attention of fused models, and through the forwards of the models named.
                kind = getattr(_text_config(self.model), "model_type", None)
                self.fast_attention = self.fused is not None or (bool(fast) and kind in fastpath.KWARGS_MODELS)
                self.runs_for = self.runs = None
                self.prefix = self._prefix_kv() if self.P else None
                while self.queue or self.slot_seq:
                    free = self.slots - len(self.slot_seq)
                    # Refill when a few slots are free (or the batch ran dry): fewer, fuller prefill forwards.
                    if self.queue and (free >= max(1, self.slots // 8) or not self.slot_seq
                                       or len(self.queue) <= free):
                        while self.queue and free > 0:  # one prefill forward per group of similar lengths
                            self._admit(free)
                            free = self.slots - len(self.slot_seq)
                    if self.slot_seq:
                        self._decode()
        finally:
            self.fused = None  # its packed weight copies
        stats.seconds = time.perf_counter() - t0
        out: list[list[list[int]]] = [[[] for _ in range(n)] for _ in prompts]
        for s, ids in zip(self.seqs, self.done):
            out[s.prompt][s.sample] = ids
        return out, stats

    # ---------------------------------------------------------------------------------------------- helpers

    def _column_bytes(self) -> int:
        """Bytes of keys and values one slot holds per column, over all layers."""
        cfg = _text_config(self.model)
        heads = cfg.num_attention_heads
        kv = getattr(cfg, "num_key_value_heads", None) or heads
        dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        return cfg.num_hidden_layers * 2 * kv * dim * torch.finfo(self.dtype).bits // 8

    def _additive(self, mask: torch.Tensor) -> torch.Tensor:
        return torch.zeros(mask.shape, dtype=self.dtype, device=self.device).masked_fill_(
            ~mask, torch.finfo(self.dtype).min)

    def _forward(self, ids: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor, pool: SlotCache | None = None,
                 extra: dict | None = None):
        if self.float_mask and mask.dtype == torch.bool:  # eager attention adds its mask to the scores
            mask = self._additive(mask)
        self.stats.forwards += 1
        cache = self.pool if pool is None else pool
        if self.fused is not None:
            return self.fused(ids, pos, mask, cache, (extra or {}).get("sftmix_runs"))
        args = dict(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{self.cache_arg: cache},
                    **(extra or {}))
        return self.model(**args, logits_to_keep=1).logits[:, -1].float()

    def _prefix_kv(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        P = self.P
        pool = SlotCache(1, P)
        pool.window(0, 1, 0, 0)
        ids = torch.tensor([self.prompts[0][:P]], device=self.device)
        pos = torch.arange(P, device=self.device)[None]
        mask = torch.ones((P, P), dtype=torch.bool, device=self.device).tril()[None, None]
        self.stats.prefill_tokens += P
        self._forward(ids, pos, mask, pool)
        return [(layer.keys, layer.values) for layer in pool.layers]

    def _ensure_capacity(self, columns: int) -> None:
        if columns > self.pool.capacity:
            cap = max(columns, self.pool.capacity + self.pool.capacity // 2)
            self.pool.grow(cap)
            valid = torch.zeros((self.slots, cap), dtype=torch.bool, device=self.device)
            valid[:, : self.valid.shape[1]] = self.valid
            self.valid = valid

    def _shift(self, delta: int) -> None:
        """Move every active row's columns by `delta` (left to make room at the end, right to make room before)."""
        n = len(self.slot_seq)
        lo = min(self.slot_start)
        self.pool.shift(n, lo, self.hi, delta)
        self.valid[:n, lo + delta : self.hi + delta] = self.valid[:n, lo : self.hi].clone()
        if delta > 0:
            self.valid[:n, lo : lo + delta] = False
        else:
            self.valid[:n, self.hi + delta : self.hi] = False
        self.slot_start = [s + delta for s in self.slot_start]
        self.hi += delta

    def _room_before(self, need: int) -> None:
        """Make columns 0..hi hold at least `need` columns before `hi` for rows being admitted."""
        if self.hi >= need:
            return
        if not self.slot_seq:
            self._ensure_capacity(need + 1)
            self.hi = need
            return
        self._ensure_capacity(need + 1)
        self._shift(need - self.hi)

    def _room_after(self) -> None:
        """Make room for one more column at `hi`: slide the active window to column 0, or grow."""
        if self.hi < self.pool.capacity:
            return
        lo = min(self.slot_start)
        if lo > 0:
            self._shift(-lo)
        else:
            self._ensure_capacity(self.hi + 1)

    # ---------------------------------------------------------------------------------------------- admit

    def _admit(self, free: int) -> None:
        """Prefill waiting sequences into the free slots (prompts shared by several samples are prefilled once)."""
        take: list[int] = []
        uniq: list[int] = []  # distinct prompts, in order
        budget = self.max_prefill_tokens
        while self.queue and len(take) < free:
            k = self.queue[-1]
            p = self.seqs[k].prompt
            if p not in uniq:
                cost = len(self.prompts[p]) - self.P
                longest = max([cost] + [len(self.prompts[u]) - self.P for u in uniq])
                # A group ends at the token budget, or where the next prompt is so much shorter than the group's
                # longest that its padding would cost more than a forward of its own.
                if uniq and (longest * (len(uniq) + 1) > budget or cost < GROUP_MIN_LENGTH * longest):
                    break
                uniq.append(p)
            take.append(self.queue.pop())
        P, n = self.P, len(self.slot_seq)
        suffixes = [self.prompts[p][P:] for p in uniq]
        Ls = max(len(s) for s in suffixes)
        self._room_before(P + Ls)
        hi, u = self.hi, len(uniq)
        c0, p0 = hi - Ls, hi - Ls - P  # suffix window start, prefix start

        rows = slice(n, n + u)
        self.valid[rows] = False
        self.valid[rows, p0:c0] = True
        ids = torch.full((u, Ls), self.pad_id, dtype=torch.long)
        pos = torch.zeros((u, Ls), dtype=torch.long)
        real = torch.zeros((u, Ls), dtype=torch.bool)
        for r, s in enumerate(suffixes):
            ids[r, Ls - len(s) :] = torch.tensor(s)
            pos[r, Ls - len(s) :] = torch.arange(P, P + len(s))
            real[r, Ls - len(s) :] = True
        real = real.to(self.device)
        self.valid[rows, c0:hi] = real
        if P:
            self.pool.put(n, n + u, p0, self.prefix)
        # Each real query sees the shared prefix and its own earlier real tokens; a pad query sees only itself, so
        # that its (discarded) output stays finite.
        causal = torch.ones((Ls, Ls), dtype=torch.bool, device=self.device).tril()
        own = causal[None] & real[:, None, :]
        own |= torch.eye(Ls, dtype=torch.bool, device=self.device)[None]
        mask = torch.cat([torch.ones((u, Ls, P), dtype=torch.bool, device=self.device), own], dim=2)[:, None]
        self.pool.window(n, n + u, c0, p0)
        logits = self._forward(ids.to(self.device), pos.to(self.device), mask)
        self.stats.prefill_tokens += sum(len(s) for s in suffixes)
        self.stats.prefill_padding += u * Ls - sum(len(s) for s in suffixes)

        row_of = {p: n + r for r, p in enumerate(uniq)}
        starts = {p: (p0 if P else hi - len(s)) for p, s in zip(uniq, suffixes)}
        # Samples beyond the first of a prompt take a copy of its row.
        extra = n + u
        slot_of: list[int] = []
        used: set[int] = set()
        for k in take:
            p = self.seqs[k].prompt
            if p not in used:
                used.add(p)
                slot_of.append(row_of[p])
            else:
                self.pool.copy_row(row_of[p], extra, p0, hi)
                self.valid[extra] = self.valid[row_of[p]]
                slot_of.append(extra)
                extra += 1
        # Order slots by index so the python-side lists line up with the cache rows.
        order = sorted(range(len(take)), key=lambda i: slot_of[i])
        firsts = self._choose(logits[[row_of[self.seqs[take[i]].prompt] - n for i in order]], [take[i] for i in order])
        for i, t in zip(order, firsts):
            k = take[i]
            p = self.seqs[k].prompt
            self.slot_seq.append(k)
            self.slot_pos.append(len(self.prompts[p]))
            self.slot_start.append(starts[p])
            self.last.append(t)
        self._after_tokens(firsts, range(n, n + len(take)))

    # --------------------------------------------------------------------------------------------- decode

    def _decode(self) -> None:
        self._room_after()
        n, hi = len(self.slot_seq), self.hi
        lo = min(self.slot_start)
        self.valid[:n, hi] = True
        mask = self.valid[:n, lo : hi + 1][:, None, None, :]
        if self.additive_decode:  # made once here rather than in each layer
            mask = self._additive(mask)
        ids = torch.tensor(self.last, dtype=torch.long, device=self.device)[:, None]
        pos = torch.tensor(self.slot_pos, dtype=torch.long, device=self.device)[:, None]
        self.pool.window(0, n, hi, lo)
        extra = {}
        if self.fast_attention:
            starts = tuple(s - lo for s in self.slot_start)
            if starts != self.runs_for:  # rows came or went
                self.runs_for, self.runs = starts, fastpath.attention_runs(list(starts))
            if len(self.runs) > 1:
                extra["sftmix_runs"] = self.runs
        logits = self._forward(ids, pos, mask, extra=extra)
        self.hi += 1
        self.stats.decode_steps += 1
        self.stats.decode_rows += n
        toks = self._choose(logits, self.slot_seq)
        for r in range(n):
            self.slot_pos[r] += 1
            self.last[r] = toks[r]
        self._after_tokens(toks, range(n))

    def _choose(self, logits: torch.Tensor, seqs: list[int]) -> list[int]:
        if not self.do_sample:
            return logits.argmax(-1).tolist()
        probs = torch.softmax(logits / self.temperature, dim=-1)
        out = []
        if self.top_p < 1.0:
            sp, si = probs.sort(dim=-1, descending=True)
            # Keep the most likely tokens until their mass reaches top_p (the one that crosses it included).
            sp = sp.masked_fill(sp.cumsum(-1) - sp > self.top_p, 0.0)
            for r, k in enumerate(seqs):
                out.append(int(si[r, torch.multinomial(sp[r], 1, generator=self.seqs[k].generator)]))
        else:
            for r, k in enumerate(seqs):
                out.append(int(torch.multinomial(probs[r], 1, generator=self.seqs[k].generator)))
        return out

    def _after_tokens(self, toks: list[int], slots) -> None:
        """Record each slot's new token; finished sequences leave their slots."""
        finished = []
        for t, r in zip(toks, slots):
            s = self.seqs[self.slot_seq[r]]
            self.stats.generated_tokens += 1
            if t in self.stop_ids:
                finished.append(r)
                continue
            s.gen.append(t)
            check = self.stop_checks[s.prompt]
            if len(s.gen) >= self.max_new[s.prompt] or (check is not None and check(s.gen)):
                finished.append(r)
        for r in sorted(finished, reverse=True):
            self._release(r)
        if finished and self.on_finish:
            self.on_finish(len(finished))

    def _release(self, r: int) -> None:
        k = self.slot_seq[r]
        self.done[k] = self.seqs[k].gen
        last = len(self.slot_seq) - 1
        if r != last:  # the last active row moves into the freed slot
            lo = min(self.slot_start)
            self.pool.copy_row(last, r, lo, self.hi)
            self.valid[r] = self.valid[last]
            for lst in (self.slot_seq, self.slot_pos, self.slot_start, self.last):
                lst[r] = lst[last]
        for lst in (self.slot_seq, self.slot_pos, self.slot_start, self.last):
            lst.pop()
        if not self.slot_seq:
            self.hi = 0
