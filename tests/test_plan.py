"""Planning: data designs x strategies -> runs and content-addressed stages (no training here)."""

import textwrap

import pytest

from sftmix import models
from sftmix.cli import main
from sftmix.config import load_study
from sftmix.study.plan import make_plan

BASE = """\
name: p
models: [{name: tiny, finetune: full}]
sources:
  math: {builtin: math, size: 64}
  code: {builtin: code, size: 64}
  general: {builtin: general, size: 64}
training: {epochs: 1, batch_size: 8, max_length: 256}
evaluation: {tasks: [math], limit: 4}
"""


def plan_of(tmp_path, extra, overrides=()):
    p = tmp_path / "s.yaml"
    p.write_text(BASE + textwrap.dedent(extra))
    return make_plan(load_study(p, list(overrides)))


def test_dmt_sweep_and_sequential_share_their_first_stages(tmp_path):
    plan = plan_of(tmp_path, """\
        amounts: [1]
        strategies:
          - {name: dmt, params: {k: [0, 1/64, 1/16, 1/4, 1]}}
          - mixed_sequential
          - {name: sequential, params: {order: [code, math, general]}}
          - {name: stages, stages: [{parts: [code]}, {parts: [math, general]}]}
        """)
    runs = [r for r in plan.runs if r.strategy != "base"]
    assert len(runs) == 5 + 1 + 1 + 1
    dmt = [r for r in runs if r.strategy == "dmt"]
    mixed = next(r for r in runs if r.strategy == "mixed_sequential")
    # dmt k=0 is mixed sequential exactly: the same checkpoint, trained and evaluated once
    assert next(r for r in dmt if r.params["k"] == 0).checkpoint_id == mixed.checkpoint_id
    assert len(plan.checkpoints()) == 1 + len(runs) - 1  # the base model, and one per run but the shared one
    assert len({r.stages[0].stage_id for r in dmt}) == 1  # stage 1 trained once for all k
    assert len({r.stages[1].stage_id for r in dmt}) == 5
    seq = next(r for r in runs if r.strategy == "sequential")
    custom = next(r for r in runs if r.strategy == "stages")
    assert seq.stages[0].stage_id == custom.stages[0].stage_id  # both start with code alone
    # unique stages: dmt 1 + 5 (k=0 = mixed sequential's stage 2), sequential 3, custom 1 more
    assert len(plan.stages) == 6 + 3 + 1
    assert plan.stage_uses == 2 * 5 + 2 + 3 + 2
    # DMT's replay is a prefix of the stage-1 rows of each specialist
    k14 = next(r for r in dmt if r.params["k"] == 0.25)
    stage1 = {e.id for e in k14.stages[0].mixture.examples}
    replay = [e for e in k14.stages[1].mixture.examples if e.meta["source"] != "general"]
    assert len(replay) == 32 and {e.id for e in replay} <= stage1


def test_plan_prints_rows_per_source_and_unique_vs_naive_tokens(tmp_path, capsys):
    p = tmp_path / "s.yaml"
    p.write_text(BASE + "amounts: [1/4, 1]\nstrategies: [{name: dmt, params: {k: [1/16, 1/4]}}]\n")
    assert main(["plan", str(p)]) == 0
    out = capsys.readouterr().out
    assert "unique" in out and "naive" in out and "saved by shared prefixes" in out
    assert "dmt k=1/16 1/4" in out


def test_designs_in_examples_plan(capsys):
    from pathlib import Path

    ex = Path(__file__).parents[1] / "examples"
    for name, expect in {"mini_dmt_ratio": "math 1/16 + code 1/16 + general 1", "mini_code_proportion": "code 25%",
                         "mini_belle_scaling": "300 rows pooled", "mini_dmt_strategies": "dmt k=1/16",
                         "mini_dmt": "dmt k=1/4 1"}.items():
        assert main(["plan", str(ex / f"{name}.yaml")]) == 0, name
        assert expect in capsys.readouterr().out, name


def test_a_strategy_can_be_kept_to_some_amounts_and_still_shares_stages(tmp_path):
    plan = plan_of(tmp_path, """\
        amounts: [1/4, 1]
        strategies:
          - single
          - {name: sequential, params: {order: [code, math, general]}, amounts: [1]}
        """)
    labels = [r.label for r in plan.runs]
    assert "sequential 1" in labels and "sequential 1/4" not in labels
    seq = next(r for r in plan.runs if r.label == "sequential 1")
    single_code = next(r for r in plan.runs if r.label == "single code 1")
    assert seq.stages[0].stage_id == single_code.checkpoint_id  # sequential's code stage is `single code 1`


def test_labels_name_the_sources_only_where_two_entries_differ_in_them(tmp_path):
    plan = plan_of(tmp_path, """\
        amounts: [1]
        strategies:
          - {name: multitask, sources: [math, code]}
          - {name: multitask, sources: [math, general]}
          - {name: mixed_sequential, sources: [math, code, general]}
        """)
    assert [r.label for r in plan.runs][1:] == ["multitask math+code 1", "multitask math+general 1", "mixed_sequential 1"]


def test_plan_is_deterministic(tmp_path):
    a = plan_of(tmp_path, "amounts: [1/4, 1]\nstrategies: [multitask, single]\n")
    b = plan_of(tmp_path, "amounts: [1/4, 1]\nstrategies: [multitask, single]\n")
    assert [r.run_id for r in a.runs] == [r.run_id for r in b.runs]
    assert [s.mixture.manifest for s in a.stages.values()] == [s.mixture.manifest for s in b.stages.values()]


def test_stage_id_captures_what_the_model_starts_from(tmp_path, monkeypatch):
    extra = "amounts: [1]\nstrategies: [multitask]\n"
    first = plan_of(tmp_path, extra).runs[1].stages[0].stage_id
    assert plan_of(tmp_path, extra).runs[1].stages[0].stage_id == first
    # the built-in model's recipe version
    monkeypatch.setitem(models.BUILDERS, "tiny", ("tiny-v999", models.BUILDERS["tiny"][1]))
    assert plan_of(tmp_path, extra).runs[1].stages[0].stage_id != first
    monkeypatch.undo()
    # the dtype `auto` resolves to on this device
    monkeypatch.setattr(models, "_dtype", lambda dtype, device: "bfloat16")
    assert plan_of(tmp_path, extra).runs[1].stages[0].stage_id != first
    monkeypatch.undo()
    # a trainer change
    import sftmix.study.plan as plan_mod

    monkeypatch.setattr(plan_mod, "TRAINER_VERSION", 999)
    assert plan_of(tmp_path, extra).runs[1].stages[0].stage_id != first


def test_local_model_directory_content_and_hub_revision_change_the_stage_id(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text('{"a": 1}')
    a = models.fingerprint(str(d))
    (d / "config.json").write_text('{"a": 2}')
    assert models.fingerprint(str(d)) != a
    assert models.fingerprint("org/name", "v1") != models.fingerprint("org/name", "v2")


def test_k_rounding_to_zero_rows_is_a_clear_error(tmp_path):
    from sftmix.errors import StudyError

    with pytest.raises(StudyError, match="rounds to 0 rows"):
        plan_of(tmp_path, "amounts: [1/4]\nstrategies: [{name: dmt, params: {k: 1/256}}]\n")


def test_every_manifest_counts_tokens_under_its_models_tokenizer(tmp_path):
    from sftmix.models import load_tokenizer
    from sftmix.train.tokenize import render

    plan = plan_of(tmp_path, "amounts: [1/4]\nstrategies: [multitask]\n")
    (stage,) = plan.stages.values()
    m = stage.mixture.manifest
    tok = load_tokenizer("tiny")
    want = {name: sum(len(tok(render(tok, e.messages), add_special_tokens=False)["input_ids"])
                      for e in stage.mixture.examples if e.meta["source"] == name) for name in m["sources"]}
    assert {name: info["tokens"] for name, info in m["sources"].items()} == want
    assert m["tokens"] == sum(want.values()) > 0 and m["tokenizer"] == "tiny"


def test_max_new_tokens_inside_task_params_is_honoured_and_twice_is_an_error(tmp_path):
    from sftmix.errors import StudyError

    p = tmp_path / "s.yaml"
    p.write_text(BASE.replace("evaluation: {tasks: [math], limit: 4}",
                              "evaluation: {tasks: [{name: math, params: {max_new_tokens: 33}}], limit: 4}")
                 + "amounts: [1]\n")
    from sftmix.study.plan import build_tasks

    assert build_tasks(load_study(p))[0].gen.max_new_tokens == 33
    p.write_text(BASE.replace("evaluation: {tasks: [math], limit: 4}",
                              "evaluation:\n  tasks: [{name: math, max_new_tokens: 40, params: {max_new_tokens: 33}}]")
                 + "amounts: [1]\n")
    with pytest.raises(StudyError, match=r"s.yaml:\d+.*max_new_tokens is given twice"):
        build_tasks(load_study(p))


def test_the_generation_backend_is_part_of_every_evaluations_key(tmp_path):
    from sftmix.study.steps import wanted_evals

    engine = plan_of(tmp_path, "amounts: [1]\n")
    hf = plan_of(tmp_path, "amounts: [1]\n", ["evaluation.backend=hf"])
    assert hf.backend == "hf" and engine.backend == "engine"
    ids = [sorted(str(v) for v in wanted_evals(p).values()) for p in (engine, hf)]
    assert ids[0] != ids[1]
    # the engine's keys are those stored before backends had a say
    import hashlib
    import json

    from sftmix.study.steps import task_key

    r, t = engine.runs[0], engine.tasks[0]
    before = hashlib.sha256(json.dumps([r.checkpoint_id, task_key(t)], sort_keys=True, default=str).encode())
    assert wanted_evals(engine)[r.run_id][t.name][len(r.stages)] == before.hexdigest()[:20]
    with pytest.raises(Exception, match="backend"):
        plan_of(tmp_path, "amounts: [1]\n", ["evaluation.backend=tgi"])
    import importlib.util

    if importlib.util.find_spec("vllm") is None:  # said when the study loads, not after every stage has trained
        with pytest.raises(Exception, match="evaluation.backend.*vLLM installed"):
            plan_of(tmp_path, "amounts: [1]\n", ["evaluation.backend=vllm"])
