"""The paper-scale studies in examples/ plan as written, on data files in the layouts users supply (small ones,
written here) and the tiny model in place of the papers' backbones: runs, unique and naive training tokens."""

import json
import re
import shutil
from pathlib import Path

import pytest

from sftmix.cli import main

EXAMPLES = Path(__file__).parents[1] / "examples"


def _write_user_files(d: Path, n: int = 512) -> None:
    data = d / "data"
    data.mkdir()
    with open(data / "gsm8k_rft.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"question": f"Ann has {i} apples and buys {i % 7 + 2} more. How many now?",
                                "answer": f"She has {i} + {i % 7 + 2} = {2 * i % 7 + i + 2} apples.\n#### {i + i % 7 + 2}"}) + "\n")
    (data / "code_alpaca_20k.json").write_text(json.dumps([
        {"instruction": f"Write a Python function f{i} that returns {i} times its argument.", "input": "",
         "output": f"def f{i}(x):\n    return {i} * x"} for i in range(n)]))
    conv = []
    for i in range(n):
        if i % 4 == 0:  # some ShareGPT conversations are about code, which the ablation removes
            answer = f"```python\ndef g{i}(a):\n    return a + {i}\n```"
        else:
            answer = f"Here are {i % 5 + 2} ideas for a trip to town number {i}: walk, read and rest."
        conv.append({"id": str(i), "conversations": [{"from": "human", "value": f"Give me ideas, request {i}."},
                                                     {"from": "gpt", "value": answer}]})
    (data / "sharegpt.json").write_text(json.dumps(conv))
    with open(data / "gsm8k_test.jsonl", "w") as f:
        for i in range(20):
            f.write(json.dumps({"question": f"Bo sells {i} pens at 3 dollars each. What does he earn in total?",
                                "answer": f"3 * {i} = {3 * i}\n#### {3 * i}"}) + "\n")
    shutil.copy(EXAMPLES / "judged" / "question.jsonl", data / "mt_bench_question.jsonl")
    shutil.copy(EXAMPLES / "judged" / "eval_set.json", data / "eval_set.json")
    shutil.copy(EXAMPLES / "judged" / "eval_prompt.json", data / "eval_prompt.json")
    with open(data / "code_instructions.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"instruction": f"Write code that prints {i}.", "input": "",
                                "output": f"print({i})"}) + "\n")
    with open(data / "general_instructions.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"instruction": f"Name a colour that goes with number {i}.", "input": "",
                                "output": f"Blue goes well with {i}."}) + "\n")
    with open(data / "belle_train.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"instruction": f"用一句话介绍数字{i}。", "input": "", "output": f"{i}是一个整数。"},
                               ensure_ascii=False) + "\n")


def _tokens(out: str) -> tuple[int, int]:
    m = re.search(r"training tokens: ([\d,]+) unique, ([\d,]+) naive", out)
    assert m, out
    return int(m[1].replace(",", "")), int(m[2].replace(",", ""))


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("examples")
    for name in ("dmt", "dmt_ratio", "code_proportion", "belle_scaling"):
        shutil.copy(EXAMPLES / f"{name}.yaml", d / f"{name}.yaml")
    _write_user_files(d)
    return d


def test_dmt_plans_every_research_question_and_counts_shared_prefixes_once(study_dir, capsys):
    assert main(["plan", str(study_dir / "dmt.yaml"), "models=[tiny]"]) == 0
    out = capsys.readouterr().out
    unique, naive = _tokens(out)
    assert 0 < unique < naive
    for label in ("single math 1/256", "single general 1", "multitask 1/64", "sequential 1", "mixed_sequential 1",
                  "dmt k=1/256 1", "dmt k=1/4 1", "dmt k=1/256, general without code/math"):
        assert label in out, label
    assert "sequential 1/4" not in out  # strategies are compared at the full amount only
    assert "dmt: 28 runs" in out  # base + 15 single + 5 multitask + sequential + mixed seq + 4 dmt + ablation


def test_ratio_code_proportion_and_belle_examples_plan(study_dir, capsys):
    assert main(["plan", str(study_dir / "dmt_ratio.yaml"), "models=[tiny]"]) == 0
    out = capsys.readouterr().out
    assert "math 1/256 + code 1/256 + general 1" in out
    assert main(["plan", str(study_dir / "code_proportion.yaml"), "models=[tiny]", "mix.total=200"]) == 0
    out = capsys.readouterr().out
    assert "code 25%" in out and "code 100%" in out and "seed 2" in out
    assert main(["plan", str(study_dir / "belle_scaling.yaml"), "models=[tiny]", "pool.totals=[100, 300]"]) == 0
    out = capsys.readouterr().out
    assert "300 rows pooled" in out
