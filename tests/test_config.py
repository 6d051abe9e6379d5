"""Study files: validation, overrides, and one clear error (exit 2, no traceback) for each kind of mistake."""

import subprocess
import sys
import textwrap

import pytest

from sftmix.cli import main
from sftmix.config import load_study
from sftmix.errors import StudyError

GOOD = """\
name: t
models: [tiny]
sources:
  math: {builtin: math, size: 50}
  code: {builtin: code, size: 50}
amounts: [1/4, 1]
strategies: [multitask]
training:
  epochs: 1
  learning_rate: 1.0e-3
evaluation:
  tasks: [math, code]
  limit: 5
"""


def write(tmp_path, text, name="study.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_good_study_loads_with_defaults_and_fractions(tmp_path):
    sf = load_study(write(tmp_path, GOOD))
    s = sf.study
    assert s.amounts == [0.25, 1.0]
    assert s.models[0].name == "tiny" and s.models[0].finetune == "lora"
    assert [t.name for t in s.evaluation.tasks] == ["math", "code"]
    assert s.training.warmup_ratio == 0.03  # default


def test_overrides_set_nested_values_and_out_dir_alias(tmp_path):
    sf = load_study(write(tmp_path, GOOD), ["training.epochs=2", "out_dir=/tmp/x", "amounts=[1/16, 1]", "models=[tiny]"])
    assert sf.study.training.epochs == 2
    assert sf.study.output_dir == "/tmp/x"
    assert sf.study.amounts == [0.0625, 1.0]


def test_source_path_is_relative_to_the_study_file(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "rows.jsonl").write_text('{"instruction": "hi", "output": "hello"}\n')
    text = GOOD.replace("code: {builtin: code, size: 50}", "chat: {path: d/rows.jsonl}")
    sf = load_study(write(tmp_path, text))
    # resolved once, when the study is loaded, against the study file's directory
    assert sf.study.sources["chat"].path == str((tmp_path / "d" / "rows.jsonl").resolve())


def test_output_dir_in_the_file_is_relative_to_it_and_on_the_command_line_to_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    path = write(tmp_path, GOOD + "output_dir: out/here\n")
    assert load_study(path).study.output_dir == str((tmp_path / "out" / "here").resolve())
    assert load_study(path, ["out_dir=elsewhere"]).study.output_dir == str((tmp_path / "sub" / "elsewhere").resolve())
    assert load_study(write(tmp_path, GOOD)).study.output_dir == str((tmp_path / "runs" / "t").resolve())


# Each bad study: (what to change in GOOD, substrings the single error message must contain)
BAD = {
    "missing source file": (("code: {builtin: code, size: 50}", "code: {path: nowhere.jsonl}"), ["sources.code.path", ":5", "file not found"]),
    "unknown format": (("code: {builtin: code, size: 50}", "code: {builtin: code, format: csvish}"), ["sources.code.format", ":5", "alpaca"]),
    "fraction above 1": (("amounts: [1/4, 1]", "amounts: [1/4, 2]"), ["amounts.1", ":6", "upsample"]),
    "unknown strategy": (("strategies: [multitask]", "strategies: [multitasking]"), ["strategies.0.name", ":7", "unknown strategy 'multitasking'", "multitask"]),
    "negative learning rate": (("learning_rate: 1.0e-3", "learning_rate: -0.1"), ["training.learning_rate", ":10", "greater than 0", "-0.1"]),
    "unknown top-level key": (("name: t", "name: t\nepochz: 3"), ["epochz", ":2", "unknown field"]),
    "wrong type": (("epochs: 1", "epochs: three"), ["training.epochs", ":9", "three"]),
    "no models": (("models: [tiny]", "models: []"), ["models", ":2", "at least 1"]),
    "unknown task": (("tasks: [math, code]", "tasks: [math, poetry]"), ["evaluation.tasks.1.name", "unknown task 'poetry'", "gsm8k"]),
    "two origins": (("math: {builtin: math, size: 50}", "math: {builtin: math, path: x.jsonl}"), ["sources.math", ":4", "exactly one of builtin, path or hf"]),
    "invalid yaml": (("amounts: [1/4, 1]", "amounts: [1/4, 1"), ["not valid YAML"]),
    "unknown model": (("models: [tiny]", "models: [gpt-9]"), ["models.0.name", "unknown model 'gpt-9'", "tiny"]),
    "strategy with unknown source": (("strategies: [multitask]", "strategies: [{name: single, sources: [poems]}]"), ["strategies.0.sources", "unknown source 'poems'"]),
    "strategy amount not in the study's": (("strategies: [multitask]", "strategies: [{name: multitask, amounts: [1/2]}]"), ["strategies.0.amounts.0", "0.5 is not one of the study's amounts (0.25, 1)"]),
    "strategy amounts without an amounts list": (("amounts: [1/4, 1]\nstrategies: [multitask]", "pool: {totals: [10]}\nstrategies: [{name: multitask, amounts: [1]}]"), ["strategies.0.amounts", "no such list"]),
    "zero amount": (("amounts: [1/4, 1]", "amounts: [0, 1]"), ["amounts.0", "must be > 0"]),
    "division by zero": (("amounts: [1/4, 1]", "amounts: [1/0, 1]"), ["amounts.0", "division by zero"]),
    "unknown chat template": (("models: [tiny]", "models: [{name: tiny, chat_template: llama9}]"), ["models.0.chat_template", "unknown chat template"]),
    "missing amounts": (("amounts: [1/4, 1]\n", ""), ["amounts", "give exactly one data design"]),
    "two designs": (("amounts: [1/4, 1]", "amounts: [1/4, 1]\npool: {totals: [10]}"), ["pool", "exactly one data design"]),
    "per-source amounts, unknown source": (("amounts: [1/4, 1]", "amounts: {math: [1], poems: [1]}"), ["amounts.poems", "unknown source 'poems'"]),
    "per-source amounts, missing source": (("amounts: [1/4, 1]", "amounts: {math: [1]}"), ["amounts", "missing code"]),
    "shares above 1": (("amounts: [1/4, 1]", "mix: {total: 40, shares: {code: [0.5, 1.5]}}"), ["mix.shares.code.1", "[0, 1]"]),
    "strategy params it does not take": (("strategies: [multitask]", "strategies: [{name: multitask, params: {k: 1}}]"), ["strategies.0.params", "takes no parameter 'k'"]),
    "dmt k outside [0, 1]": (("strategies: [multitask]", "strategies: [{name: dmt, params: {k: [0, 2], general: code}}]"), ["strategies.0.params.k.1", "[0, 1]"]),
    "stage naming an unknown source": (("strategies: [multitask]", "strategies: [{name: stages, stages: [{parts: [math]}, {parts: [poems]}]}]"), ["strategies.0.stages.1.parts", "unknown source 'poems'"]),
    "bad per-stage hyperparameter": (("strategies: [multitask]", "strategies: [{name: stages, stages: [{parts: [math], training: {learning_rate: -1}}]}]"), ["strategies.0.stages.0.training.learning_rate", "greater than 0"]),
    "unknown strategy, mapping form": (("strategies: [multitask]", "strategies: [{name: dmtt}]"), ["strategies.0.name", "unknown strategy 'dmtt'"]),
    "warmup ratio 1": (("learning_rate: 1.0e-3", "learning_rate: 1.0e-3\n  warmup_ratio: 1.5"), ["training.warmup_ratio", "less than 1"]),
    "top level is a list": (None, ["expected a mapping"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_study_gives_one_clear_error_and_exit_2(tmp_path, capsys, case):
    change, needles = BAD[case]
    text = GOOD.replace(*change) if change else "- just\n- a list\n"
    if change:
        assert text != GOOD, "the test's replacement did not apply"
    path = write(tmp_path, text)
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert str(path) in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


def test_bad_override_is_named(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    assert main(["plan", str(path), "training.nonsense=1"]) == 2
    err = capsys.readouterr().err
    assert "training.nonsense" in err and "unknown field" in err
    assert main(["plan", str(path), "training.epochs"]) == 2
    err = capsys.readouterr().err
    assert "training.epochs" in err and "key=value" in err


def test_missing_study_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "study file not found" in capsys.readouterr().err


def test_cli_process_prints_no_traceback(tmp_path):
    path = write(tmp_path, GOOD.replace("learning_rate: 1.0e-3", "learning_rate: -1"))
    proc = subprocess.run([sys.executable, "-m", "sftmix.cli", "run", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "training.learning_rate" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_error_lists_all_problems_in_one_message(tmp_path):
    text = GOOD.replace("epochs: 1", "epochs: -1").replace("learning_rate: 1.0e-3", "learning_rate: 0")
    with pytest.raises(StudyError) as e:
        load_study(write(tmp_path, text))
    msg = str(e.value)
    assert "training.epochs" in msg and "training.learning_rate" in msg


def test_builtin_studies_are_valid_and_share_the_grid():
    from pathlib import Path

    from sftmix.cli import builtin_study

    quick = load_study(builtin_study("quickstart")).study
    tiny = load_study(Path(__file__).parents[1] / "examples" / "tiny.yaml").study
    assert quick.models[0].name == "smollm2-135m-instruct" and tiny.models[0].name == "tiny"
    assert quick.amounts == tiny.amounts
    assert [s.name for s in quick.strategies] == [s.name for s in tiny.strategies]
    assert {k: v.builtin for k, v in quick.sources.items()} == {k: v.builtin for k, v in tiny.sources.items()}
    assert [t.name for t in quick.evaluation.tasks] == [t.name for t in tiny.evaluation.tasks]
