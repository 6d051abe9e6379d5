"""One stage of fine-tuning: a plain PyTorch loop over a transformers model (full, LoRA or QLoRA through PEFT).

A plain loop keeps every step visible (torchtune-style): seeded shuffling into batches, packed (one row per
micro-batch, no attention across examples; see packing.py) or padded, logits computed only where a token is trained
on, AdamW with warmup + schedule from transformers, gradient accumulation and clipping.

One code path for one process and many: accelerate's `Accelerator` is a no-op wrapper in a single process and DDP
(or FSDP / DeepSpeed from `training.accelerate_config`) under `accelerate launch` / torchrun. Every rank builds the
same batches from the same seed and takes its share of each, and the loss is normalised by the global count of
trained tokens, so N processes follow the same trajectory as one with the same batch.

Precision on CUDA: full fine-tuning keeps fp32 master weights (loaded in fp32) and runs forward/backward under bf16
autocast, so small updates are not rounded away; LoRA keeps the frozen base in bf16 and the adapter in fp32.

The result is written into the stage's directory (LoRA adapter or full weights) with a `stage.json`, fsynced and
renamed into place: a directory with stage.json is a finished stage, whoever wrote it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..data.example import Example
from ..errors import SftmixError
from ..faults import crash_point
from ..models import _dtype, load_model, load_tokenizer
from . import TRAINER_VERSION, packing
from .tokenize import IGNORE, prepare

# DMT's full fine-tuning rate; adapters take a ~10x larger step (LoRA / QLoRA papers use 1e-4..2e-4).
DEFAULT_LR = {"full": 2e-5, "lora": 2e-4, "qlora": 2e-4}


@dataclass
class StageJob:
    """Everything needed to train one stage: the content hash of all of it is `stage_id`."""

    stage_id: str
    model: object  # config.ModelConfig
    examples: list[Example]
    training: object  # config.TrainingConfig
    seed: int
    parent_dir: str | None  # directory of the parent stage, None for the base model
    out_dir: str


def learning_rate(training, finetune: str) -> float:
    return training.learning_rate if training.learning_rate is not None else DEFAULT_LR[finetune]


def _batches(data: list[dict], batch_size: int, rng: random.Random, by_length: bool) -> list[list[dict]]:
    """Shuffled batches. by_length (padded rows): sort within windows of 32 batches so padding stays small. Packed
    rows have no padding to save, so they keep uniformly random batches: length-sorted ones group rows of one kind
    (long code, short arithmetic) into the same step, which costs held-out loss (bench/train.py: +13% on tiny)."""
    idx = list(range(len(data)))
    rng.shuffle(idx)
    if not by_length:
        return [[data[i] for i in idx[b : b + batch_size]] for b in range(0, len(idx), batch_size)]
    window = batch_size * 32
    batches = []
    for w in range(0, len(idx), window):
        chunk = sorted(idx[w : w + window], key=lambda i: len(data[i]["input_ids"]))
        batches.extend([data[i] for i in chunk[b : b + batch_size]] for b in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _load_dtype(m, device_type: str) -> str:
    if m.finetune == "full" and device_type == "cuda":
        return "float32"  # fp32 master weights; compute runs under bf16 autocast
    return str(_dtype(m.dtype, device_type)).removeprefix("torch.")


def _prepare_model(job: StageJob, device, device_type: str):
    m, hp = job.model, job.training
    parent = Path(job.parent_dir) if job.parent_dir else None
    dtype = _load_dtype(m, device_type)
    if m.finetune == "full":
        model = load_model(m.name, dtype, device, weights=parent / "model" if parent else None)
    else:
        from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

        base = load_model(m.name, dtype, device, quantize_4bit=m.finetune == "qlora")
        if m.finetune == "qlora":
            base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=hp.gradient_checkpointing)
        if parent:  # continue training the parent's adapter: one adapter carries the whole curriculum
            model = PeftModel.from_pretrained(base, str(parent / "adapter"), is_trainable=True)
        else:
            import torch

            torch.manual_seed(job.seed)  # the adapter's init must not depend on what loading the base drew
            cfg = LoraConfig(
                r=m.lora.r, lora_alpha=m.lora.alpha, lora_dropout=m.lora.dropout,
                target_modules=m.lora.target_modules, task_type="CAUSAL_LM",
            )
            model = get_peft_model(base, cfg)
    if hp.gradient_checkpointing:
        base = _base(model)  # transformers 5 renamed it; 4.x has only the old name
        if hasattr(base, "activation_checkpointing_enable"):
            base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _in_launch() -> bool:
    return bool(os.environ.get("SFTMIX_LAUNCHED")) or int(os.environ.get("WORLD_SIZE", "1")) > 1


def train_stage(job: StageJob, progress: bool = True) -> dict:
    """Train one stage into job.out_dir and return its info; a finished stage there is returned as it is."""
    done = stage_done(job.out_dir)
    if done is not None:
        return done
    if job.training.accelerate_config and not _in_launch():
        return _launch(job)
    return _train(job, progress)


def _launch(job: StageJob) -> dict:
    """Run this stage under `accelerate launch --config_file ...` (DDP, FSDP, DeepSpeed: accelerate's business)."""
    cfg = Path(job.training.accelerate_config).expanduser()
    if not cfg.exists():
        raise SftmixError(f"training.accelerate_config: file not found: {cfg}")
    out = Path(job.out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".launch-") as d:
        f = Path(d) / "job.pkl"
        f.write_bytes(pickle.dumps(job))
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(cfg),
               "-m", "sftmix.train.trainer", str(f)]
        rc = subprocess.run(cmd, env={**os.environ, "SFTMIX_LAUNCHED": "1"}).returncode
    info = stage_done(out)
    if rc != 0 or info is None:
        raise SftmixError(f"stage {job.stage_id}: `{' '.join(cmd[2:5])} ...` failed (exit {rc})")
    return info


def _token_loss(model, batch: dict, keep_ok: bool):
    """Sum of cross-entropy over trained tokens; logits only at positions with a target (any row)."""
    import torch

    targets = batch.pop("targets")
    if keep_ok:
        keep = (targets != IGNORE).any(0).nonzero().squeeze(-1)
        logits = model(**batch, logits_to_keep=keep).logits
        targets = targets[:, keep]
    else:
        logits = model(**batch).logits
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )


def _accepts_logits_to_keep(model) -> bool:
    import inspect

    return "logits_to_keep" in inspect.signature(_base(model).forward).parameters


class _Memory:
    """Peak memory of the stage: CUDA's allocator peak, or the process RSS sampled after each forward pass."""

    def __init__(self, device_type: str, device):
        import torch

        self.cuda = device_type == "cuda"
        self.device = device
        self.peak = 0
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
        else:
            import psutil

            self.proc = psutil.Process()

    def sample(self) -> None:
        if not self.cuda:
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def peak_mb(self) -> float:
        import torch

        return (torch.cuda.max_memory_allocated(self.device) if self.cuda else self.peak) / 2**20


def _train(job: StageJob, progress: bool) -> dict:
    import warnings

    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    # peft calls a transformers method that transformers 5 has deprecated; nothing for a user to act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    from transformers import get_scheduler

    t_setup = time.time()
    hp = job.training
    acc = Accelerator(cpu=not torch.cuda.is_available())  # on CPU, torchrun-style env vars mean gloo DDP
    device, dtype_name = acc.device, job.model.dtype
    device_type = device.type
    world, rank = acc.num_processes, acc.process_index
    random.seed(job.seed)
    torch.manual_seed(job.seed)
    tok = load_tokenizer(job.model.name, job.model.chat_template)
    data, cut = prepare(tok, job.examples, hp.max_length, hp.truncation)
    if not data:
        raise SftmixError(
            f"stage {job.stage_id}: none of its {len(job.examples)} rows has an assistant answer within "
            f"training.max_length={hp.max_length} ({cut['rows_dropped_prompt_too_long']} prompts fill it, "
            f"{cut['rows_truncated']} answers cut with truncation={hp.truncation})"
        )
    model = _prepare_model(job, device, device_type)
    model.train()
    base = _base(model)
    if hasattr(base.config, "use_cache"):
        base.config.use_cache = False

    attn_before = getattr(base.config, "_attn_implementation", None)
    use_packing, attn = hp.packing, attn_before
    if use_packing:
        attn = packing.attention_for_packing(base, device_type)
        if attn != attn_before:
            packing.register()
            base.set_attn_implementation(attn)
            if base.config._attn_implementation != attn:  # a model outside transformers' attention interface
                use_packing, attn = False, attn_before
    keep_ok = _accepts_logits_to_keep(model)

    lr = learning_rate(hp, job.model.finetune)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=hp.weight_decay, fused=device_type == "cuda")
    model, opt = acc.prepare(model, opt)
    rng = random.Random(job.seed)
    steps_per_epoch = math.ceil(math.ceil(len(data) / hp.batch_size) / hp.grad_accum)
    total = hp.max_steps or max(1, math.ceil(steps_per_epoch * hp.epochs))
    sched = get_scheduler(hp.lr_scheduler, opt, num_warmup_steps=int(hp.warmup_ratio * total), num_training_steps=total)
    bf16 = device_type == "cuda" and torch.cuda.is_bf16_supported() and dtype_name != "float32"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    pad_id = tok.pad_token_id
    mem = _Memory(device_type, device)

    losses: list[float] = []
    real = processed = 0  # this rank's tokens: in examples, and in the tensors fed to the model (with padding)
    step = 0
    bar = None
    if progress and acc.is_main_process:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"train {job.stage_id[:8]}", unit="step", leave=False, disable=None)
    setup_seconds = time.time() - t_setup
    t0, cpu0 = time.time(), time.process_time()
    while step < total:
        batches = _batches(data, hp.batch_size, rng, by_length=not use_packing)
        for i in range(0, len(batches), hp.grad_accum):
            group = batches[i : i + hp.grad_accum]
            # Sum over tokens / tokens in the whole accumulated step (all ranks): every assistant token weighs the
            # same, whatever batch or process it fell in.
            n_label = sum(sum(lbl != IGNORE for lbl in x["labels"][1:]) for b in group for x in b)
            loss_sum = 0.0
            for j, b in enumerate(group):
                mine = b[rank::world]
                # A rank with no example in this batch still runs one (weighted 0) so DDP's collectives line up.
                rows, weight = (mine, 1.0) if mine else (b[:1], 0.0)
                batch = packing.pack(rows) if use_packing else packing.pad(rows, pad_id)
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                processed += batch["input_ids"].numel()
                real += int(weight) * sum(len(x["input_ids"]) for x in rows)
                sync = j == len(group) - 1
                with contextlib.nullcontext() if sync else acc.no_sync(model):
                    with autocast:
                        loss = _token_loss(model, batch, keep_ok) * (weight / max(n_label, 1))
                    mem.sample()
                    # DDP averages gradients over ranks; scaling by the world size makes that average a sum.
                    acc.backward(loss * world)
                loss_sum += loss.item()
            acc.clip_grad_norm_(model.parameters(), hp.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if world > 1:
                loss_sum = acc.reduce(torch.tensor(loss_sum, device=device), reduction="sum").item()
            losses.append(loss_sum)
            step += 1
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum:.3f}")
            if step >= total:
                break
    if bar:
        bar.close()
    seconds, cpu_seconds = time.time() - t0, time.process_time() - cpu0
    if world > 1:
        t = acc.reduce(torch.tensor([real, processed], device=device, dtype=torch.float64), reduction="sum")
        real, processed = (int(v) for v in t.tolist())
    peak = mem.peak_mb()
    if world > 1:
        peak = acc.reduce(torch.tensor(peak, device=device, dtype=torch.float64), reduction="max").item()
    window = max(1, len(losses) // 10)  # one step's loss is noisy; first and last tenth of the steps say more
    info = {
        "stage_id": job.stage_id, "steps": step, "examples": len(data), "train_tokens": real, "seconds": seconds,
        "tokens_per_second": real / max(seconds, 1e-9), "loss_first": _mean(losses[:window]),
        "loss_last": _mean(losses[-window:]), "loss": losses, "device": device_type,
        "tokens_processed": processed, "padding_efficiency": real / max(processed, 1),
        "peak_memory_mb": peak, "memory_measure": "cuda_max_allocated" if device_type == "cuda" else "rss",
        "setup_seconds": setup_seconds, "cpu_seconds": cpu_seconds,  # CPU time of this process, all its threads
        "world_size": world, "packing": use_packing, "attention": attn,
        "learning_rate": lr, "finetune": job.model.finetune, "trainer_version": TRAINER_VERSION,
        "precision": _precision(job.model.finetune, device_type, bf16),
        **cut,
    }
    if use_packing and attn != attn_before:  # the saved config must not name an implementation only we register
        base.set_attn_implementation(attn_before)
    acc.wait_for_everyone()
    state = None
    if acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        state = acc.get_state_dict(model)  # a collective: every rank takes part
    if acc.is_main_process:
        _save(acc.unwrap_model(model), job, info, state)
    acc.wait_for_everyone()
    return stage_done(job.out_dir) or info


def _precision(finetune: str, device_type: str, bf16: bool) -> str:
    if not bf16:
        return "fp32"
    if finetune == "full":
        return "fp32 master weights, bf16 autocast"
    return f"{'nf4' if finetune == 'qlora' else 'bf16'} frozen base, fp32 adapter, bf16 autocast"


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save(model, job: StageJob, info: dict, state_dict=None) -> None:
    out = Path(job.out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        kw = {"state_dict": state_dict} if state_dict is not None else {}
        if job.model.finetune == "full":
            model.save_pretrained(tmp / "model", safe_serialization=True, **kw)
        else:
            model.save_pretrained(tmp / "adapter", **kw)
        with open(tmp / "stage.json", "w") as f:
            f.write(json.dumps(info))
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        crash_point("stage_save")  # everything written, not yet moved into place
        if stage_done(out) is not None:  # another process finished the same stage meanwhile: theirs stands
            return
        if out.exists():  # an unfinished earlier attempt without stage.json
            shutil.rmtree(out)
        try:
            os.replace(tmp, out)
        except OSError:  # another process renamed its finished stage into place first
            if stage_done(out) is None:
                raise
        _fsync_dir(out.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def stage_done(out_dir: str | Path) -> dict | None:
    """The finished stage's info, or None. A stage.json that is empty or cut short (a power loss before the
    filesystem flushed it) is not finished: the stage is trained again rather than stopping resume."""
    f = Path(out_dir) / "stage.json"
    try:
        info = json.loads(f.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return info if isinstance(info, dict) and "stage_id" in info else None


if __name__ == "__main__":  # one rank of `accelerate launch -m sftmix.train.trainer JOB.pkl` (see _launch)
    from sftmix.train.trainer import train_stage as _run

    _run(pickle.loads(Path(sys.argv[1]).read_bytes()), progress=True)
