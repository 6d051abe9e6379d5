import os
import textwrap
import time

import pytest

from sftmix.evaluate.sandbox import ExecResult, run_many, run_program
from sftmix.evaluate.scoring import code_program, load_humaneval


def test_correct_program_passes():
    result = run_program("def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\nprint('hello')\n")
    assert isinstance(result, ExecResult)
    assert result.passed and result.status == "passed"
    assert "hello" in result.stdout
    assert result.seconds > 0


def test_assertion_failure_fails():
    result = run_program("def add(a, b):\n    return a - b\n\nassert add(2, 3) == 5\n")
    assert not result.passed
    assert result.status == "failed"
    assert "AssertionError" in result.stderr


def test_syntax_error_fails():
    result = run_program("def broken(:\n    pass\n")
    assert result.status == "failed"
    assert "SyntaxError" in result.stderr


@pytest.mark.parametrize(
    "code",
    [
        "while True:\n    pass\n",  # burns CPU
        "import time\nwhile True:\n    time.sleep(1)\n",  # idle, only the wall clock stops it
    ],
    ids=["busy", "sleeping"],
)
def test_infinite_loop_times_out(code):
    started = time.monotonic()
    result = run_program(code, timeout=1.0)
    elapsed = time.monotonic() - started
    assert not result.passed
    assert result.status == "timeout"
    assert elapsed < 1.0 + 2.0


def test_memory_bomb_does_not_pass():
    result = run_program("x = bytearray(2 * 1024 ** 3)\nprint(len(x))\n", memory_mb=256)
    assert not result.passed
    assert result.status == "memory"


@pytest.mark.parametrize(
    "early_exit",
    ["import sys\nsys.exit(0)", "import os\nos._exit(0)", "quit()", "raise SystemExit"],
)
def test_early_successful_exit_does_not_pass(early_exit):
    code = f"def f():\n    return 1\n\n{early_exit}\nassert f() == 2\n"
    result = run_program(code)
    assert not result.passed
    assert result.status == "failed"


def test_parent_secrets_are_not_visible(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("HF_TOKEN", "hf-test")
    code = textwrap.dedent(
        """
        import os
        print(sorted(os.environ))
        print(os.environ.get("OPENAI_API_KEY"), os.environ.get("HF_TOKEN"))
        assert "OPENAI_API_KEY" not in os.environ
        assert "HF_TOKEN" not in os.environ
        """
    )
    result = run_program(code)
    assert result.passed, result.stderr
    assert "sk-test" not in result.stdout and "hf-test" not in result.stdout


def test_child_files_stay_out_of_parent_cwd_and_are_deleted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = textwrap.dedent(
        """
        import os
        with open("sandbox_marker.txt", "w") as fh:
            fh.write("x")
        print(os.getcwd())
        """
    )
    result = run_program(code)
    assert result.passed, result.stderr
    child_cwd = result.stdout.strip().splitlines()[-1]
    assert not (tmp_path / "sandbox_marker.txt").exists()
    assert os.path.realpath(child_cwd) != os.path.realpath(tmp_path)
    assert not os.path.exists(child_cwd)  # the temporary directory was removed


def test_stdin_is_empty():
    # input() must fail at once instead of waiting on the parent's terminal.
    result = run_program("input()\n", timeout=5.0)
    assert result.status == "failed"
    assert "EOFError" in result.stderr


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a killed child may linger as a zombie of its new parent


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_background_processes_are_killed():
    code = "import subprocess\nproc = subprocess.Popen(['sleep', '30'])\nprint(proc.pid)\n"
    result = run_program(code)
    assert result.passed, result.stderr
    pid = int(result.stdout.split()[0])
    deadline = time.monotonic() + 2.0
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_output_flood_is_capped():
    result = run_program("while True:\n    print('x' * 1000)\n", timeout=10.0)
    assert not result.passed
    assert result.status == "failed"  # killed by the file-size limit, long before the timeout
    assert result.seconds < 10.0
    assert len(result.stdout) < 10_000


def test_run_many_preserves_order():
    # Later programs finish first, so completion order is the reverse of input order.
    programs = [f"import time\ntime.sleep({0.1 * (5 - i):.1f})\nprint('program', {i})\n" for i in range(5)]
    programs.append("assert False\n")
    results = run_many(programs, workers=6)
    assert [r.stdout.strip() for r in results[:5]] == [f"program {i}" for i in range(5)]
    assert [r.passed for r in results] == [True] * 5 + [False]


def test_run_many_empty_and_progress():
    assert run_many([]) == []
    results = run_many(["print(1)\n", "assert 0\n"], workers=2, progress=True)
    assert [r.status for r in results] == ["passed", "failed"]


def test_humaneval_canonical_solutions_pass_and_stubs_fail():
    problems = load_humaneval(limit=10)
    assert len(problems) == 10
    canonical = [code_program(p, p["canonical_solution"]) for p in problems]
    stubs = [code_program(p, "    return None\n") for p in problems]
    results = run_many(canonical + stubs, timeout=10.0)
    for problem, result in zip(problems, results[:10]):
        assert result.passed, f"{problem['task_id']}: {result.status}\n{result.stderr}"
    for problem, result in zip(problems, results[10:]):
        assert not result.passed, problem["task_id"]
