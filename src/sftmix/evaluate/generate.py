"""Completions for chat prompts, by one of four backends that all honour a task's GenSettings the same way.

- "engine" (default): sftmix's continuous-batching engine (evaluate/engine.py); greedy output equals HF generate's
  (on a CPU its packed matmuls round differently in the last bits: a near-exact tie could break the other way).
- "hf": plain HF `model.generate` in fixed, length-sorted, left-padded batches (the baseline).
- "vllm": vLLM, when it is installed (GPU users).
- "openai": any OpenAI-compatible endpoint (`Endpoint`), e.g. `sftmix serve` or a hosted model.

Every backend: the chat template with add_generation_prompt=True; generation ends at the tokenizer's stop tokens
(models.stop_token_ids); text is decoded without special tokens, cut at the first stop string, stripped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..models import stop_token_ids
from .settings import GenSettings

BACKENDS = ("engine", "hf", "vllm", "openai")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible chat endpoint. The API key is read from the environment variable named `api_key_env`
    (never stored or logged); a server that needs none (a local `sftmix serve`) works without it."""

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    max_retries: int = 3
    timeout: float = 600.0


def cut_at_stop(text: str, stops) -> str:
    """Text before the stop string that completes first (the earliest end; on a tie the longer one). Generation
    that stops as soon as a stop string appears and generation that runs on cut the same way."""
    best = None
    for s in stops:
        i = text.find(s) if s else -1
        if i >= 0 and (best is None or (i + len(s), i) < (best[1], best[0])):
            best = (i, i + len(s))
    return text[: best[0]] if best else text


def finish(text: str, settings: GenSettings) -> str:
    return cut_at_stop(text, settings.stop).strip()


def chat_ids(tok, conversations: list[list[dict]]) -> list[list[int]]:
    """Token ids of each conversation's prompt, exactly as the HF baseline tokenizes it."""
    texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def _check(settings, backend: str) -> None:
    if not isinstance(settings, GenSettings):
        raise TypeError(f"settings must be a GenSettings, got {type(settings).__name__}")
    if backend not in BACKENDS:
        from ..errors import SftmixError

        raise SftmixError(f"unknown generation backend {backend!r}; expected one of {', '.join(BACKENDS)}")


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="seq", leave=False, disable=None)


def _stop_checker(tok, stops):
    """Ends a sequence once its text contains a stop string (the final cut is `cut_at_stop`'s)."""
    def check(ids: list[int]) -> bool:
        text = tok.decode(ids, skip_special_tokens=True)
        return any(s and s in text for s in stops)

    return check


def generate(model, tok, conversations: list[list[dict]], settings: GenSettings, batch_size: int = 16,
             progress: bool = True, desc: str = "generate", backend: str = "engine", endpoint=None,
             stats: dict | None = None) -> list[list[str]]:
    """For each conversation, `settings.n` completions. `batch_size` is the number of sequences decoded at once.
    For backend "openai", pass an `Endpoint` as `model` (or as `endpoint`; `tok` is then unused). `stats`, if given,
    is filled with the backend's machine-independent figures (engine and hf)."""
    if isinstance(model, Endpoint) and backend == "engine":
        backend = "openai"
    _check(settings, backend)
    if not conversations:
        return []
    if backend == "openai":
        from .backends import generate_openai

        ep = model if isinstance(model, Endpoint) else endpoint
        if ep is None:
            from ..errors import SftmixError

            raise SftmixError("backend 'openai' needs an Endpoint(base_url, model)")
        return generate_openai(ep, conversations, settings, progress=progress, desc=desc)
    if backend == "vllm":
        from .backends import generate_vllm

        return generate_vllm(model, tok, conversations, settings, progress=progress)
    if backend == "hf":
        return generate_hf(model, tok, conversations, settings, batch_size, progress, desc, stats=stats)

    from .engine import supported

    why = supported(model)
    if why:
        log.warning("sftmix engine: %s; using HF generate", why)
        return generate_hf(model, tok, conversations, settings, batch_size, progress, desc, stats=stats)
    prompts = chat_ids(tok, conversations)
    stop_check = _stop_checker(tok, settings.stop) if settings.stop else None
    ids, st = _run_engine(model, tok, prompts, settings.max_new_tokens, settings, stop_check, batch_size, progress,
                          desc)
    if stats is not None:
        stats.update(st.figures())
    return [[finish(tok.decode(g, skip_special_tokens=True), settings) for g in per] for per in ids]


def _run_engine(model, tok, prompts, max_new, settings: GenSettings, stop_check, batch_size: int, progress: bool,
                desc: str):
    from .engine import Engine

    bar = _bar(progress, len(prompts) * settings.n, desc)
    model.eval()
    engine = Engine(model, stop_token_ids(tok), slots=batch_size,
                    pad_id=tok.pad_token_id if tok.pad_token_id is not None else 0)
    try:
        return engine.run(prompts, max_new, n=settings.n, do_sample=settings.do_sample,
                          temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed,
                          stop_check=stop_check, on_finish=bar.update if bar else None)
    finally:
        if bar:
            bar.close()


def _sampling(settings: GenSettings) -> tuple:
    return (settings.n, settings.do_sample, settings.temperature, settings.top_p, settings.seed)


def generate_many(model, tok, jobs: list[tuple[list[list[dict]], GenSettings]], batch_size: int = 16,
                  progress: bool = True, desc: str = "generate", backend: str = "engine",
                  stats: dict | None = None) -> list[list[list[str]]]:
    """`generate` for several tasks at once: [(conversations, settings), ...] -> one result per job, each equal to
    what `generate` gives for that job alone. On the engine, greedy jobs (whatever their max_new_tokens and stop
    strings) share one run, so that one task's last long sequences decode beside the next task's prompts instead
    of alone. Sampled jobs run on their own: their seeds are tied to the prompt's place in its own task."""
    out: list = [None] * len(jobs)
    shared = []
    for i, (convs, settings) in enumerate(jobs):
        _check(settings, backend)
        if backend == "engine" and not settings.do_sample and settings.n == 1 and convs:
            shared.append(i)
        else:
            out[i] = generate(model, tok, convs, settings, batch_size, progress, desc, backend, stats=None)
    if len(shared) == 1:
        i = shared[0]
        out[i] = generate(model, tok, jobs[i][0], jobs[i][1], batch_size, progress, desc, backend, stats=stats)
    elif shared:
        from .engine import supported

        if supported(model):
            for i in shared:
                out[i] = generate(model, tok, jobs[i][0], jobs[i][1], batch_size, progress, desc, backend)
            return out
        prompts, max_new, checks, owner = [], [], [], []
        for i in shared:
            convs, settings = jobs[i]
            ids = chat_ids(tok, convs)
            check = _stop_checker(tok, settings.stop) if settings.stop else None
            prompts += ids
            max_new += [settings.max_new_tokens] * len(ids)
            checks += [check] * len(ids)
            owner += [i] * len(ids)
        ids, st = _run_engine(model, tok, prompts, max_new, GenSettings(), checks, batch_size, progress, desc)
        if stats is not None:
            stats.update(st.figures())
        for i in shared:
            out[i] = []
        for j, per in zip(owner, ids):
            out[j].append([finish(tok.decode(g, skip_special_tokens=True), jobs[j][1]) for g in per])
    return out


def generate_hf(model, tok, conversations: list[list[dict]], settings: GenSettings, batch_size: int = 16,
                progress: bool = True, desc: str = "generate", backend: str = "hf",
                stats: dict | None = None) -> list[list[str]]:
    """Plain HF `model.generate` in fixed batches: prompts sorted by length, left-padded, returned in the caller's
    order. Sampling is seeded with `settings.seed` once per call (repeatable for the same inputs and batch size)."""
    import time

    import torch

    _check(settings, "hf")
    if not conversations:
        return []
    t0 = time.perf_counter()
    texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    out: list[list[str]] = [[] for _ in texts]
    stops = stop_token_ids(tok)
    tok.padding_side = "left"
    device = next(model.parameters()).device
    model.eval()
    st = {"prompt_tokens": 0, "prefill_tokens": 0, "prefill_padding": 0, "generated_tokens": 0, "forwards": 0,
          "decode_steps": 0, "decode_rows": 0, "useful_decode_rows": 0}
    if settings.do_sample:
        torch.manual_seed(settings.seed)
        knobs = dict(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0)
    else:
        knobs = dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    per_batch = max(1, batch_size // settings.n)  # batch_size counts sequences, as in the engine
    bar = _bar(progress, len(texts) * settings.n, desc)
    for b in range(0, len(order), per_batch):
        idx = order[b : b + per_batch]
        enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.inference_mode():
            gen = model.generate(**enc, max_new_tokens=settings.max_new_tokens, eos_token_id=stops,
                                 pad_token_id=tok.pad_token_id, num_return_sequences=settings.n, **knobs)
        new = gen[:, enc["input_ids"].shape[1] :].tolist()
        real = int(enc["attention_mask"].sum())
        st["prompt_tokens"] += real
        st["prefill_tokens"] += real
        st["prefill_padding"] += enc["input_ids"].numel() - real
        steps = max(len(new[0]) - 1, 0)  # the first new token comes from the prefill forward
        st["forwards"] += 1 + steps
        st["decode_steps"] += steps
        st["decode_rows"] += steps * len(new)
        for k, row in enumerate(new):
            used = next((j + 1 for j, t in enumerate(row) if t in stops), len(row))  # up to the stop token
            st["generated_tokens"] += used
            st["useful_decode_rows"] += max(used - 1, 0)
            out[idx[k // settings.n]].append(finish(tok.decode(row, skip_special_tokens=True), settings))
        if bar:
            bar.update(len(new))
    if bar:
        bar.close()
    if stats is not None:
        st["sequences"] = len(texts) * settings.n
        st["seconds"] = time.perf_counter() - t0
        st["tokens_per_decode_step"] = st["decode_rows"] / max(st["decode_steps"], 1)
        computed = st["prefill_tokens"] + st["prefill_padding"] + st["decode_rows"]
        # wasted rows: left padding in prefill plus decode rows of sequences that had already stopped
        wasted = st["prefill_padding"] + st["decode_rows"] - st["useful_decode_rows"]
        st["padding_fraction"] = wasted / max(computed, 1)
        stats.update(st)
    return out

