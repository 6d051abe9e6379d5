"""Generation backends outside this process's torch: vLLM (when installed) and OpenAI-compatible endpoints.

Both return, like `generate`, `settings.n` completions per conversation, cut at the first stop string and stripped.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

from ..errors import SftmixError, redact
from .settings import GenSettings


# ------------------------------------------------------------------------------------------------------- vLLM


def have_vllm() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:  # not installed, or installed without a usable GPU build
        return False
    return True


@lru_cache(maxsize=1)  # one engine per process: each reserves a share of the GPU
def _vllm_engine(path: str, dtype: str):
    from vllm import LLM

    util = float(os.environ.get("SFTMIX_VLLM_GPU_UTIL", "0.5"))  # the HF copy of the model stays on the GPU too
    # LoRA enabled whether or not this checkpoint has an adapter, so the base and its adapters share the engine.
    return LLM(model=path, dtype=dtype, enable_lora=True, gpu_memory_utilization=util, seed=0)


_lora_ids = itertools.count(1)  # vLLM caches adapters by id: every saved adapter gets a new one


def _model_source(model) -> tuple[str, str | None]:
    """(base weights directory or hub id, LoRA adapter directory or None) of an HF or PEFT model, or a path."""
    if isinstance(model, (str, os.PathLike)):
        return str(model), None
    if hasattr(model, "peft_config"):  # a PeftModel: vLLM serves the base and applies the saved adapter
        adapter = tempfile.mkdtemp(prefix="sftmix-lora-")
        model.save_pretrained(adapter)
        return model.get_base_model().config._name_or_path, adapter
    return model.config._name_or_path, None


def generate_vllm(model, tok, conversations: list[list[dict]], settings: GenSettings,
                  progress: bool = True) -> list[list[str]]:
    if not have_vllm():
        raise SftmixError("backend 'vllm' needs vLLM installed (pip install vllm; a CUDA GPU)")
    path, adapter = _model_source(model)
    try:
        return _generate_vllm(model, tok, conversations, settings, progress, path, adapter)
    finally:
        if adapter:
            shutil.rmtree(adapter, ignore_errors=True)


def _generate_vllm(model, tok, conversations, settings: GenSettings, progress: bool, path: str,
                   adapter: str | None) -> list[list[str]]:
    from vllm import SamplingParams

    from ..models import stop_token_ids
    from .generate import chat_ids, finish

    dtype = str(next(model.parameters()).dtype).removeprefix("torch.") if hasattr(model, "parameters") else "auto"
    llm = _vllm_engine(path, dtype)
    params = SamplingParams(
        n=settings.n, max_tokens=settings.max_new_tokens, stop_token_ids=stop_token_ids(tok),
        temperature=settings.temperature if settings.do_sample else 0.0,
        top_p=settings.top_p if settings.do_sample else 1.0, seed=settings.seed if settings.do_sample else None,
        stop=list(settings.stop) or None, skip_special_tokens=True,
    )
    lora = None
    if adapter:
        from vllm.lora.request import LoRARequest

        i = next(_lora_ids)
        lora = LoRARequest(f"sftmix-adapter-{i}", i, adapter)
    # Token ids, not chat messages: the same template and tokenization as the other backends.
    prompts = [{"prompt_token_ids": ids} for ids in chat_ids(tok, conversations)]
    results = llm.generate(prompts, params, use_tqdm=progress, lora_request=lora)
    return [[finish(o.text, settings) for o in r.outputs] for r in results]


# ----------------------------------------------------------------------------------------- OpenAI-compatible


def _client(ep):
    try:
        from openai import OpenAI
    except ImportError:
        raise SftmixError("backend 'openai' needs the openai package: pip install openai") from None
    # A local server may need no key; the SDK insists on a non-empty string.
    key = os.environ.get(ep.api_key_env) or "sftmix-no-key"
    return OpenAI(base_url=ep.base_url, api_key=key, max_retries=ep.max_retries, timeout=ep.timeout)


def _one(client, ep, messages: list[dict], settings: GenSettings) -> list[str]:
    import openai

    kw = dict(model=ep.model, messages=messages, max_tokens=settings.max_new_tokens, n=settings.n)
    if settings.do_sample:
        kw.update(temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed)
    else:
        kw.update(temperature=0.0)
    if settings.stop:
        kw["stop"] = list(settings.stop)
    try:
        resp = client.chat.completions.create(**kw)
    except openai.AuthenticationError:
        where = (f"set the environment variable {ep.api_key_env}" if ep.api_key_env
                 else "none was sent; name the environment variable holding it (sftmix eval --api-key-env VAR)")
        raise SftmixError(f"endpoint {redact(ep.base_url)} refused the API key: {where}") from None
    except openai.APIConnectionError as e:
        raise SftmixError(f"endpoint {redact(ep.base_url)} is unreachable ({type(e).__name__})") from None
    except openai.APIStatusError as e:
        raise SftmixError(f"endpoint {redact(ep.base_url)} answered HTTP {e.status_code}: {str(e.message)[:300]}") from None
    choices = sorted(resp.choices, key=lambda c: c.index)
    if len(choices) != settings.n:
        raise SftmixError(f"endpoint {redact(ep.base_url)} returned {len(choices)} choices, asked for n={settings.n}")
    from .generate import finish

    return [finish(c.message.content or "", settings) for c in choices]


def generate_openai(ep, conversations: list[list[dict]], settings: GenSettings, progress: bool = True,
                    desc: str = "generate") -> list[list[str]]:
    """One chat-completions request per conversation (n choices each), `ep.concurrency` in flight at a time."""
    client = _client(ep)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(conversations), desc=desc, unit="item", leave=False, disable=None)

    def job(conv):
        out = _one(client, ep, conv, settings)
        if bar:
            bar.update(1)
        return out

    try:
        with ThreadPoolExecutor(max_workers=max(1, ep.concurrency)) as pool:
            return list(pool.map(job, conversations))  # map keeps the callers' order
    finally:
        if bar:
            bar.close()
