"""Generation throughput: sftmix's engine against plain HF `model.generate` in fixed batches, in one run.

The quickstart's evaluation prompts (built-in tasks math, code and general at difficulty 1, 40 items each, each with
its own max_new_tokens: 96, 160, 128) on SmolLM2-135M-Instruct, greedy. The engine runs as a study runs it: the
three tasks' prompts in one run (`generate_many`), 128 sequences at once (the quickstart's evaluation.batch_size).
HF runs task by task at the quickstart's batch size before the engine (32) and at a few others, to find its best.

Reported per run: wall and CPU seconds, generated tokens per second (each sequence's tokens up to and including its
stop token), the ratio to HF at the default and at its best batch size, and machine-independent figures: tokens
generated, forward passes, decode steps, tokens per decode step, and the padding fraction (computed row-positions
that produce nothing: left padding, plus decode rows of sequences that had already finished). Greedy outputs are
compared item by item with HF at the default batch size (and HF's own runs with each other, for scale).

    .venv/bin/python bench/generate.py                      # the full comparison (tens of minutes on 2 cores)
    .venv/bin/python bench/generate.py --rounds 3           # each configuration 3 times, alternating; medians
    .venv/bin/python bench/generate.py --limit 4 --hf 32    # a quick check that it runs
    .venv/bin/python bench/generate.py --model tiny         # the tiny built-in model (seconds)
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from sftmix.evaluate.generate import generate, generate_many
from sftmix.evaluate.settings import GenSettings
from sftmix.evaluate.tasks import make_task
from sftmix.models import load_model, load_tokenizer

TASKS = ("math", "code", "general")


def load_tasks(limit: int):
    out = []
    for name in TASKS:
        t = make_task(name, limit=limit, difficulty=1)
        out.append((name, [e.prompt_messages for e in t.items], GenSettings(max_new_tokens=t.gen.max_new_tokens)))
    return out


def run(model, tok, tasks, backend: str, batch_size: int) -> dict:
    total = {"seconds": 0.0, "cpu": 0.0, "outputs": {}}
    for name, convs, settings in tasks:
        st: dict = {}
        w, c = time.perf_counter(), time.process_time()
        outs = generate(model, tok, convs, settings, batch_size=batch_size, progress=False, backend=backend, stats=st)
        total["seconds"] += time.perf_counter() - w
        total["cpu"] += time.process_time() - c
        total["outputs"][name] = [o[0] for o in outs]
        for k in ("generated_tokens", "forwards", "decode_steps", "decode_rows", "prefill_tokens", "prefill_padding"):
            total[k] = total.get(k, 0) + st.get(k, 0)
        wasted = st.get("padding_fraction", 0.0) * (st["prefill_tokens"] + st["prefill_padding"] + st["decode_rows"])
        total["wasted"] = total.get("wasted", 0.0) + wasted
    computed = total["prefill_tokens"] + total["prefill_padding"] + total["decode_rows"]
    total["padding_fraction"] = total["wasted"] / max(computed, 1)
    total["tok_s"] = total["generated_tokens"] / total["seconds"]
    total["tok_cpu_s"] = total["generated_tokens"] / max(total["cpu"], 1e-9)
    return total


def run_together(model, tok, tasks, batch_size: int) -> dict:
    """The three tasks in one engine run, as a study evaluates a checkpoint (study/steps.evaluate_checkpoint)."""
    st: dict = {}
    w, c = time.perf_counter(), time.process_time()
    outs = generate_many(model, tok, [(convs, settings) for _, convs, settings in tasks], batch_size, progress=False,
                         stats=st)
    total = {"seconds": time.perf_counter() - w, "cpu": time.process_time() - c,
             "outputs": {name: [o[0] for o in out] for (name, _, _), out in zip(tasks, outs)}}
    for k in ("generated_tokens", "forwards", "decode_steps", "decode_rows", "prefill_tokens", "prefill_padding"):
        total[k] = st.get(k, 0)
    total["padding_fraction"] = st.get("padding_fraction", 0.0)
    total["tok_s"] = total["generated_tokens"] / total["seconds"]
    total["tok_cpu_s"] = total["generated_tokens"] / max(total["cpu"], 1e-9)
    return total


def mismatches(a: dict, b: dict) -> int:
    return sum(x != y for name in a["outputs"] for x, y in zip(a["outputs"][name], b["outputs"][name]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--limit", type=int, default=40, help="items per task")
    ap.add_argument("--batch-size", type=int, default=128, help="the engine's slots (the quickstart's evaluation.batch_size)")
    ap.add_argument("--hf", default="32,16,64", help="HF batch sizes to try (the first is the quickstart's before the engine)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--per-task", action="store_true", help="also run the engine on one task at a time")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every configuration this many times, in alternation, and report each one's median "
                         "(a shared or throttled machine drifts over minutes; alternation spreads the drift)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model, device="cpu"), load_tokenizer(args.model)
    tasks = load_tasks(args.limit)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.model}, {sum(len(c) for _, c, _ in tasks)} prompts, {args.threads} threads, load {load:.1f}",
          flush=True)

    # Warm-up: first calls pay one-time costs (thread pools, kernels, the chat template's compilation).
    warm = [tasks[0][1][:2], GenSettings(max_new_tokens=4)]
    for backend in ("engine", "hf"):
        generate(model, tok, *warm, progress=False, backend=backend)

    def show(label: str, r: dict):
        print(f"{label:>16}: {r['seconds']:7.1f} s wall {r['cpu']:7.1f} s CPU  {r['generated_tokens']:6d} tok "
              f"{r['tok_s']:6.1f} tok/s  fwd {r['forwards']:5d}  steps {r['decode_steps']:5d}  "
              f"tok/step {r['decode_rows'] / max(r['decode_steps'], 1):5.1f}  padding {r['padding_fraction']:.3f}",
              flush=True)

    configs = [("engine", lambda: run_together(model, tok, tasks, args.batch_size))]
    if args.per_task:
        configs.append(("engine, per task", lambda: run(model, tok, tasks, "engine", args.batch_size)))
    sizes = [int(s) for s in args.hf.split(",") if s]
    configs += [(f"hf@{bs}", lambda bs=bs: run(model, tok, tasks, "hf", bs)) for bs in sizes]
    rounds: dict[str, list[dict]] = {label: [] for label, _ in configs}
    for i in range(args.rounds):
        for label, fn in configs:
            rounds[label].append(fn())
            show(f"{label}" if args.rounds == 1 else f"{label} #{i + 1}", rounds[label][-1])
    # Each configuration's median round by wall time (its outputs and counts are the same in every round).
    runs = {label: sorted(rs, key=lambda r: r["seconds"])[len(rs) // 2] for label, rs in rounds.items()}
    if args.rounds > 1:
        print()
        for label, r in runs.items():
            show(f"{label} median", r)
        e_all, d_all = rounds["engine"], rounds[f"hf@{sizes[0]}"]
        print("engine / hf@%d per round: %s" % (sizes[0], ", ".join(
            f"{d['seconds'] / e['seconds']:.2f}x" for e, d in zip(e_all, d_all))))
        changed = [label for label, rs in rounds.items() if any(r["outputs"] != rs[0]["outputs"] for r in rs)]
        print("outputs the same in every round:", "yes" if not changed else "NO: " + ", ".join(changed))

    default = runs[f"hf@{sizes[0]}"]
    best_label = max((k for k in runs if k.startswith("hf@")), key=lambda k: runs[k]["tok_s"])
    best = runs[best_label]
    e = runs["engine"]
    n = sum(len(c) for _, c, _ in tasks)
    print()
    print(f"engine / hf@{sizes[0]} (default): {e['tok_s'] / default['tok_s']:.2f}x wall, "
          f"{e['tok_cpu_s'] / default['tok_cpu_s']:.2f}x CPU")
    print(f"engine / {best_label} (HF's best): {e['tok_s'] / best['tok_s']:.2f}x wall, "
          f"{e['tok_cpu_s'] / best['tok_cpu_s']:.2f}x CPU")
    print(f"greedy outputs differing from hf@{sizes[0]}: " + ", ".join(
        f"{k} {mismatches(r, default)}/{n}" for k, r in runs.items() if k != f"hf@{sizes[0]}"))
    print()
    print("| run | wall s | CPU s | tokens | tok/s | x hf default | forwards | decode steps | tok/step | padding |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k, r in runs.items():
        print(f"| {k} | {r['seconds']:.0f} | {r['cpu']:.0f} | {r['generated_tokens']} | {r['tok_s']:.1f} | "
              f"{r['tok_s'] / default['tok_s']:.2f} | {r['forwards']} | {r['decode_steps']} | "
              f"{r['decode_rows'] / max(r['decode_steps'], 1):.1f} | {r['padding_fraction']:.3f} |")


if __name__ == "__main__":
    main()
