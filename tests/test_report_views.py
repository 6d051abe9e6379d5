"""The report's views along a study's data design, on synthetic score and item rows built like the store's:
RQ1 curves with intervals, RQ3 ratio maps and lines, Zhang et al.'s code proportion, BELLE's categories, forgetting,
the findings in sentences, and every table as CSV and Parquet."""

import csv
import json
import math
import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from sftmix.data.mixture import amount_label
from sftmix.report import write_report

CATS = ("brainstorming", "math", "open qa")


def _study(spec, n_items=120, seed=0, tasks=None):
    """spec: [dict(label, strategy, sources, amount, axis, cell, params, seed, ps={task: p or {category: p}})].
    Items are shared by every run (same ids); a run with a higher p solves a superset of what a lower one solves,
    and a seed shifts which items sit at the edge. tasks: task -> (ability, domain)."""
    tasks = tasks or {"math": ("math", ""), "code": ("code", "")}
    rng = np.random.default_rng(seed)
    difficulty = {t: rng.random(n_items) for t in tasks}
    jitter = {s: np.random.default_rng(100 + s).normal(0, 0.03, n_items) for s in range(8)}
    scores, items = [], []
    for k, r in enumerate(spec):
        rid = r.get("run_id", f"r{k}")
        s = r.get("seed", 0)
        for task, p in r["ps"].items():
            ability, domain = tasks[task]
            if isinstance(p, dict):  # per category
                cat = [CATS[i % len(CATS)] for i in range(n_items)]
                sc = np.array([float(difficulty[task][i] + jitter[s][i] < p[c]) for i, c in enumerate(cat)])
                summary = {f"category:{c}": float(np.mean([x for x, cc in zip(sc, cat) if cc == c])) for c in CATS}
            else:
                cat = [None] * n_items
                sc = (difficulty[task] + jitter[r.get("jitter", s)] < p).astype(float)
                summary = {}
            eval_id = f"{rid}-{task}"
            scores.append({"run_id": rid, "label": r["label"] + (f" seed {s}" if r.get("seeds") else ""),
                           "model": "m", "strategy": r["strategy"], "sources": r.get("sources", ""),
                           "amount": r["amount"], "axis": r.get("axis", "amount"), "cell": r.get("cell", {}),
                           "params": r.get("params", {}), "seed": s, "task": task, "ability": ability,
                           "domain": domain, "metric": "accuracy", "value": float(sc.mean()),
                           "summary": {"accuracy": float(sc.mean()), **summary}, "n": n_items, "eval_id": eval_id})
            items += [{"run_id": rid, "task": task, "item_id": f"{task}-{i}", "score": float(x), "eval_id": eval_id,
                       "prompt": "q", "prediction": "a", "reference": "r",
                       "details": json.dumps({"category": c} if c else {})} for i, (x, c) in enumerate(zip(sc, cat))]
    return scores, items


def _cell(**amounts):
    return {s: {"amount": a, "unit": "fraction"} for s, a in amounts.items()}


def _csv_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _same_as_csv(out, name):
    """tables/NAME.parquet holds the CSV's rows and columns (typed: numbers compare as numbers)."""
    rows = _csv_rows(out / "tables" / f"{name}.csv")
    table = pq.read_table(out / "tables" / f"{name}.parquet").to_pylist()
    assert len(table) == len(rows) > 0 and list(table[0]) == list(rows[0])
    for a, b in zip(rows, table):
        for k, v in a.items():
            w = b[k]
            if w is None:
                assert v == ""
            elif isinstance(w, bool):
                assert v == str(w)
            elif isinstance(w, (int, float)):
                assert math.isclose(float(v), w, rel_tol=1e-9), (name, k, v, w)
            else:
                assert v == w
    return rows


def _findings(out):
    md = (out / "summary.md").read_text()
    return [line[2:] for line in md.split("## Findings", 1)[1].split("## Scores", 1)[0].splitlines()
            if line.startswith("- ")]


# ----------------------------------------------------------------------------------------------------- RQ1


@pytest.fixture(scope="module")
def rq1(tmp_path_factory):
    spec = [dict(label="base", strategy="base", amount=0.0, ps={"math": 0.05, "code": 0.05}, cell={})]
    for s in (0, 1):
        for a in (1 / 16, 1 / 4, 1):
            g = math.log2(a * 16) / 4  # 0, 0.5, 1
            spec.append(dict(label=f"single math {a:g}", strategy="single", sources="math", amount=a, seed=s, seeds=1,
                             cell=_cell(math=a), ps={"math": 0.2 + 0.5 * g}, run_id=f"sm{a}s{s}"))
            spec.append(dict(label=f"multitask {a:g}", strategy="multitask", sources="math+code", amount=a, seed=s,
                             seeds=1, cell=_cell(math=a, code=a), ps={"math": 0.2 + 0.4 * g, "code": 0.3},
                             run_id=f"mt{a}s{s}"))
        # a multi-stage strategy at the full amount, for the strategy table (single runs are RQ2's, not its rows)
        spec.append(dict(label="dmt k=1/4 1", strategy="dmt", sources="math+code", amount=1.0, seed=s, seeds=1,
                         cell=_cell(math=1, code=1), ps={"math": 0.6, "code": 0.6}, run_id=f"dmt{s}"))
    scores, items = _study(spec)
    out = tmp_path_factory.mktemp("rq1")
    write_report(out, scores, items, {"name": "rq1"})
    return out, scores, items


def test_rq1_curves_carry_intervals_over_items_and_seeds(rq1):
    out, scores, items = rq1
    rows = _same_as_csv(out, "rq1_curves")
    top = next(r for r in rows if r["recipe"] == "single math" and r["ability"] == "math" and float(r["amount"]) == 1)
    want = np.mean([s["value"] for s in scores if s["run_id"] in ("sm1s0", "sm1s1") and s["task"] == "math"])
    assert float(top["mean"]) == pytest.approx(want)
    assert top["seeds"] == "2" and top["items"] == "120" and float(top["lo"]) < want < float(top["hi"])
    assert top["significant"] == "True" and float(top["p_holm"]) < 0.05
    base = next(r for r in rows if r["recipe"] == "base" and r["ability"] == "math")
    want = next(s["value"] for s in scores if s["strategy"] == "base" and s["task"] == "math")
    assert base["seeds"] == "1" and float(base["mean"]) == pytest.approx(want)
    for ability in ("math", "code"):
        assert (out / "figures" / f"scaling_{ability}.png").read_bytes().startswith(b"\x89PNG")
        assert b"<svg" in (out / "figures" / f"scaling_{ability}.svg").read_bytes()[:400]


def test_rq1_findings_name_items_seeds_and_say_not_significant(rq1):
    out, _, _ = rq1
    found = _findings(out)
    math_line = next(s for s in found if s.startswith("math rises") and "(single math):" in s)
    assert re.search(r"from \d+\.\d% \[\d+\.\d, \d+\.\d\] at 1/16 to \d+\.\d% \[[\d., ]+\] at 1 ", math_line)
    assert "120 items, 2 seeds" in math_line and "significant (p" in math_line and "log fit predicts" in math_line
    flat = next(s for s in found if s.startswith("code") and "(multitask):" in s)  # code stays at 30%
    assert "not significant" in flat and "120 items, 2 seeds" in flat
    page = (out / "report.html").read_text()
    assert page.index('id="findings"') < page.index('id="scaling"')
    assert "not significant" in page and 'class="legend"' in page


def test_every_table_has_a_parquet_twin_and_every_figure_an_svg(rq1):
    out, _, _ = rq1
    csvs = sorted(p.stem for p in (out / "tables").glob("*.csv"))
    assert set(csvs) >= {"scores", "intervals", "strategies", "mixed_vs_single", "fits", "rq1_curves"}
    for name in csvs:
        _same_as_csv(out, name)
    pngs = {p.stem for p in (out / "figures").glob("*.png")}
    assert pngs and pngs == {p.stem for p in (out / "figures").glob("*.svg")}


def test_differences_in_tables_carry_the_mark_and_its_legend(rq1):
    out, _, _ = rq1
    page = (out / "report.html").read_text()
    for sec in ("scaling", "mixed", "strategies"):
        body = page.split(f'<h2 id="{sec}">', 1)[1].split("<h2 ", 1)[0]
        assert " *" in body and "significant at the 5% level after Holm" in body, sec
        assert re.search(r"<th>(items|seeds)</th>|\(n=120\)", body), sec  # what stands behind each number


# ----------------------------------------------------------------------------------------------------- RQ3


def test_ratio_map_over_a_product_of_per_source_amounts(tmp_path):
    spec = []
    for m in (1 / 4, 1):
        for c in (1 / 4, 1):
            # math moves with its own amount; code is the same in every cell, its differences are chance only
            spec.append(dict(label=f"multitask general 1 + math {amount_label(m)} + code {amount_label(c)}",
                             strategy="multitask", sources="general+math+code", amount=m, axis="amount",
                             cell=_cell(general=1, math=m, code=c), jitter=len(spec),
                             ps={"math": 0.2 + 0.5 * (m == 1), "code": 0.3}))
    scores, items = _study(spec)
    write_report(tmp_path, scores, items, {"name": "ratio"})
    rows = _same_as_csv(tmp_path, "ratio")
    assert {r["kind"] for r in rows} == {"grid"} and len(rows) == 8
    cell = next(r for r in rows if r["ability"] == "math" and r["amount_math"] == "1.0" and r["amount_code"] == "0.25")
    want = next(s["value"] for s in scores if s["task"] == "math" and s["cell"]["math"]["amount"] == 1
                and s["cell"]["code"]["amount"] == 0.25)
    assert float(cell["mean"]) == pytest.approx(want) and cell["amount_general"] == "1.0"
    assert not (tmp_path / "tables" / "rq1_curves.csv").exists()  # per-source cells are not points of an amount curve
    assert list((tmp_path / "figures").glob("ratio_*.svg"))
    page = (tmp_path / "report.html").read_text()
    assert "Data ratios (RQ3)" in page and "math \\ code" in page and f">{100 * want:.1f} [" in page
    found = _findings(tmp_path)
    m = next(s for s in found if s.startswith("math is highest"))
    assert "significant (p" in m and "not significant" not in m and "120 items, 1 seed" in m
    c = next(s for s in found if s.startswith("code is highest"))
    assert "not significant" in c and "(multitask):" in c


def test_ratio_line_for_a_zip_design(tmp_path):
    spec = [dict(label=f"multitask general 1 + math {amount_label(a)} + code {amount_label(a)}",
                 strategy="multitask", sources="general+math+code", amount=a,
                 axis="math+code", cell=_cell(general=1, math=a, code=a),
                 ps={"math": 0.2 + 0.5 * a, "code": 0.4}) for a in (1 / 16, 1 / 4, 1)]
    scores, items = _study(spec)
    write_report(tmp_path, scores, items, {"name": "zip"})
    rows = _same_as_csv(tmp_path, "ratio")
    assert {r["kind"] for r in rows} == {"line"}
    last = next(r for r in rows if r["ability"] == "math" and r["amount_math"] == "1.0")
    assert last["mixture"] == "general 1 + math 1 + code 1" and last["significant"] == "True"
    page = (tmp_path / "report.html").read_text()
    assert "general 1 + math 1/16 + code 1/16" in page and "significant at the 5% level" in page


# ---------------------------------------------------------------------------------------------- Zhang et al.


REASONING = {"coin_flip": ("reasoning", "symbolic"), "list_reversal": ("reasoning", "symbolic"),
             "babi_deduction": ("reasoning", "logical"), "clutrr_kinship": ("reasoning", "logical"),
             "addsub": ("reasoning", "arithmetic"), "gsm_style": ("reasoning", "arithmetic")}


def test_code_proportion_overall_per_domain_and_per_task(tmp_path):
    spec = []
    for share in (0.0, 0.5, 1.0):
        ps = {t: 0.3 + (0.4 * share if dom == "symbolic" else 0.0) for t, (_, dom) in REASONING.items()}
        spec.append(dict(label=f"multitask code {100 * share:g}%", strategy="multitask",
                         sources="math+code+general", amount=share, axis="code share",
                         cell=_cell(code=share, math=(1 - share) / 2, general=(1 - share) / 2), ps=ps))
    scores, items = _study(spec, tasks=REASONING)
    write_report(tmp_path, scores, items, {"name": "zhang"})
    rows = _same_as_csv(tmp_path, "code_proportion")
    at = {(r["level"], r["name"], float(r["share"])): r for r in rows}
    top = [s["value"] for s in scores if s["amount"] == 1.0]
    assert float(at[("ability", "reasoning", 1.0)]["mean"]) == pytest.approx(np.mean(top))
    sym = [s["value"] for s in scores if s["amount"] == 1.0 and s["domain"] == "symbolic"]
    assert float(at[("domain", "symbolic", 1.0)]["mean"]) == pytest.approx(np.mean(sym))
    assert float(at[("task", "coin_flip", 0.0)]["mean"]) == pytest.approx(
        next(s["value"] for s in scores if s["amount"] == 0.0 and s["task"] == "coin_flip"))
    assert at[("domain", "symbolic", 1.0)]["significant"] == "True"
    assert at[("domain", "logical", 1.0)]["significant"] == "False"
    assert list((tmp_path / "figures").glob("code_proportion_*.png"))
    found = _findings(tmp_path)
    sym_s = next(s for s in found if s.startswith("Symbolic reasoning"))
    assert "at code 0% to" in sym_s and "at code 100%" in sym_s and "significant (p" in sym_s
    assert "240 items, 1 seed" in sym_s  # two tasks of 120 items
    assert "not significant" in next(s for s in found if s.startswith("Logical reasoning"))
    assert any(s.startswith("Reasoning overall") for s in found)
    page = (tmp_path / "report.html").read_text()
    assert "Score against code proportion (Zhang et al.)" in page and "<th>coin_flip (task) (120 items)</th>" in page
    assert "<th>symbolic (domain) (240 items)</th>" in page and "<th>seeds</th>" in page
    # a 0% share is a trained run, not the base model
    assert "multitask code 0% (base)" not in page


# ------------------------------------------------------------------------------------------------------ BELLE


def test_belle_categories_against_total(tmp_path):
    spec = [dict(label=f"multitask {t:g} rows pooled", strategy="multitask", sources="math+code+general", amount=t,
                 axis="total", cell={s: {"amount": t / 2, "unit": "count"} for s in ("math", "code")},
                 ps={"belle": {"brainstorming": 0.2 + 0.4 * (t > 500), "math": 0.3, "open qa": 0.4}})
            for t in (300.0, 1800.0)]
    scores, items = _study(spec, tasks={"belle": ("general", "")}, n_items=150)
    write_report(tmp_path, scores, items, {"name": "belle"})
    rows = _same_as_csv(tmp_path, "belle_categories")
    b = next(r for r in rows if r["category"] == "brainstorming" and float(r["total"]) == 1800)
    summ = next(s for s in scores if s["amount"] == 1800)["summary"]
    assert float(b["mean"]) == pytest.approx(summ["category:brainstorming"]) and b["items"] == "50"
    assert b["significant"] == "True"
    assert next(r for r in rows if r["category"] == "math" and float(r["total"]) == 1800)["significant"] == "False"
    found = _findings(tmp_path)
    assert "significant (p" in next(s for s in found if s.startswith("belle brainstorming rises"))
    assert "not significant" in next(s for s in found if s.startswith("belle math"))
    assert all("50 items, 1 seed" in s for s in found if s.startswith("belle ") and "overall" not in s)
    page = (tmp_path / "report.html").read_text()
    assert "Per-category score against total amount (BELLE)" in page and "1800 rows" in page


def test_belle_without_item_rows_shows_the_stored_category_means_bare(tmp_path):
    spec = [dict(label=f"multitask {t}", strategy="multitask", amount=t, axis="total",
                 cell={"math": {"amount": t, "unit": "count"}},
                 ps={"belle": {c: 0.2 + 0.1 * k for k, c in enumerate(CATS)}})
            for t in (300.0, 900.0)]
    scores, _ = _study(spec, tasks={"belle": ("general", "")}, n_items=30)
    write_report(tmp_path, scores, [], {"name": "bare"})
    rows = _same_as_csv(tmp_path, "belle_categories")
    r = next(r for r in rows if r["category"] == "open qa")
    assert r["items"] == "0" and r["lo"] == ""
    assert float(r["mean"]) == pytest.approx(scores[0]["summary"]["category:open qa"])
    assert all("stored scores only, no interval" in s for s in _findings(tmp_path) if s.startswith("belle"))


# ------------------------------------------------------------------------------------------------ forgetting


def test_forgetting_table_with_intervals_per_stage(tmp_path):
    # sequential: code learnt in stage 1, then forgotten; dmt keeps it. Stage 0 is the base model's evaluation.
    base = dict(strategy="base", amount=0.0, label="base", run_id="base", ps={"code": 0.05, "math": 0.05})
    chain = {"seq": [("sequential 1", "sequential", {"code": 0.6, "math": 0.05}, 1),
                     ("sequential 1", "sequential", {"code": 0.3, "math": 0.5}, 2),
                     ("sequential 1", "sequential", {"code": 0.1, "math": 0.5}, 3)],
             "dmt": [("dmt k=1/4 1", "dmt", {"code": 0.55, "math": 0.5}, 1),
                     ("dmt k=1/4 1", "dmt", {"code": 0.55, "math": 0.6}, 2)]}
    # dmt's code is the same after both stages: what changes between them is chance (another item draw)
    spec = [base] + [dict(label=lab, strategy=st, amount=1.0, ps=ps, run_id=f"{rid}@{i}", jitter=3 * (rid == "dmt") * i)
                     for rid, stages in chain.items() for lab, st, ps, i in stages]
    scores, items = _study(spec)
    final = [s for s in scores if s["run_id"] in ("base", "seq@3", "dmt@2")]
    stage_scores, stage_items = [], []
    for s in scores:
        if s["run_id"] == "base":
            for rid, n in (("seq", 3), ("dmt", 2)):
                stage_scores.append({**s, "run_id": rid, "label": chain[rid][0][0], "strategy": chain[rid][0][1],
                                     "stage_index": 0, "stages": n, "final": False})
        else:
            rid, i = s["run_id"].split("@")
            n = len(chain[rid])
            stage_scores.append({**s, "run_id": rid, "stage_index": int(i), "stages": n, "final": int(i) == n})
    final = [dict(s, run_id=s["run_id"].split("@")[0]) for s in final]
    final_items = [dict(it, run_id=it["run_id"].split("@")[0]) for it in items
                   if it["run_id"] in ("base", "seq@3", "dmt@2")]
    stage_items = [it for it in items if it["run_id"] not in ("seq@3", "dmt@2")]
    write_report(tmp_path, final, final_items, {"name": "forget"}, stage_scores=stage_scores, stage_items=stage_items)
    rows = _same_as_csv(tmp_path, "forgetting")
    seq = {int(r["stage"]): r for r in rows if r["run"] == "sequential 1" and r["ability"] == "code"}
    assert sorted(seq) == [0, 1, 2, 3] and all(r["items"] == "120" for r in seq.values())
    want = next(s["value"] for s in scores if s["run_id"] == "seq@1" and s["task"] == "code")
    assert float(seq[1]["mean"]) == pytest.approx(want) and float(seq[1]["lo"]) < want
    assert seq[3]["peak_stage"] == "1" and seq[3]["significant"] == "True" and float(seq[3]["diff"]) < -0.3
    dmt_math = {int(r["stage"]): r for r in rows if r["run"] == "dmt k=1/4 1" and r["ability"] == "math"}
    assert float(dmt_math[2]["diff"]) > 0 and dmt_math[1]["diff"] == ""  # the end is its peak: nothing lost
    page = (tmp_path / "report.html").read_text()
    body = page.split('<h2 id="forgetting">', 1)[1].split("<h2 ", 1)[0]
    assert "after stage 3" in body and " * (from after stage 1)" in body and "significant at the 5% level" in body
    found = _findings(tmp_path)
    lost = next(s for s in found if s.startswith("sequential 1 loses") and " of code " in s)
    assert "from after stage 1 (" in lost and "120 items, 1 seed" in lost and ": significant (p" in lost
    assert not [s for s in found if s.startswith("dmt k=1/4 1 loses") and " of math " in s]
    small = [s for s in found if s.startswith("dmt k=1/4 1 loses") and " of code " in s]
    assert small and all(": not significant (p" in s for s in small)  # chance only
    end = next(s for s in found if s.startswith("At the end") and " code where " in s)
    assert "dmt k=1/4 1 keeps" in end and "where sequential 1 keeps" in end and "significant (p" in end
    assert list((tmp_path / "figures").glob("forgetting_code.svg"))


# ------------------------------------------------------------------------------------------------- findings


def test_findings_in_html_match_summary_and_stay_escaped(tmp_path):
    evil = "<img src=x onerror=alert(1)>"
    spec = [dict(label=f"single {evil} {a:g}", strategy="single", sources="math", amount=a, cell=_cell(math=a),
                 ps={"math": 0.2 + 0.4 * a}) for a in (1 / 4, 1)]
    scores, items = _study(spec, tasks={"math": (evil, "")})
    write_report(tmp_path, scores, items, {"name": "x"})
    page = (tmp_path / "report.html").read_text()
    assert evil not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    md = (tmp_path / "summary.md").read_text()
    assert evil not in md and "## Findings" in md and md.index("## Findings") < md.index("## Scores")


def test_store_report_gives_forgetting_intervals_at_every_stage(tmp_path):
    """Through the study store, as `sftmix report` reads it: every stage's evaluation keeps its item rows, so each
    stage of a sequential run has an interval, not only the last."""
    from types import SimpleNamespace

    from sftmix.study.runner import write_store_report
    from sftmix.study.store import Store

    rng = np.random.default_rng(1)
    difficulty = rng.random(60)
    store = Store(tmp_path / "sftmix.db")
    task = SimpleNamespace(name="code", ability="code", metric="accuracy", domain="")
    wanted = {}
    for rid, ps in (("seq", (0.05, 0.7, 0.1)), ("mix", (0.05, 0.5, 0.45))):
        stages = [f"{rid}-s1", f"{rid}-s2"]
        store.add_run(rid, f"{rid} 1", "tiny", "sequential" if rid == "seq" else "mixed_sequential", "code+general",
                      1.0, 0, stages, "amount", _cell(code=1, general=1))
        wanted[rid] = {"code": {}}
        for idx, (ckpt, p) in enumerate(zip(["base", *stages], ps)):
            eid = f"e-{ckpt}"
            rows = [{"item_id": f"c{i}", "score": float(d < p), "prompt": "q", "prediction": "a", "reference": "r"}
                    for i, d in enumerate(difficulty)]
            store.add_eval(eid, ckpt, task, {}, rows, {"accuracy": float(np.mean([r["score"] for r in rows]))}, 0.1)
            wanted[rid]["code"][str(idx)] = eid
    store.set_meta("run_ids", ["seq", "mix"])
    store.set_meta("evals", wanted)
    store.set_meta("name", "store")
    write_store_report(tmp_path, store)
    store.close()
    rows = _same_as_csv(tmp_path, "forgetting")
    seq = {int(r["stage"]): r for r in rows if r["run"] == "seq 1"}
    assert sorted(seq) == [0, 1, 2] and all(r["items"] == "60" and r["lo"] != "" for r in seq.values())
    assert float(seq[1]["mean"]) == pytest.approx(float(np.mean(difficulty < 0.7)))
    assert seq[2]["significant"] == "True" and seq[2]["peak_stage"] == "1"


def test_code_proportion_without_the_reasoning_suite_shows_each_ability(tmp_path):
    spec = [dict(label=f"multitask code {100 * sh:g}%", strategy="multitask", sources="math+code", amount=sh,
                 axis="code share", cell=_cell(code=sh, math=1 - sh),
                 ps={"math": 0.6 - 0.4 * sh, "code": 0.2 + 0.4 * sh},
                 jitter=k) for k, sh in enumerate((0.0, 0.25, 0.5))]
    scores, items = _study(spec)
    write_report(tmp_path, scores, items, {"name": "shares"})
    rows = _same_as_csv(tmp_path, "code_proportion")
    assert {r["level"] for r in rows} == {"ability"} and {r["name"] for r in rows} == {"math", "code"}
    found = _findings(tmp_path)
    assert any(s.startswith("Code rises from") and "at code 0% to" in s and "at code 50%" in s for s in found)
    assert any(s.startswith("Math falls from") and "significant (p" in s for s in found)
    assert not (tmp_path / "tables" / "rq1_curves.csv").exists()  # shares are not amounts
