"""Compose a million rows: sftmix's lean path beside a plain pandas pipeline doing the same work.

    .venv/bin/python bench/compose.py                  # 1M rows over 3 sources, 10K eval items
    .venv/bin/python bench/compose.py --rows 30000     # a quick check

Generates JSONL sources in three formats (gsm8k, alpaca, sharegpt multi-turn) with planted exact duplicates (within
and across sources) and planted contamination (eval questions inside training prompts), then runs each pipeline in
its own process: read every row, drop rows sharing a 13-gram with any eval item, drop exact duplicates (normalised
text, first occurrence kept in source order) and write the kept rows as train-ready messages JSONL. Each pipeline is
started by a separate measuring process that reads getrusage(RUSAGE_CHILDREN) for CPU time and samples the summed PSS
of the pipeline's process tree, so the peak of one never mixes with the other's. sftmix scans the sources side by
side on all cores (`--workers`); pandas has no such mode and uses one. Both must keep the same rows; the script checks that.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCES = {"math": "gsm8k", "code": "alpaca", "general": "sharegpt"}
NGRAM = 13
WORKERS = 1  # sftmix's scan processes (set from --workers); pandas has one core however many there are


# ------------------------------------------------------------------------------------------------- generation


def _vocab(rng: random.Random, n: int = 8000) -> list[str]:
    syll = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "pe", "da", "gu", "zo", "an", "el", "or"]
    words = set()
    while len(words) < n:
        words.add("".join(rng.choice(syll) for _ in range(rng.randint(1, 4))))
    return sorted(words)


def generate(root: Path, rows: int, evals: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    vocab = _vocab(rng)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choices(vocab, k=rng.randint(lo, hi)))

    questions = [text(25, 45) + "?" for _ in range(evals)]
    with (root / "eval.jsonl").open("w") as f:
        for q in questions:
            f.write(json.dumps({"question": q, "answer": f"#### {rng.randint(1, 999)}"}) + "\n")

    planted = {"duplicates": 0, "contaminated": 0}
    sizes = [rows // len(SOURCES) + (k < rows % len(SOURCES)) for k in range(len(SOURCES))]
    pool: list[tuple[str, str]] = []  # (user, assistant) pairs already written, for cross-source duplicates
    for (name, fmt), size in zip(SOURCES.items(), sizes):
        with (root / f"{name}.jsonl").open("w") as f:
            for i in range(size):
                roll = rng.random()
                if roll < 0.03 and pool:
                    user, answer = rng.choice(pool)
                    planted["duplicates"] += 1
                else:
                    user, answer = text(15, 40), text(10, 40)
                    if fmt == "gsm8k":
                        answer += f"\n#### {i % 997}"
                    if roll < 0.035:
                        # A training prompt that quotes an eval question: contamination to be found.
                        user = f"{text(3, 6)} {rng.choice(questions)} {text(2, 5)}"
                        planted["contaminated"] += 1
                    if len(pool) < 50000:
                        pool.append((user, answer))
                if fmt == "gsm8k":
                    row = {"question": user, "answer": answer}
                elif fmt == "alpaca":
                    row = {"instruction": user, "input": "", "output": answer}
                else:
                    row = {"conversations": [{"from": "human", "value": user}, {"from": "gpt", "value": answer}]}
                    if i % 3 == 0:  # some multi-turn rows
                        row["conversations"] += [{"from": "human", "value": text(5, 15)},
                                                 {"from": "gpt", "value": text(5, 20)}]
                f.write(json.dumps(row) + "\n")
    return {"rows": sum(sizes), "eval": evals, "planted": planted,
            "bytes": sum((root / f"{n}.jsonl").stat().st_size for n in SOURCES)}


# ------------------------------------------------------------------------------------------------- the two pipelines


def run_sftmix(root: Path, out: Path) -> dict:
    from sftmix.data.dedup import DecontamConfig, EvalIndex, dedup_indexes, export_rows, scan_files
    from sftmix.data.formats import iter_examples

    index = EvalIndex.build({"eval": iter_examples(root / "eval.jsonl", source="eval")}, DecontamConfig(ngram=NGRAM))
    # One pass per source (bad rows, keys, n-gram check, each row's train-ready line spilled for the export), the
    # sources side by side on the machine's cores.
    jobs = [dict(source=name, path=root / f"{name}.jsonl", on_error="skip", spill=out / f".{name}.spill")
            for name in SOURCES]
    indexes = [scan.index for scan in scan_files(jobs, index, workers=WORKERS)]
    dups = dedup_indexes(indexes)
    kept = {}
    for ix in indexes:
        rows = ix.kept_rows()
        export_rows([(ix, rows)], out / f"{ix.source}.jsonl")
        kept[ix.source] = len(rows)
    return {"kept": kept, "contaminated": sum(len(ix.removed) for ix in indexes), "duplicates": len(dups)}


_PUNCT = r"[^\w\s]|_"


def run_pandas(root: Path, out: Path) -> dict:
    import hashlib

    import pandas as pd

    punct = re.compile(_PUNCT)

    def norm_words(t: str) -> list[str]:
        return punct.sub(" ", t.lower()).split()

    ev = pd.read_json(root / "eval.jsonl", lines=True)
    grams = set()
    for t in "user: " + ev["question"] + "\nassistant: " + ev["answer"]:
        w = norm_words(t)
        grams.update(" ".join(w[i:i + NGRAM]) for i in range(len(w) - NGRAM + 1))

    frames = []
    for name, fmt in SOURCES.items():
        df = pd.read_json(root / f"{name}.jsonl", lines=True)
        if fmt == "gsm8k":
            msgs = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}]
                    for q, a in zip(df["question"], df["answer"])]
        elif fmt == "alpaca":
            msgs = [[{"role": "user", "content": "\n\n".join(p for p in (i, x) if p.strip())},
                     {"role": "assistant", "content": o}] for i, x, o in zip(df["instruction"], df["input"], df["output"])]
        else:
            roles = {"human": "user", "gpt": "assistant"}
            msgs = [[{"role": roles[t["from"]], "content": t["value"]} for t in c] for c in df["conversations"]]
        frames.append(pd.DataFrame({"source": name, "row": range(len(df)), "messages": msgs}))
    df = pd.concat(frames, ignore_index=True)
    del frames
    # The same text sftmix compares: "role: content" lines, lowercased, punctuation as spaces.
    tagged = pd.Series(["\n".join(f"{m['role']}: {m['content']}" for m in ms) for ms in df["messages"]])
    words = tagged.str.lower().str.replace(_PUNCT, " ", regex=True).str.split()
    del tagged
    df["key"] = words.str.join(" ").map(lambda t: hashlib.blake2b(t.encode(), digest_size=8).digest())
    contaminated = words.map(lambda w: any(" ".join(w[i:i + NGRAM]) in grams for i in range(len(w) - NGRAM + 1)))
    del words
    n_contam = int(contaminated.sum())
    df = df[~contaminated.to_numpy()]
    before = len(df)
    df = df.drop_duplicates("key", keep="first")
    kept = {}
    for name in SOURCES:
        part = df[df["source"] == name]
        part[["messages"]].to_json(out / f"{name}.jsonl", orient="records", lines=True, force_ascii=False)
        kept[name] = len(part)
    return {"kept": kept, "contaminated": n_contam, "duplicates": before - len(df)}


# ------------------------------------------------------------------------------------------------- measuring


def worker(kind: str, root: Path) -> None:
    out = root / f"out-{kind}"
    out.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    result = (run_sftmix if kind == "sftmix" else run_pandas)(root, out)
    result["work_s"] = time.perf_counter() - t0
    print(json.dumps(result))


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    for p in [proc] + proc.children(recursive=True):
        try:
            total += p.memory_full_info().pss  # forked workers share pages with their parent: count each once
        except psutil.Error:  # a process that just ended
            pass
    return total


def measure(kind: str, root: Path, workers: int) -> None:
    """The worker (and the processes it forks) are this process's only children, so RUSAGE_CHILDREN is their CPU
    time alone. Memory: the largest sum of PSS (shared pages split between the processes sharing them) over the
    worker's process tree, sampled every 20 ms, and ru_maxrss (the largest single process) as a floor for what
    sampling might miss."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--worker", kind, str(root), "--workers", str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(ps))
        time.sleep(0.02)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{kind} worker failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds as well as wall: on a shared machine they say more about the work than the wall clock does.
    result.update(wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime,
                  peak_rss_mb=max(peak, usage.ru_maxrss * 1024) / 2**20)
    print(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--eval", type=int, default=10_000)
    p.add_argument("--only", choices=["sftmix", "pandas"], help="run one pipeline (no comparison)")
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--workers", type=int, default=None, help="processes for sftmix's scan (default: all cores)")
    p.add_argument("--worker", nargs=2, metavar=("KIND", "DIR"), help=argparse.SUPPRESS)
    p.add_argument("--measure", nargs=2, metavar=("KIND", "DIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    global WORKERS
    WORKERS = args.workers or os.cpu_count() or 1
    if args.worker:
        return worker(args.worker[0], Path(args.worker[1]))
    if args.measure:
        return measure(args.measure[0], Path(args.measure[1]), WORKERS)

    with tempfile.TemporaryDirectory(prefix="sftmix-compose-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        data = generate(root, args.rows, args.eval)
        print(f"generated {data['rows']:,} rows ({data['bytes'] / 2**20:.0f} MiB JSONL) over {len(SOURCES)} sources, "
              f"{data['eval']:,} eval items, planted {data['planted']} in {time.perf_counter() - t0:.0f}s")
        results = {}
        for kind in [args.only] if args.only else ["sftmix", "pandas"]:
            proc = subprocess.run([sys.executable, __file__, "--measure", kind, str(root), "--workers", str(WORKERS)],
                                  capture_output=True, text=True)
            if proc.returncode:
                sys.exit(proc.stderr or proc.stdout)
            results[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
        same = len(results) == 1 or results["sftmix"]["kept"] == results["pandas"]["kept"]
        print(f"{'pipeline':<8} {'wall s':>7} {'cpu s':>7} {'rows/s':>9} {'peak RSS MiB':>13} {'contam':>7} "
              f"{'dups':>7} kept")
        for kind, r in results.items():
            r["rows_per_s"] = data["rows"] / r["wall_s"]
            print(f"{kind:<8} {r['wall_s']:>7.1f} {r['cpu_s']:>7.1f} {r['rows_per_s']:>9,.0f} {r['peak_rss_mb']:>13,.0f} "
                  f"{r['contaminated']:>7,} {r['duplicates']:>7,} {sum(r['kept'].values()):,}")
        if len(results) == 2:
            s, pd_ = results["sftmix"], results["pandas"]
            print(f"sftmix / pandas: wall {s['wall_s'] / pd_['wall_s']:.2f}x, cpu {s['cpu_s'] / pd_['cpu_s']:.2f}x, "
                  f"peak RSS {s['peak_rss_mb'] / pd_['peak_rss_mb']:.2f}x; same rows kept: {same}")
        if "sftmix" in results:
            s = results["sftmix"]
            ok = s["wall_s"] <= 60 and s["peak_rss_mb"] <= 2048
            print(f"target (<= 60 s and <= 2 GiB for sftmix): {'met' if ok else 'NOT met'}")
        if args.json:
            Path(args.json).write_text(json.dumps({"data": data, "results": results, "same_rows": same}, indent=1))
        if not same:
            sys.exit("the two pipelines kept different rows")


if __name__ == "__main__":
    main()
