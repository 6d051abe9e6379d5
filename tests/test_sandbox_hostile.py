"""Hostile programs against the sandbox: each must score as failed, in time, and leave the host untouched.

All cases run in one parallel ``run_many`` call (module fixture); each test then checks one case's result and
the host-side evidence (canary files, a listener on 127.0.0.1, leftover processes, the test runner itself).
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from sftmix.evaluate import sandbox
from sftmix.evaluate.sandbox import protections, run_many, run_program

TIMEOUT = 2.0
MEMORY_MB = 256
TAG = "sftmixhostile" + secrets.token_hex(4)  # marks every file and process the cases try to leave behind
SECRET = "sk-hostile-" + secrets.token_hex(8)
ISOLATED = all(protections().values())

# Where the cases try to leave canaries on the host. None of these may exist afterwards.
HOME_CANARY = Path.home() / f".{TAG}-home"
TMP_CANARY = Path(tempfile.gettempdir()) / f"{TAG}-tmp"
SHM_CANARY = Path("/dev/shm") / f"{TAG}-shm"
VAR_TMP_CANARY = Path("/var/tmp") / f"{TAG}-vartmp"
REPO_CANARY = Path.cwd() / f"{TAG}-cwd"
ROOT_CANARY = Path("/") / f"{TAG}-root"
ESCAPE_CANARY = Path.cwd() / f"{TAG}-unshare"
SYMLINK_VICTIM = Path.cwd() / f"{TAG}-victim.txt"
HOME_SECRET = Path.home() / f".{TAG}-secret"
CANARIES = [HOME_CANARY, TMP_CANARY, SHM_CANARY, VAR_TMP_CANARY, REPO_CANARY, ROOT_CANARY, ESCAPE_CANARY]

FAIL = "\nassert False, 'a hostile program must not pass'\n"


def _check_program(solution: str, preamble: str = "") -> str:
    """A HumanEval-shaped program whose solution is wrong: only trickery could make it pass."""
    return textwrap.dedent(preamble) + textwrap.dedent(solution) + textwrap.dedent(
        """

        def check(candidate):
            assert candidate(2) == 4
            assert candidate(5) == 10

        check(double)
        """
    )


WRONG = "def double(x):\n    return 0\n"


def _cases(port: int) -> dict[str, tuple[str, bool]]:
    """name -> (program, needs full isolation to be safe to run here)."""
    sandbox_source = os.path.abspath(sandbox.__file__)
    return {
        # --------------------------------------------------------------- resource exhaustion
        "fork_bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", True),
        "fork_bomb_counted": (textwrap.dedent("""
            import os, time
            n = 0
            while n < 10000:
                try:
                    pid = os.fork()
                except OSError:
                    break
                if pid == 0:
                    time.sleep(100)
                    os._exit(0)
                n += 1
            print("forked", n)
            """) + FAIL, True),
        "fork_busy_children": (
            "import os\nfor _ in range(8):\n    if os.fork() == 0:\n        break\nwhile True:\n    pass\n", True),
        "memory_bomb": ("x = []\nwhile True:\n    x.append(bytearray(64 * 1024 * 1024))\n", False),
        "memory_bomb_children": (textwrap.dedent("""
            import os
            for _ in range(20):
                if os.fork() == 0:
                    break
            x = []
            while True:
                try:
                    x.append(b"x" * (16 * 1024 * 1024))
                except MemoryError:
                    pass
            """), True),
        "thread_bomb": (textwrap.dedent("""
            import threading, time
            threads = []
            try:
                while len(threads) < 10000:
                    t = threading.Thread(target=time.sleep, args=(100,), daemon=True)
                    t.start()
                    threads.append(t)
            finally:
                print("threads", len(threads))
            """) + FAIL, False),
        "infinite_loop": ("while True:\n    pass\n", False),
        "deep_recursion": ("import sys\nsys.setrecursionlimit(10**6)\ndef f(n):\n    return f(n + 1)\nf(0)\n", False),
        "sleep_past_timeout": ("import time\ntime.sleep(3600)\n" + FAIL, False),
        "trickle_output": ("import time\nwhile True:\n    print('.', flush=True)\n    time.sleep(0.1)\n", False),
        "ignore_sigterm_and_xcpu": (
            "import signal\nfor s in (signal.SIGTERM, signal.SIGXCPU, signal.SIGINT, signal.SIGHUP):\n"
            "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass\n", False),
        "output_flood": ("while True:\n    print('x' * 10000)\n", False),
        "huge_stderr": ("import sys\nsys.stderr.write('e' * (64 * 1024 * 1024))\n" + FAIL, False),
        "disk_fill": (textwrap.dedent("""
            i = 0
            while True:
                with open(f"fill{i}", "wb") as fh:
                    fh.write(b"0" * (4 * 1024 * 1024))
                i += 1
            """), False),
        "fd_exhaustion": (
            "import os\nfds = []\nwhile True:\n    fds.append(os.open('/dev/null', os.O_RDONLY))\n", False),
        # --------------------------------------------------------------- network
        "connect_localhost": (textwrap.dedent(f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=1).sendall(b"{TAG}")
                print("CONNECTED")
            except OSError as exc:
                print("refused", exc)
            """) + FAIL, True),
        "connect_internet": (textwrap.dedent("""
            import socket
            for host in ("1.1.1.1", "8.8.8.8"):
                try:
                    socket.create_connection((host, 53), timeout=1)
                    print("CONNECTED")
                except OSError as exc:
                    print("refused", exc)
            try:
                print(socket.getaddrinfo("example.com", 80))
            except OSError as exc:
                print("no dns", exc)
            """) + FAIL, False),
        # --------------------------------------------------------------- host files
        "write_home": (f"open({str(HOME_CANARY)!r}, 'w').write('pwned')\n" + FAIL, True),
        "write_system_tmp": (f"open({str(TMP_CANARY)!r}, 'w').write('pwned')\n" + FAIL, True),
        "write_dev_shm": (f"open({str(SHM_CANARY)!r}, 'w').write('pwned')\n" + FAIL, True),
        "write_var_tmp": (f"open({str(VAR_TMP_CANARY)!r}, 'w').write('pwned')\n" + FAIL, True),
        "chdir_and_write": (textwrap.dedent(f"""
            import os
            for d, name in (({str(REPO_CANARY.parent)!r}, {REPO_CANARY.name!r}), ("/", {ROOT_CANARY.name!r})):
                try:
                    os.chdir(d)
                    open(name, "w").write("pwned")
                    print("WROTE", d)
                except OSError as exc:
                    print("refused", exc)
            """) + FAIL, True),
        "symlink_escape": (textwrap.dedent(f"""
            import os
            os.symlink({str(SYMLINK_VICTIM)!r}, "link")
            os.symlink("/", "root")
            for path in ("link", "root/" + {str(SYMLINK_VICTIM)!r}.lstrip("/")):
                try:
                    open(path, "w").write("pwned")
                    print("WROTE", path)
                except OSError as exc:
                    print("refused", exc)
            """) + FAIL, True),
        "unshare_remount_rw": (textwrap.dedent(f"""
            import subprocess
            cmd = "mount -o remount,rw / ; mount -o remount,rw,bind / ; echo pwned > {ESCAPE_CANARY}"
            for argv in (["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", cmd], ["sh", "-c", cmd]):
                try:
                    print(subprocess.run(argv, capture_output=True, text=True, timeout=5))
                except Exception as exc:
                    print("refused", exc)
            """) + FAIL, True),
        "setuid_and_mount": (textwrap.dedent(f"""
            import os, subprocess
            touch = "touch {ESCAPE_CANARY}"
            for argv in (["su", "-c", touch], ["sudo", "-n", "sh", "-c", touch],
                         ["sh", "-c", "mount -t tmpfs none /mnt && " + touch]):
                try:
                    print(subprocess.run(argv, capture_output=True, text=True, timeout=5))
                except Exception as exc:
                    print("refused", exc)
            try:
                os.setuid(0)
                open({str(ESCAPE_CANARY)!r}, "w").write("pwned")
                print("WROTE")
            except OSError as exc:
                print("refused", exc)
            """) + FAIL, True),
        "write_proc_and_devices": (textwrap.dedent("""
            for path in ("/proc/sys/vm/drop_caches", "/proc/sysrq-trigger", "/proc/sys/kernel/panic", "/dev/vda",
                         "/dev/sda", "/dev/mem", "/dev/kmsg", "/sys/kernel/mm/transparent_hugepage/enabled"):
                try:
                    with open(path, "w") as fh:
                        fh.write("0")
                    print("WROTE", path)
                except OSError as exc:
                    print("refused", path, type(exc).__name__)
            """) + FAIL, True),
        # --------------------------------------------------------------- secrets and processes
        "read_env_secret": (textwrap.dedent("""
            import os
            print(dict(os.environ))
            for path in ("/proc/self/environ", "/proc/1/environ", f"/proc/{os.getppid()}/environ"):
                try:
                    print(path, open(path, "rb").read())
                except OSError as exc:
                    print("refused", path, type(exc).__name__)
            """) + FAIL, False),
        "read_home_secret": (textwrap.dedent(f"""
            for path in ({str(HOME_SECRET)!r}, "/etc/shadow"):
                try:
                    print(open(path).read())
                except OSError as exc:
                    print("refused", path, type(exc).__name__)
            """) + FAIL, True),
        "read_parent_proc": (textwrap.dedent("""
            import os
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        print(pid, open(f"/proc/{pid}/cmdline", "rb").read())
                    except OSError:
                        pass
            print("ppid", os.getppid())
            """) + FAIL, True),
        "setsid_daemon": (textwrap.dedent(f"""
            import os, subprocess, sys
            subprocess.Popen(["sh", "-c", "sleep 300; : {TAG}"], start_new_session=True)
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "{TAG}"],
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.execvp("sh", ["sh", "-c", "sleep 300; : {TAG}"])
                os._exit(0)
            """) + FAIL, True),
        "kill_parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\n" + FAIL,
                        True),
        "kill_everything": ("import os, signal\nos.kill(-1, signal.SIGKILL)\n" + FAIL, True),
        "kill_process_group": ("import os, signal\nos.killpg(os.getpgrp(), signal.SIGKILL)\n" + FAIL, True),
        "kill_group_zero": ("import os, signal\nos.kill(0, signal.SIGKILL)\n" + FAIL, True),
        "ptrace_and_ctypes": (textwrap.dedent("""
            import ctypes
            libc = ctypes.CDLL(None)
            print(libc.ptrace(16, 1, 0, 0))
            """) + FAIL, False),
        # --------------------------------------------------------------- faking a pass
        "os_exit_before_asserts": (_check_program(WRONG + "import os\nos._exit(0)\n"), False),
        "sys_exit_before_asserts": (_check_program(WRONG + "import sys\nsys.exit(0)\n"), False),
        "print_fake_success": (_check_program(
            WRONG + "print('passed')\nprint('All tests passed')\nprint('0123456789abcdef0123456789abcdef')\n"
            "import os\nos._exit(0)\n"), False),
        "patch_checker": (_check_program(
            WRONG + textwrap.dedent("""
                import builtins, sys
                builtins.check = lambda candidate: None
                def _skip(frame, event, arg):
                    if event == "line" and frame.f_code.co_name == "check":
                        frame.f_lineno = frame.f_code.co_firstlineno + 3
                    return _skip
                try:
                    sys.settrace(_skip)
                except Exception as exc:
                    print("refused", exc)
                sys.excepthook = lambda *a: print("passed")
                """)), False),
        "read_harness_source_for_nonce": (_check_program(WRONG + textwrap.dedent(f"""
            import os, re, sys
            found = set()
            for path in ({sandbox_source!r}, __file__, sys.argv[0]):
                try:
                    found |= set(re.findall(r"[0-9a-f]{{32}}", open(path).read()))
                except OSError:
                    pass
            for hexstr in found:
                print(hexstr)
            os._exit(0)
            """)), False),
        "introspect_for_nonce": (_check_program(WRONG + textwrap.dedent("""
            import gc, os, re, sys
            found = set()
            frame = sys._getframe()
            while frame is not None:
                for value in list(frame.f_locals.values()) + list(frame.f_globals.values()):
                    if isinstance(value, dict):
                        value = list(value.values())
                    found |= set(re.findall(r"[0-9a-f]{32}", repr(value)))
                frame = frame.f_back
            for attempt in (gc.get_objects, lambda: open("/proc/self/mem", "rb"), lambda: os.open("mem", 0)):
                try:
                    attempt()
                    print("ALLOWED")
                except Exception as exc:
                    print("refused", exc)
            for hexstr in found:
                print(hexstr)
            sys.stdout.flush()
            os._exit(0)
            """)), False),
        "sys_modules_tampering": (_check_program(WRONG, textwrap.dedent("""
            import io, sys
            class Fake(io.StringIO):
                def write(self, s):
                    return super().write(s)
            sys.modules["sys"].stdout = Fake()
            sys.modules["os"] = None
            sys.modules["builtins"].AssertionError = type("AssertionError", (Exception,), {})
            """)), False),
    }


@pytest.fixture(scope="module")
def outcome():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    old_secret = os.environ.get("SFTMIX_HOSTILE_SECRET")
    os.environ["SFTMIX_HOSTILE_SECRET"] = SECRET  # inherited by the sandbox helpers: must not reach programs
    sandbox._shutdown()  # start fresh helpers, so they would see the secret
    HOME_SECRET.write_text(SECRET)
    SYMLINK_VICTIM.write_text("original")
    cases = {name: code for name, (code, dangerous) in _cases(port).items() if ISOLATED or not dangerous}
    try:
        started = time.monotonic()
        results = run_many(list(cases.values()), timeout=TIMEOUT, memory_mb=MEMORY_MB, workers=8)
        elapsed = time.monotonic() - started
        try:
            conn, _ = listener.accept()
            connected = True
            conn.close()
        except BlockingIOError:
            connected = False
        yield {"results": dict(zip(cases, results)), "elapsed": elapsed, "connected": connected, "port": port}
    finally:
        listener.close()
        if old_secret is None:
            os.environ.pop("SFTMIX_HOSTILE_SECRET", None)
        else:
            os.environ["SFTMIX_HOSTILE_SECRET"] = old_secret
        for path in [HOME_SECRET, SYMLINK_VICTIM, *CANARIES]:
            path.unlink(missing_ok=True)


CASE_NAMES = list(_cases(0))


def test_suite_is_large_enough():
    assert len(CASE_NAMES) >= 30


@pytest.mark.parametrize("name", CASE_NAMES)
def test_hostile_case_fails_in_time(outcome, name):
    if name not in outcome["results"]:
        pytest.skip("needs namespaces to run safely here")
    result = outcome["results"][name]
    assert not result.passed, f"{name} passed:\n{result.stdout}\n{result.stderr}"
    assert result.status in {"failed", "timeout", "wall_timeout", "memory"}, result.status
    # Within timeout + 1 s of the program's own time (wall time less the time it queued for a CPU on this
    # shared machine), and never more than timeout + 1 s of CPU time.
    assert result.seconds - result.queued_seconds <= TIMEOUT + 1.0, (result.seconds, result.queued_seconds)
    assert result.cpu_seconds <= TIMEOUT + 1.0
    assert len(result.stdout) < 10_000 and len(result.stderr) < 10_000


# CPU-bound cases end on CPU time; on a machine loaded far beyond its cores the generous hard wall limit may
# come first, which is reported as a wall timeout.
BUSY = {"timeout", "wall_timeout"}
EXPECTED_STATUS = {
    "fork_bomb": BUSY,
    "fork_busy_children": BUSY,
    "infinite_loop": BUSY,
    "ignore_sigterm_and_xcpu": BUSY,
    "sleep_past_timeout": {"wall_timeout"},
    "trickle_output": {"wall_timeout"},
    "memory_bomb": {"memory"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED_STATUS))
def test_status_names_the_cause(outcome, name):
    if name not in outcome["results"]:
        pytest.skip("needs namespaces to run safely here")
    assert outcome["results"][name].status in EXPECTED_STATUS[name]


def test_memory_bomb_in_children_is_stopped(outcome):
    if "memory_bomb_children" not in outcome["results"]:
        pytest.skip("needs namespaces")
    assert outcome["results"]["memory_bomb_children"].status in {"memory", "timeout"}


def test_process_and_thread_limits(outcome):
    if ISOLATED:
        forked = int(outcome["results"]["fork_bomb_counted"].stdout.split()[-1])
        assert 0 < forked < sandbox._NPROC
    threads = int(outcome["results"]["thread_bomb"].stdout.split()[-1])
    assert 0 < threads < 1000


def test_no_network(outcome):
    if "connect_localhost" not in outcome["results"]:
        pytest.skip("needs namespaces")
    assert not outcome["connected"], "a sandboxed program reached a listener on 127.0.0.1"
    assert "CONNECTED" not in outcome["results"]["connect_localhost"].stdout
    assert "CONNECTED" not in outcome["results"]["connect_internet"].stdout


def test_host_files_untouched(outcome):
    if not ISOLATED:
        pytest.skip("needs namespaces")
    for path in CANARIES:
        assert not path.exists(), f"a sandboxed program wrote {path}"
    assert SYMLINK_VICTIM.read_text() == "original"
    for name in ("chdir_and_write", "symlink_escape", "write_proc_and_devices", "setuid_and_mount"):
        out = outcome["results"][name].stdout
        assert "WROTE" not in out, out


def test_secrets_not_visible(outcome):
    for name in ("read_env_secret", "read_home_secret"):
        if name in outcome["results"]:
            result = outcome["results"][name]
            assert SECRET not in result.stdout + result.stderr, name
    assert "root:" not in outcome["results"].get("read_home_secret", run_program("")).stdout


def test_no_view_of_host_processes(outcome):
    if not ISOLATED:
        pytest.skip("needs namespaces")
    out = outcome["results"]["read_parent_proc"].stdout
    # It sees only itself: the first process (pid 1) of its own pid namespace.
    pids = [line.split()[0] for line in out.splitlines() if line[:1].isdigit()]
    assert pids == ["1"], out
    assert "pytest" not in out, out
    assert out.splitlines()[-1] == "ppid 0"  # its parent is outside its pid namespace


def _leftovers() -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if TAG.encode() in cmdline:
            found.append(int(pid))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_no_leftover_processes(outcome):
    if not ISOLATED:
        pytest.skip("needs namespaces")
    deadline = time.monotonic() + 2.0
    while _leftovers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _leftovers() == []


def test_faked_passes_fail(outcome):
    for name in ("os_exit_before_asserts", "sys_exit_before_asserts", "print_fake_success", "patch_checker",
                 "read_harness_source_for_nonce", "introspect_for_nonce", "sys_modules_tampering"):
        assert outcome["results"][name].status == "failed", name
    assert "ALLOWED" not in outcome["results"]["introspect_for_nonce"].stdout


def test_runner_and_sandbox_survive(outcome):
    assert outcome["elapsed"] < 60
    # The test runner is alive (we are running) and the sandbox still serves programs.
    assert run_program("print('still here')\n").stdout == "still here\n"
    assert run_many(["assert 1\n", "assert 0\n"], workers=2)[0].passed


def test_the_same_programs_pass_when_correct():
    # The trickery above fails for being wrong, not because the harness rejects everything.
    right = "def double(x):\n    return 2 * x\n"
    assert run_program(_check_program(right), timeout=TIMEOUT).passed
    assert not run_program(_check_program(WRONG), timeout=TIMEOUT).passed
    assert sys.executable  # the runner's interpreter is intact


OTHER_MODE_CASES = ["write_home", "write_system_tmp", "write_dev_shm", "chdir_and_write", "symlink_escape",
                    "unshare_remount_rw", "connect_localhost", "read_env_secret", "read_parent_proc", "setsid_daemon",
                    "kill_parent", "kill_group_zero", "os_exit_before_asserts", "print_fake_success",
                    "introspect_for_nonce", "sleep_past_timeout", "output_flood"]


@pytest.mark.parametrize("mode", ["userns", "bwrap"])
def test_weaker_modes_hold_too(mode, monkeypatch):
    """The user-namespace mode (non-root users) and the bubblewrap mode, forced on this machine."""
    if mode == "bwrap" and not sandbox._ZygoteState().bwrap:
        pytest.skip("bubblewrap is not installed")
    sandbox._shutdown()
    monkeypatch.setattr(sandbox, "_mode_for_tests", mode)
    try:
        found = protections()
        if not (found["network"] and found["filesystem"] and found["processes"]):
            pytest.skip(f"the {mode} mode does not work here")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        SYMLINK_VICTIM.write_text("original")
        os.environ["SFTMIX_HOSTILE_SECRET"] = SECRET
        try:
            cases = _cases(listener.getsockname()[1])
            codes = [cases[name][0] for name in OTHER_MODE_CASES] + ["print('fine')\n"]
            results = run_many(codes, timeout=TIMEOUT, memory_mb=MEMORY_MB, workers=6)
            with pytest.raises(BlockingIOError):
                listener.accept()
            for name, result in zip(OTHER_MODE_CASES, results):
                assert not result.passed and result.status != "error", (name, result)
                # Writes are judged by the host's canaries below, not by the program's own "WROTE": a checkout
                # under /tmp is, inside the sandbox, a path in its private tmpfs, where writing harms nothing.
                assert SECRET not in result.stdout, (name, result.stdout)
            assert results[-1].passed and results[-1].stdout == "fine\n", results[-1]
            for path in CANARIES:
                assert not path.exists(), path
            assert SYMLINK_VICTIM.read_text() == "original"
            deadline = time.monotonic() + 2.0
            while _leftovers() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _leftovers() == []
        finally:
            listener.close()
            os.environ.pop("SFTMIX_HOSTILE_SECRET", None)
            for path in [SYMLINK_VICTIM, *CANARIES]:
                path.unlink(missing_ok=True)
    finally:
        sandbox._shutdown()
