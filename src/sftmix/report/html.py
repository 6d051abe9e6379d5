"""Results table, samples, and their rendering to HTML and Markdown.

Everything shown comes from the study store, and predictions are raw model output, so the HTML
template runs with autoescape on and nothing in it is marked safe."""

from __future__ import annotations

import html
import math
import re
from collections import defaultdict

import jinja2

from .plots import amount_label, is_base

TEXT_LIMIT = 3000  # chars per prompt/prediction; a runaway generation should not bloat the page


def pct(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def run_order(run: dict) -> tuple:
    return (run["model"], not is_base(run), run["strategy"], run["sources"], run["amount"], run["seed"])


def results_table(scores: list[dict]) -> tuple[list[dict], list[dict]]:
    """Columns are (task, metric) pairs, rows are runs. Each cell is {"text", "best"}; best is
    decided on the displayed (rounded) value so that visual ties are all bold."""
    runs: dict[str, dict] = {}
    cells: dict[str, dict[tuple, float]] = defaultdict(dict)
    abilities: dict[tuple, str] = {}
    for r in scores:
        runs.setdefault(r["run_id"], r)
        cells[r["run_id"]][(r["task"], r["metric"])] = r["value"]
        abilities[(r["task"], r["metric"])] = r["ability"]
    cols = sorted(abilities, key=lambda c: (abilities[c], c))
    best = {}
    for c in cols:
        shown = [round(100 * v, 1) for v in (cells[rid].get(c) for rid in runs)
                 if v is not None and not math.isnan(v)]
        best[c] = max(shown) if shown else None
    rows = []
    for rid, run in sorted(runs.items(), key=lambda kv: run_order(kv[1])):
        row_cells = []
        for c in cols:
            v = cells[rid].get(c)
            row_cells.append({"text": pct(v), "best": pct(v) != "–" and round(100 * v, 1) == best[c]})
        tokens = run.get("train_tokens")
        rows.append({"label": run["label"], "model": run["model"], "strategy": run["strategy"],
                     "sources": run["sources"], "amount": amount_label(run["amount"]),
                     "seed": run["seed"], "train_tokens": f"{tokens:,}" if tokens is not None else "",
                     "cells": row_cells})
    columns = [{"task": t, "metric": m, "ability": abilities[(t, m)]} for t, m in cols]
    return columns, rows


def _clip(text) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + f"… [{len(text) - TEXT_LIMIT} more chars]"


def pick_samples(scores: list[dict], items: list[dict], per_task: int = 3) -> list[dict]:
    """Per task: the same few items from the run with the largest amount and from the base model
    (of the same model when there is one), so the two can be compared side by side."""
    runs = {}
    for r in scores:
        runs.setdefault(r["run_id"], r)
    by_task: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for it in items:
        by_task[str(it.get("task", ""))][str(it.get("run_id"))].append(it)
    out = []
    for task in sorted(by_task):
        known = [runs[rid] for rid in by_task[task] if rid in runs]
        tuned = [r for r in known if not is_base(r)]
        # among runs tied on the largest amount, the first in table order
        top = min(tuned, key=lambda r: (-r["amount"], run_order(r)), default=None)
        bases = sorted((r for r in known if is_base(r)), key=run_order)
        base = next((r for r in bases if top and r["model"] == top["model"]), bases[0] if bases else None)
        picked = [r for r in (top, base) if r is not None]
        if not picked:
            continue
        first = by_task[task][picked[0]["run_id"]]
        ids = [it.get("item_id") for it in first[:per_task]]
        blocks = []
        for run in picked:
            pool = by_task[task][run["run_id"]]
            chosen = [it for it in pool if it.get("item_id") in ids] or pool[:per_task]
            blocks.append({"label": run["label"], "role": "base" if is_base(run) else "largest amount",
                           "examples": [{"item_id": str(it.get("item_id", "")), "score": it.get("score"),
                                         "prompt": _clip(it.get("prompt")),
                                         "prediction": _clip(it.get("prediction")),
                                         "reference": _clip(it.get("reference"))} for it in chosen]})
        out.append({"task": task, "runs": blocks})
    return out


def best_per_ability(ability_rows: list[dict]) -> list[dict]:
    best: dict[str, dict] = {}
    for r in ability_rows:
        if not math.isnan(r["value"]) and (r["ability"] not in best or r["value"] > best[r["ability"]]["value"]):
            best[r["ability"]] = r
    return [best[a] for a in sorted(best)]


_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)


def render_html(**context) -> str:
    return _ENV.from_string(TEMPLATE).render(pct=pct, **context)


def _md(text) -> str:
    # Markdown renderers pass raw HTML through, so escape it too; pipes would split table cells. A "<" before a digit
    # or a space ("p<0.001") cannot open a tag and stays as it is.
    text = html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")
    return re.sub(r"&lt;(?=[\d\s.=])", "<", text)


def render_markdown(study: dict, header: dict, columns: list[dict], rows: list[dict],
                    best: list[dict], findings: list[dict] | None = None) -> str:
    """`findings`: [{"title", "sentences"}] per report section, listed before the tables."""
    meta = ["label", "model", "strategy", "sources", "amount", "seed", "train tokens"]
    heads = meta + [f"{c['task']} ({c['metric']})" for c in columns]
    lines = [f"# {_md(study.get('name') or 'sftmix study')}: summary", "",
             f"{header['date']} · {header['runs']} runs · {header['models']} models · "
             f"{header['tasks']} tasks", ""]
    if findings:
        lines += ["## Findings", "", "Intervals are 95% bootstrap intervals over items (and seeds); differences are "
                  "paired on the same items and called significant at the 5% level after Holm's correction.", ""]
        for f in findings:
            lines += [f"### {_md(f['title'])}", ""] + [f"- {_md(s)}" for s in f["sentences"]] + [""]
    lines += ["## Scores (%)", "",
             "| " + " | ".join(_md(h) for h in heads) + " |", "|" + "---|" * len(heads)]
    for r in rows:
        vals = [r["label"], r["model"], r["strategy"], r["sources"], r["amount"], r["seed"], r["train_tokens"]]
        vals = [_md(v) for v in vals] + [f"**{c['text']}**" if c["best"] else c["text"] for c in r["cells"]]
        lines.append("| " + " | ".join(vals) + " |")
    lines += ["", "## Best run per ability", "", "| ability | run | model | score (%) | tasks |",
              "|---|---|---|---|---|"]
    for b in best:
        lines.append(f"| {_md(b['ability'])} | {_md(b['label'])} | {_md(b['model'])} | "
                     f"{pct(b['value'])} | {_md(', '.join(b['tasks']))} |")
    return "\n".join(lines) + "\n"


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ name }}: sftmix report</title>
<style>
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#222;background:#fafafa;margin:0}
main{max-width:1100px;margin:0 auto;padding:1.5rem 1rem 4rem;background:#fff}
h1{margin:.2rem 0}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
.meta{color:#555}.fig{max-width:100%;height:auto;display:block;margin:.5rem 0}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e5e5e5;padding:.3rem .55rem;text-align:left;white-space:nowrap}
th{background:#f3f3f3;position:sticky;top:0}td.num{text-align:right}tr:hover td{background:#f7f9fc}
th small{font-weight:normal;color:#666}
details{border:1px solid #e2e2e2;border-radius:4px;margin:.4rem 0;padding:.3rem .6rem}
summary{cursor:pointer;font-weight:600}
pre{white-space:pre-wrap;word-break:break-word;background:#f5f5f5;padding:.5rem;border-radius:3px;
margin:.2rem 0 .6rem;font-size:12.5px;max-height:22rem;overflow:auto}
.legend{font-size:12.5px;color:#444;margin:.2rem 0 1rem}
ul.findings li{margin:.25rem 0}
.item{border-top:1px dashed #ccc;padding-top:.4rem;margin-top:.4rem}.lab{font-size:12px;color:#666}
</style></head><body><main>
<h1>{{ name }}</h1>
<p class="meta">Generated {{ header.date }} · {{ header.runs }} runs · {{ header.models }} models
({{ header.model_names | join(", ") }}) · {{ header.tasks }} tasks</p>
{% if description %}<p>{{ description }}</p>{% endif %}
{% if output_dir %}<p class="meta">Output directory: <code>{{ output_dir }}</code></p>{% endif %}

{% if findings %}<h2 id="findings">Findings</h2>
<p class="meta">Intervals are 95% bootstrap intervals over items (and seeds); differences are paired on the same
items and called significant at the 5% level after Holm's correction over the comparisons of their table.</p>
{% for f in findings %}<h3><a href="#{{ f.id }}">{{ f.title }}</a></h3>
<ul class="findings">{% for s in f.sentences %}<li>{{ s }}</li>{% endfor %}</ul>{% endfor %}{% endif %}

{% for sec in sections %}<h2 id="{{ sec.id }}">{{ sec.title }}</h2><p class="meta">{{ sec.note }}</p>
{% for f in sec.figures %}{% if f.title is defined %}<section id="{{ f.anchor }}"><h3>{{ f.title }}</h3>{% endif %}
<img class="fig" src="data:image/png;base64,{{ f.b64 }}" alt="{{ f.alt }}">
{% if f.title is defined %}</section>{% endif %}{% endfor %}
{% for t in sec.tables %}<h3>{{ t.caption }}</h3><div class="scroll"><table><thead><tr>
{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead><tbody>{% for row in t.rows %}<tr>
{% for v in row %}<td{% if not loop.first %} class="num"{% endif %}>{{ v }}</td>{% endfor %}</tr>{% endfor %}
</tbody></table></div>{% if t.legend is defined %}<p class="legend">{{ t.legend }}</p>{% endif %}{% endfor %}
{% endfor %}

<h2 id="results">Results (%)</h2>
<p class="meta">Best value per column in bold.</p>
<div class="scroll"><table>
<thead><tr><th>label</th><th>model</th><th>strategy</th><th>sources</th><th>amount</th><th>seed</th>
<th>train tokens</th>{% for c in columns %}<th>{{ c.task }}<br><small>{{ c.metric }}</small></th>{% endfor %}</tr></thead>
<tbody>{% for r in rows %}<tr><td>{{ r.label }}</td><td>{{ r.model }}</td><td>{{ r.strategy }}</td>
<td>{{ r.sources }}</td><td class="num">{{ r.amount }}</td><td class="num">{{ r.seed }}</td>
<td class="num">{{ r.train_tokens }}</td>{% for c in r.cells %}<td class="num">
{%- if c.best %}<strong>{{ c.text }}</strong>{% else %}{{ c.text }}{% endif %}</td>{% endfor %}</tr>
{% endfor %}</tbody></table></div>

<h2 id="best">Best run per ability</h2>
<ul>{% for b in best %}<li><b>{{ b.ability }}</b>: {{ b.label }} ({{ b.model }}), {{ pct(b.value) }}%</li>{% endfor %}</ul>

<h2 id="samples">Samples</h2>
{% for s in samples %}<h3>{{ s.task }}</h3>
{% for run in s.runs %}<details><summary>{{ run.label }} ({{ run.role }}), {{ run.examples | length }} items</summary>
{% for it in run.examples %}<div class="item"><div class="lab">item {{ it.item_id }} · score {{ it.score }}</div>
<div class="lab">prompt</div><pre>{{ it.prompt }}</pre>
<div class="lab">prediction</div><pre>{{ it.prediction }}</pre>
<div class="lab">reference</div><pre>{{ it.reference }}</pre></div>
{% endfor %}</details>
{% endfor %}{% else %}<p class="meta">No item-level results.</p>{% endfor %}

{% if config_yaml %}<h2 id="config">Study configuration</h2><details><summary>study file</summary>
<pre>{{ config_yaml }}</pre></details>{% endif %}
</main></body></html>
"""
