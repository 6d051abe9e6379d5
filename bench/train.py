"""Training throughput: sftmix's loop against plain `transformers.Trainer` on the same stage.

Same model, same encoded rows (the built-in math/code/general train splits, difficulty 1, truncation "drop"), same
batch, steps, learning rate and schedule. Three runs per case:

- sftmix: `train_stage` as a study runs it (packing on: one row per micro-batch, varlen attention);
- Trainer, padded: a collator that pads each batch as it comes from Trainer's sampler;
- Trainer, best: `DataCollatorWithFlattening` (padding-free; transformers 5 has no `group_by_length` any more).

Reported per run: real (non-pad) tokens per second of training, padding efficiency (real tokens / tokens fed to the
model), and the loss per assistant token on the same held-out rows (the built-in eval splits) after training.

    python bench/train.py                 # tiny full fine-tuning + SmolLM2-135M LoRA (minutes on 2 CPU cores)
    python bench/train.py --quick         # tiny only, a small set: checks the script runs
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from sftmix.config import ModelConfig, TrainingConfig
from sftmix.data.builtin import generate
from sftmix.models import load_model, load_tokenizer
from sftmix.train import packing
from sftmix.train.tokenize import prepare
from sftmix.train.trainer import StageJob, _token_loss, train_stage

SOURCES = ("math", "code", "general")


def rows(split: str, per_source: int):
    return [e for s in SOURCES for e in generate(s, split, per_source, seed=0, difficulty=1)]


def heldout_loss(model, tok, data: list[dict], batch: int = 8) -> float:
    """Mean cross-entropy per trained (assistant) token over held-out rows; padded batches, standard attention."""
    model.eval()
    total = n = 0.0
    with torch.no_grad():
        for i in range(0, len(data), batch):
            b = packing.pad(data[i : i + batch], tok.pad_token_id)
            n += int((b["targets"] != -100).sum())
            total += _token_loss(model, b, keep_ok=False).item()
    return total / n


class Counting:
    """Wraps a collator and counts real vs processed tokens of what Trainer feeds the model."""

    def __init__(self, collate):
        self.collate, self.real, self.processed = collate, 0, 0

    def __call__(self, features):
        out = self.collate(features)
        self.real += sum(len(f["input_ids"]) for f in features)
        self.processed += out["input_ids"].numel()
        return out


def pad_collate(pad_id: int):
    def collate(features):
        n = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), n), pad_id)
        labels = torch.full((len(features), n), -100)
        mask = torch.zeros((len(features), n), dtype=torch.long)
        for i, f in enumerate(features):
            k = len(f["input_ids"])
            ids[i, :k], labels[i, :k], mask[i, :k] = torch.tensor(f["input_ids"]), torch.tensor(f["labels"]), 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return collate


def fresh_model(m: ModelConfig, seed: int):
    torch.manual_seed(seed)
    model = load_model(m.name, "float32", "cpu")
    if m.finetune == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=m.lora.r, lora_alpha=m.lora.alpha, lora_dropout=m.lora.dropout,
                                                 target_modules=m.lora.target_modules, task_type="CAUSAL_LM"))
    return model


def run_trainer(m: ModelConfig, hp: TrainingConfig, data: list[dict], steps: int, collate, work: Path):
    from transformers import Trainer, TrainingArguments

    model = fresh_model(m, 0)
    model.config.use_cache = False
    counting = Counting(collate)
    args = TrainingArguments(
        output_dir=str(work), per_device_train_batch_size=hp.batch_size, max_steps=steps,
        learning_rate=hp.learning_rate,
        lr_scheduler_type=hp.lr_scheduler, warmup_steps=int(hp.warmup_ratio * steps), weight_decay=hp.weight_decay,
        max_grad_norm=hp.max_grad_norm, save_strategy="no", report_to=[], use_cpu=True, seed=0, logging_steps=10**6,
        disable_tqdm=True, remove_unused_columns=False, dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=counting)
    t0, cpu0 = time.time(), time.process_time()
    trainer.train()
    seconds, cpu = time.time() - t0, time.process_time() - cpu0
    return model, {"seconds": seconds, "cpu_seconds": cpu, "tokens_per_second": counting.real / seconds,
                   "tokens_per_cpu_second": counting.real / cpu,
                   "padding_efficiency": counting.real / counting.processed, "train_tokens": counting.real}


def run_sftmix(m: ModelConfig, hp: TrainingConfig, train_rows, work: Path):
    info = train_stage(StageJob("bench", m, train_rows, hp, 0, None, str(work / "stage")), progress=False)
    if m.finetune == "full":
        model = load_model(m.name, "float32", "cpu", weights=work / "stage" / "model")
    else:
        model = load_model(m.name, "float32", "cpu", adapter=work / "stage" / "adapter")
    return model, info


def case(name: str, m: ModelConfig, hp: TrainingConfig, per_source: int, heldout_per_source: int) -> list[dict]:
    from transformers import DataCollatorWithFlattening

    tok = load_tokenizer(m.name, m.chat_template)
    train_rows = rows("train", per_source)
    data, cut = prepare(tok, train_rows, hp.max_length, hp.truncation)
    held, _ = prepare(tok, rows("eval", heldout_per_source), hp.max_length, "keep")
    steps = -(-len(data) // hp.batch_size)
    hp = hp.model_copy(update={"max_steps": steps})
    n_tokens = sum(len(x["input_ids"]) for x in data)
    print(f"\n## {name}: {len(data)} rows ({cut['rows_dropped']} dropped), {n_tokens} tokens, batch {hp.batch_size}, "
          f"{steps} steps; held-out {len(held)} rows", flush=True)
    out = []
    with tempfile.TemporaryDirectory() as d:
        model, info = run_sftmix(m, hp, train_rows, Path(d) / "sftmix")
        keys = ("seconds", "cpu_seconds", "tokens_per_second", "padding_efficiency", "train_tokens")
        out.append({"run": "sftmix (packed)", **{k: info[k] for k in keys},
                    "tokens_per_cpu_second": info["train_tokens"] / info["cpu_seconds"],
                    "heldout_loss": heldout_loss(model, tok, held)})
        print(out[-1], flush=True)
        for label, collate in (("Trainer, padded", pad_collate(tok.pad_token_id)),
                               ("Trainer, DataCollatorWithFlattening", DataCollatorWithFlattening())):
            model, r = run_trainer(m, hp, data, steps, collate, Path(d) / label.split(",")[1].strip())
            out.append({"run": label, **r, "heldout_loss": heldout_loss(model, tok, held)})
            print(out[-1], flush=True)
    padded, best, ours = out[1], out[2], out[0]
    print(f"\n| {name} | tok/s (wall) | tok per CPU-s | padding eff. | held-out loss |\n|---|---|---|---|---|")
    for r in out:
        print(f"| {r['run']} | {r['tokens_per_second']:.0f} | {r['tokens_per_cpu_second']:.0f} | "
              f"{r['padding_efficiency']:.3f} | {r['heldout_loss']:.4f} |")
    for unit in ("tokens_per_second", "tokens_per_cpu_second"):
        print(f"{unit}: sftmix / padded Trainer {ours[unit] / padded[unit]:.2f}x (target >= 1.5x), "
              f"/ best Trainer {ours[unit] / best[unit]:.2f}x (target >= 1.1x)")
    print(f"held-out loss vs padded Trainer {ours['heldout_loss'] / padded['heldout_loss'] - 1:+.1%}, "
          f"vs best {ours['heldout_loss'] / best['heldout_loss'] - 1:+.1%} (target within 3%)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny only, 16 rows per source")
    ap.add_argument("--case", choices=("all", "tiny", "smollm2"), default="all")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    tiny = ModelConfig(name="tiny", finetune="full")
    hp = TrainingConfig(epochs=1, learning_rate=1e-3, batch_size=8, max_length=512)
    if args.case in ("all", "tiny"):
        n, held = (16, 8) if args.quick else (256, 32)
        results["tiny full"] = case("tiny, full fine-tuning", tiny, hp, n, held)
    if not args.quick and args.case in ("all", "smollm2"):
        smol = ModelConfig(name="smollm2-135m-instruct", finetune="lora")
        results["smollm2 lora"] = case("SmolLM2-135M-Instruct, LoRA r16", smol, hp, 32, 16)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
