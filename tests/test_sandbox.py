import os
import textwrap
import time

import pytest

from sftmix.evaluate.sandbox import ExecResult, protections, run_many, run_program
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
    "code, status",
    [
        ("while True:\n    pass\n", "timeout"),  # burns CPU: CPU time decides
        ("import time\nwhile True:\n    time.sleep(1)\n", "wall_timeout"),  # idle: only the wall clock stops it
    ],
    ids=["busy", "sleeping"],
)
def test_infinite_loop_times_out(code, status):
    result = run_program(code, timeout=1.0)
    assert not result.passed
    assert result.status == status
    assert result.wall_timeout == (status == "wall_timeout")
    # On its own time (wall time less the time it queued for a CPU on a busy machine).
    assert result.seconds - result.queued_seconds < 1.0 + 1.0
    assert result.cpu_seconds < 1.0 + 1.0
    if status == "timeout":
        assert result.cpu_seconds >= 0.9


def test_cpu_time_not_wall_time_decides():
    # Two CPU-bound programs per core, each needing ~0.6 s of CPU under a 1 s limit: on a loaded machine their
    # wall time passes the limit, yet none may time out.
    work = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6:\n    pass\nprint('done')\n"
    n = 2 * (os.cpu_count() or 1)
    results = run_many([work] * n, timeout=1.0, workers=n)
    assert [r.status for r in results] == ["passed"] * n, [(r.status, r.seconds, r.cpu_seconds) for r in results]


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


def _marked(marker: str) -> list[int]:
    pids = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if marker.encode() in fh.read() and _alive(int(pid)):
                    pids.append(int(pid))
        except (OSError, ValueError):
            pass
    return pids


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
@pytest.mark.parametrize("new_session", [False, True])
def test_background_processes_are_killed(new_session):
    # The program's pids are those of its own pid namespace, so look for a marker in the host's process table.
    marker = f"sftmix-bg-{os.getpid()}-{new_session}"
    code = (f"import subprocess\nsubprocess.Popen(['sh', '-c', 'sleep 30; : {marker}'], "
            f"start_new_session={new_session})\nimport time\ntime.sleep(0.2)\nprint('started')\n")
    result = run_program(code)
    assert result.passed, result.stderr
    if new_session and not protections()["processes"]:
        pytest.skip("without a pid namespace a setsid() process escapes the kill")
    deadline = time.monotonic() + 2.0
    while _marked(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _marked(marker) == []


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


def test_protections_are_reported():
    found = protections()
    expected = {"network", "filesystem", "processes", "process_limit", "drop_privileges", "resource_limits",
                "scrubbed_env", "cpu_time_limit"}
    assert set(found) == expected
    assert found["resource_limits"] and found["scrubbed_env"] and found["cpu_time_limit"]


@pytest.fixture
def fallback_sandbox(monkeypatch):
    from sftmix.evaluate import sandbox

    sandbox._shutdown()
    monkeypatch.setattr(sandbox, "_mode_for_tests", "fallback")
    monkeypatch.setattr(sandbox, "_warned", False)
    yield sandbox
    sandbox._shutdown()


def test_fallback_without_namespaces_still_scores_and_warns_once(fallback_sandbox, caplog):
    sandbox = fallback_sandbox
    with caplog.at_level("WARNING", logger="sftmix.evaluate.sandbox"):
        found = sandbox.protections()
        results = sandbox.run_many(
            ["print('ok')\n", "assert False\n", "import os\nos._exit(0)\n", "while True:\n    pass\n",
             "import time\ntime.sleep(30)\n"],
            timeout=1.0, workers=3,
        )
    assert not found["network"] and not found["filesystem"] and not found["processes"]
    assert [r.status for r in results] == ["passed", "failed", "failed", "timeout", "wall_timeout"]
    warnings = [r for r in caplog.records if "WITHOUT" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "network" in warnings[0].getMessage()


def test_a_dead_helper_is_replaced():
    from sftmix.evaluate import sandbox

    assert run_program("print(1)\n").passed
    with sandbox._pool_lock:
        idle = list(sandbox._pool)
    assert idle
    for zygote in idle:
        zygote.proc.kill()
        zygote.proc.wait()
    assert run_program("print(2)\n").stdout == "2\n"
