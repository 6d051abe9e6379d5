"""`sftmix` command line: run, plan, eval, report, data.

Bad input (SftmixError) prints one message and exits 2, with no traceback; Ctrl-C exits 130 and the study resumes
on the next `sftmix run`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib.resources import files
from pathlib import Path

from .errors import SftmixError

QUICKSTART = "quickstart"


def builtin_study(name: str) -> Path:
    return Path(str(files("sftmix") / "studies" / f"{name}.yaml"))


def _split_args(args: list[str]) -> tuple[str | None, list[str]]:
    study = None
    overrides = []
    for a in args:
        if "=" in a and not Path(a).exists():
            overrides.append(a)
        elif study is None:
            study = a
        else:
            raise SftmixError(f"unexpected argument {a!r}: give one study file, then key=value overrides")
    return study, overrides


def _load(args) -> "object":
    from .config import load_study

    study, overrides = _split_args(args.study)
    if study is None:
        study = str(builtin_study(QUICKSTART))
    elif not Path(study).exists() and builtin_study(study).exists():
        study = str(builtin_study(study))
    if getattr(args, "out", None):
        overrides.append(f"output_dir={args.out}")
    return load_study(study, overrides)


def cmd_run(args) -> int:
    from .config import output_dir
    from .study.runner import run_study

    sf = _load(args)
    report = run_study(sf, output_dir(sf), progress=not args.no_progress)
    print(f"report: {report}")
    return 0


def cmd_plan(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from .study.plan import make_plan
    from .study.summary import plan_summary

    sf = _load(args)
    plan = make_plan(sf)
    summary = plan_summary(sf, plan)
    console = Console()
    table = Table(title=f"{sf.study.name}: {len(plan.runs)} runs")
    for col in ("run", "model", "stages", "rows", "train tokens"):
        table.add_column(col, justify="right" if col in ("stages", "rows", "train tokens") else "left")
    for r in summary["runs"]:
        table.add_row(r["label"], r["model"], str(r["stages"]), str(r["rows"]), f"{r['tokens']:,}")
    console.print(table)
    t = summary["totals"]
    console.print(
        f"unique stages: {t['unique_stages']} of {t['stage_uses']} used (saved by shared prefixes: {t['saved_stages']})\n"
        f"training tokens: {t['train_tokens']:,} ({t['saved_tokens']:,} saved by shared prefixes), "
        f"about {t['flops']:.2e} FLOPs (6 x params x tokens)\n"
        f"evaluations: {t['evaluations']} (runs x tasks), {t['eval_items']} items per run"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


def cmd_eval(args) -> int:
    from .evaluate.tasks import TASKS, make_task
    from .study.runner import evaluate_model
    from .study.store import Store

    names = [t for t in args.tasks.split(",") if t]
    for t in names:
        if t not in TASKS:
            raise SftmixError(f"--tasks: unknown task {t!r}; expected one of {', '.join(sorted(TASKS))}")
    import yaml

    params = {}
    for p in args.param:
        if "=" not in p:
            raise SftmixError(f"--param {p!r}: expected key=value, e.g. path=gsm8k_test.jsonl or difficulty=2")
        k, v = p.split("=", 1)
        params[k] = yaml.safe_load(v)
    tasks = [make_task(t, limit=args.limit, **params) for t in names]
    out = Path(args.out)
    store = Store(out / "sftmix.db")
    try:
        if args.samples:
            from .evaluate.external import score_samples

            scores = score_samples(Path(args.samples), tasks, store, run_label=args.model or Path(args.samples).stem)
        else:
            if not args.model:
                raise SftmixError("give a MODEL (tiny, smollm2-135m-instruct, an HF id or a directory) or --samples FILE")
            from .models import load_model, load_tokenizer

            tok = load_tokenizer(args.model, args.chat_template)
            model = load_model(args.model, adapter=args.adapter)
            run_id = f"eval-{Path(args.model).name}" + (f"-{Path(args.adapter).name}" if args.adapter else "")
            store.add_run(run_id, f"{args.model}{' + ' + args.adapter if args.adapter else ''}", args.model, "eval", "", 0.0, 0, [])
            scores = evaluate_model(model, tok, tasks, store, run_id, args.batch_size, not args.no_progress)
            store.finish_run(run_id)
        for k, v in scores.items():
            print(f"{k}: {100 * v:.1f}%")
        if not scores:
            print("all tasks were already scored in this store")
    finally:
        store.close()
    return 0


def cmd_report(args) -> int:
    from .study.runner import write_store_report
    from .study.store import Store

    d = Path(args.dir)
    db = d / "sftmix.db"
    if not db.exists():
        raise SftmixError(f"{db}: no study store here; run `sftmix run STUDY out_dir={d}` first")
    store = Store(db)
    try:
        report = write_store_report(d, store)
    finally:
        store.close()
    print(f"report: {report}")
    return 0


def cmd_data(args) -> int:
    from .data.formats import write_jsonl
    from .study.plan import make_plan

    sf = _load(args)
    plan = make_plan(sf)
    for name, rows in plan.sources.items():
        print(f"source {name}: {len(rows)} rows")
    for st in plan.stages.values():
        m = st.mixture.manifest
        parts = ", ".join(f"{k} {v['rows']}" + (f" ({v['repeated_rows']} repeated)" if v["repeated_rows"] else "")
                          for k, v in m["sources"].items())
        print(f"mixture {m['hash']}: {m['rows']} rows [{parts}]")
        if args.export:
            d = Path(args.export)
            d.mkdir(parents=True, exist_ok=True)
            write_jsonl(st.mixture.examples, d / f"{m['hash']}.{args.format}.jsonl", fmt=args.format)
            (d / f"{m['hash']}.manifest.json").write_text(json.dumps(m, indent=1))
    if args.export:
        print(f"exported to {args.export}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sftmix", description="What should your SFT data be made of? Study it.")
    sub = p.add_subparsers(dest="command", required=True)

    def study_cmd(name, help_):
        c = sub.add_parser(name, help=help_)
        c.add_argument("study", nargs="*", help="study YAML (default: the built-in quickstart) then key=value overrides")
        c.add_argument("--out", help="output directory (same as output_dir=DIR)")
        return c

    r = study_cmd("run", "compose mixtures, fine-tune, evaluate, report")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.set_defaults(fn=cmd_run)
    pl = study_cmd("plan", "show runs, unique stages, training tokens and FLOPs without running")
    pl.add_argument("--json", help="also write the plan summary as JSON here")
    pl.set_defaults(fn=cmd_plan)
    d = study_cmd("data", "build the study's mixtures; optionally export train-ready JSONL")
    d.add_argument("--export", help="directory for JSONL + manifest per mixture")
    d.add_argument("--format", default="messages", choices=["messages", "alpaca", "sharegpt"])
    d.set_defaults(fn=cmd_data)
    e = sub.add_parser("eval", help="evaluate one model (or externally produced samples) on tasks")
    e.add_argument("model", nargs="?", help="tiny, smollm2-135m-instruct, an HF id or a local directory")
    e.add_argument("--tasks", default="math,code,general")
    e.add_argument("--limit", type=int, default=100)
    e.add_argument("--adapter", help="a LoRA adapter directory to apply on the model")
    e.add_argument("--chat-template", default="auto", choices=["auto", "chatml", "vicuna", "alpaca"])
    e.add_argument("--samples", help="score completions from this JSONL ({id, completion}) instead of generating")
    e.add_argument("--param", action="append", default=[], help="task parameter key=value (e.g. path=gsm8k_test.jsonl)")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--out", default="runs/eval", help="store directory (default runs/eval)")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(fn=cmd_eval)
    rp = sub.add_parser("report", help="write DIR/report.html from DIR/sftmix.db")
    rp.add_argument("dir")
    rp.set_defaults(fn=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return args.fn(args)
    except SftmixError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished stages and scores are kept; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
