import csv
import math

import pytest

from sftmix.report import write_report
from sftmix.data.mixture import amount_label
from sftmix.report.plots import ability_scores

XSS = "<script>alert(1)</script>"
XSS_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
TASKS = [("gsm8k", "math", "accuracy"), ("humaneval", "code", "pass@1"), ("ifeval", "general", "prompt_strict")]
AMOUNTS = [1 / 16, 1 / 4, 1.0]


def _runs():
    runs = [dict(run_id=f"base-s{s}", label=f"base s{s}", model="tiny", strategy="base", sources="",
                 amount=0.0, seed=s, train_tokens=0) for s in (0, 1)]
    for strategy, sources in [("multitask", "math+code+general"), ("single", "math")]:
        for a in AMOUNTS:
            for s in (0, 1):
                runs.append(dict(run_id=f"{strategy}-{a}-s{s}", label=f"{strategy} {amount_label(a)} s{s}",
                                 model="tiny", strategy=strategy, sources=sources, amount=a, seed=s,
                                 train_tokens=int(a * 1_000_000)))
    return runs


def _value(run, ability):
    # more data helps; "single math" helps math most; seeds differ a little
    boost = 0.0 if run["amount"] == 0 else 0.1 * (4 + math.log2(run["amount"]))
    if run["strategy"] == "single" and ability == "math":
        boost *= 1.5
    return min(1.0, 0.1 + boost + 0.01 * run["seed"])


@pytest.fixture(scope="module")
def data():
    runs = _runs()
    scores = [dict(run, task=t, ability=ab, metric=m, value=_value(run, ab), n=20)
              for run in runs for t, ab, m in TASKS]
    items = [dict(run_id=run["run_id"], task=t, item_id=f"{t}-{i}", score=float(i % 2),
                  prompt=f"question {i} of {t}", prediction=XSS if i == 0 else f"answer {i}",
                  reference=f"ref {i}") for run in runs for t, _, _ in TASKS for i in range(5)]
    study = dict(name="demo <b>study</b>", description="synthetic", config_yaml=f"name: x\nnote: {XSS}\n")
    return scores, items, study


@pytest.fixture(scope="module")
def rendered(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    path = write_report(out, *data)
    return out, path, path.read_text()


def test_files_written(rendered, data):
    out, path, page = rendered
    assert path == out / "report.html"
    for _, ability, _ in TASKS:
        png = out / "figures" / f"scaling_{ability}.png"
        assert png.read_bytes().startswith(b"\x89PNG")
        assert png.with_suffix(".svg").read_bytes().lstrip().startswith(b"<?xml")
    with open(out / "tables" / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(data[0])
    assert {"run_id", "task", "value", "train_tokens"} <= set(rows[0])
    import pyarrow.parquet as pq

    table = pq.read_table(out / "tables" / "scores.parquet")
    assert table.num_rows == len(rows) and table.column_names == list(rows[0])
    assert table.column("value").to_pylist() == pytest.approx([float(r["value"]) for r in rows])
    assert not [p for p in out.rglob("*.tmp")]


def test_html_content(rendered, data):
    _, _, page = rendered
    assert page.count("data:image/png;base64,") == 3
    for _, ability, _ in TASKS:
        assert f'id="ability-{ability}"' in page
    for label in {s["label"] for s in data[0]}:
        assert f"<td>{label}</td>" in page
    assert "<details>" in page and "multitask 1 s0 (largest amount)" in page and "base s0 (base)" in page
    assert "http://" not in page and "https://" not in page  # self-contained


def test_untrusted_text_is_escaped(rendered):
    _, _, page = rendered
    assert XSS not in page and "<script" not in page.lower()
    assert page.count(XSS_ESCAPED) >= 3  # prediction in two sample runs, plus the config
    assert "demo &lt;b&gt;study&lt;/b&gt;" in page


def test_best_value_bold(rendered, data):
    out, _, page = rendered
    best_math = max(s["value"] for s in data[0] if s["task"] == "gsm8k")
    assert f"<strong>{100 * best_math:.1f}</strong>" in page
    # gsm8k has one best run ("single 1 s1"); code and general tie between multitask and single at 1 s1
    assert page.count("<strong>") == 5
    summary = (out / "summary.md").read_text()
    assert "| label | model | strategy |" in summary and "gsm8k (accuracy)" in summary
    assert f"**{100 * best_math:.1f}**" in summary and summary.count("**") == 2 * 5
    best = [line for line in summary.splitlines() if line.startswith("| math |")]
    assert best and "single 1 s" in best[0]


def test_ability_mean_over_tasks():
    base = dict(run_id="r", label="r", model="m", strategy="multitask", sources="a", amount=1.0, seed=0,
                train_tokens=1)
    rows = ability_scores([dict(base, task="t1", ability="math", value=0.2),
                           dict(base, task="t2", ability="math", value=0.6),
                           dict(base, task="t3", ability="math", value=float("nan"))])
    assert len(rows) == 1 and rows[0]["value"] == pytest.approx(0.4) and rows[0]["tasks"] == ["t1", "t2", "t3"]


def test_empty_scores_rejected(tmp_path):
    with pytest.raises(ValueError, match="scores.*empty"):
        write_report(tmp_path, [], [], {"name": "x"})
    assert not (tmp_path / "report.html").exists()


def test_missing_key_named(tmp_path, data):
    bad = [{k: v for k, v in data[0][0].items() if k != "ability"}]
    with pytest.raises(ValueError, match="ability"):
        write_report(tmp_path, bad, [], {"name": "x"})


def test_rewrite_overwrites_and_failed_write_keeps_old(tmp_path, data, monkeypatch):
    scores, items, _ = data
    write_report(tmp_path, scores, items, {"name": "first"})
    write_report(tmp_path, scores, items, {"name": "second"})
    page = (tmp_path / "report.html").read_text()
    assert "second" in page and "first" not in page

    def boom(*a, **k):
        raise OSError("disk full")
    import sftmix.atomic

    monkeypatch.setattr(sftmix.atomic.os, "replace", boom)
    with pytest.raises(OSError):
        write_report(tmp_path, scores, items, {"name": "third"})
    assert (tmp_path / "report.html").read_text() == page
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_ability_name_cannot_escape_figures_dir(tmp_path, data):
    scores = [dict(s, ability="../../evil") for s in data[0][:6]]
    write_report(tmp_path / "out", scores, [], {"name": "x"})
    assert sorted(p.name for p in (tmp_path / "out" / "figures").iterdir()) == ["scaling_evil.png", "scaling_evil.svg"]
    assert not list(tmp_path.glob("*.png"))


def test_judged_task_shows_scores_per_category_and_its_judge(tmp_path):
    scores = [dict(run_id=r, label=f"run {r}", model="tiny", strategy="multitask", sources="m", amount=a, seed=0,
                   task="mtbench", ability="general", metric="judge_rating", value=v, n=8,
                   summary={"judge_rating": v, "category:writing": v + 0.1, f"category:{XSS}": v - 0.1,
                            "unjudged_items": 1.0, "judge": "gpt-judge@127.0.0.1"})
              for r, a, v in (("a", 0.25, 0.5), ("b", 1.0, 0.6))]
    html = write_report(tmp_path, scores, [], {"name": "judged"}).read_text()
    assert "Scores per category" in html and "judge: gpt-judge@127.0.0.1" in html
    assert "writing" in html and ">60.0<" in html and ">70.0<" in html  # run b: overall 60.0, writing 70.0
    assert XSS not in html and XSS_ESCAPED in html


CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
                 if __import__("os").path.exists(p)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt install chromium)")
def test_report_renders_in_headless_chromium_without_errors(rendered, tmp_path):
    """The report opens from file:// with no network: a real browser lays it out (not blank), runs nothing from
    model text (the planted <script> stays text) and logs no console error or failed load."""
    import subprocess

    import numpy as np
    from PIL import Image

    _, path, _ = rendered
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run(flags + ["--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<table" in dom.stdout and "Scaling curves" in dom.stdout and XSS_ESCAPED in dom.stdout
    assert "<script>alert(1)</script>" not in dom.stdout  # escaped model text never became an element
    problems = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line or "net::ERR" in line]
    assert not problems, problems
    shot = tmp_path / "report.png"
    subprocess.run(flags + ["--window-size=1200,1600", f"--screenshot={shot}", path.as_uri()],
                   capture_output=True, text=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.005  # text and figures, not a blank page
