"""One stage of fine-tuning: a plain PyTorch loop over a transformers model (optionally wrapped by PEFT LoRA).

A plain loop keeps every step visible (torchtune-style): seeded shuffling, padded batches sorted into length buckets,
AdamW, warmup + schedule from transformers, gradient clipping. The result is written atomically into the stage's
directory (LoRA adapter or full weights) with a `stage.json` that the store trusts only once it exists.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..data.example import Example
from ..models import default_device, load_model, load_tokenizer
from .tokenize import IGNORE, encode


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


def _batches(data: list[dict], batch_size: int, rng: random.Random) -> list[list[dict]]:
    # Shuffle, then sort within windows of 32 batches so padding stays small but order stays random across windows.
    idx = list(range(len(data)))
    rng.shuffle(idx)
    window = batch_size * 32
    batches = []
    for w in range(0, len(idx), window):
        chunk = sorted(idx[w : w + window], key=lambda i: len(data[i]["input_ids"]))
        batches.extend([data[i] for i in chunk[b : b + batch_size]] for b in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def _collate(batch: list[dict], pad_id: int, device: str):
    import torch

    n = max(len(x["input_ids"]) for x in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, x in enumerate(batch):
        k = len(x["input_ids"])
        ids[i, :k] = torch.tensor(x["input_ids"])
        labels[i, :k] = torch.tensor(x["labels"])
        mask[i, :k] = 1
    return ids.to(device), labels.to(device), mask.to(device)


def _prepare_model(job: StageJob, device: str):
    m = job.model
    parent = Path(job.parent_dir) if job.parent_dir else None
    if m.finetune == "full":
        weights = parent / "model" if parent else None
        model = load_model(m.name, m.dtype, device, weights=weights)
        return model
    if parent:  # continue training the parent's adapter: one adapter carries the whole curriculum
        return load_model(m.name, m.dtype, device, adapter=parent / "adapter", trainable=True)
    from peft import LoraConfig, get_peft_model

    base = load_model(m.name, m.dtype, device)
    cfg = LoraConfig(
        r=m.lora.r, lora_alpha=m.lora.alpha, lora_dropout=m.lora.dropout, target_modules=m.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, cfg)


def train_stage(job: StageJob, progress: bool = True) -> dict:
    import warnings

    import torch

    # peft calls a transformers method that transformers 5 has deprecated; nothing for a user to act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    from transformers import get_scheduler

    hp = job.training
    device = default_device()
    random.seed(job.seed)
    torch.manual_seed(job.seed)
    tok = load_tokenizer(job.model.name, job.model.chat_template)
    data = [encode(tok, e, hp.max_length) for e in job.examples]
    data = [d for d in data if any(lbl != IGNORE for lbl in d["labels"])]
    if not data:
        raise ValueError(f"stage {job.stage_id}: no example has assistant tokens within max_length={hp.max_length}")
    model = _prepare_model(job, device)
    model.train()
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    rng = random.Random(job.seed)
    steps_per_epoch = math.ceil(math.ceil(len(data) / hp.batch_size) / hp.grad_accum)
    total = hp.max_steps or max(1, math.ceil(steps_per_epoch * hp.epochs))
    sched = get_scheduler(hp.lr_scheduler, opt, num_warmup_steps=int(hp.warmup_ratio * total), num_training_steps=total)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    pad = tok.pad_token_id

    losses: list[float] = []
    tokens = 0
    step = 0
    t0 = time.time()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"train {job.stage_id[:8]}", unit="step", leave=False, disable=None)
    while step < total:
        batches = _batches(data, hp.batch_size, rng)
        for i in range(0, len(batches), hp.grad_accum):
            group = batches[i : i + hp.grad_accum]
            n_label = sum(sum(lbl != IGNORE for lbl in x["labels"][1:]) for b in group for x in b)
            loss_sum = 0.0
            for b in group:
                ids, labels, mask = _collate(b, pad, device)
                with autocast:
                    logits = model(input_ids=ids, attention_mask=mask).logits
                # Sum over tokens / tokens in the whole accumulated step: every assistant token weighs the same,
                # whatever batch it fell in.
                loss = torch.nn.functional.cross_entropy(
                    logits[:, :-1].float().reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                    ignore_index=IGNORE, reduction="sum",
                ) / max(n_label, 1)
                loss.backward()
                loss_sum += loss.item()
                tokens += int(mask.sum())
            torch.nn.utils.clip_grad_norm_(params, hp.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss_sum)
            step += 1
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum:.3f}")
            if step >= total:
                break
    if bar:
        bar.close()
    seconds = time.time() - t0
    window = max(1, len(losses) // 10)  # one step's loss is noisy; first and last tenth of the steps say more
    info = {
        "stage_id": job.stage_id, "steps": step, "examples": len(data), "train_tokens": tokens, "seconds": seconds,
        "tokens_per_second": tokens / max(seconds, 1e-9), "loss_first": _mean(losses[:window]),
        "loss_last": _mean(losses[-window:]),
        "loss": losses, "device": device,
    }
    _save(model, job, info)
    return info


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _save(model, job: StageJob, info: dict) -> None:
    out = Path(job.out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        if job.model.finetune == "full":
            model.save_pretrained(tmp / "model", safe_serialization=True)
        else:
            model.save_pretrained(tmp / "adapter")
        (tmp / "stage.json").write_text(json.dumps(info))
        if out.exists():  # an unfinished earlier attempt without stage.json
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def stage_done(out_dir: str | Path) -> dict | None:
    f = Path(out_dir) / "stage.json"
    return json.loads(f.read_text()) if f.exists() else None
