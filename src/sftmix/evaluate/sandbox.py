"""Run untrusted, model-generated Python programs in a limited child process.

This is the only place in sftmix where model-generated code is executed; it
never runs in the caller's interpreter.

What the sandbox protects against
---------------------------------
* Accidental damage and runaway programs, the usual failure modes of a model
  that writes buggy code:
  - infinite loops and slow code: a wall-clock timeout kills the whole process
    group, and RLIMIT_CPU stops a CPU-bound child even if the parent stalls;
  - memory bombs: RLIMIT_AS makes large allocations fail (reported as
    "memory" when the child reports a MemoryError);
  - huge files or output floods: RLIMIT_FSIZE caps every file the child
    writes, including its captured stdout/stderr, so the parent's memory and
    disk stay bounded; core dumps are disabled;
  - stray files: the child's working directory (also its HOME and TMPDIR) is a
    fresh temporary directory deleted afterwards;
  - leaked secrets: the child gets a minimal whitelisted environment, so API
    keys and tokens in the parent environment are not visible to it;
  - faked success: a program that calls ``sys.exit(0)``/``os._exit(0)`` before
    its checks exits with code 0 but never reaches the appended line that
    prints a per-call random nonce, so it does not count as passed;
  - site/user configuration: ``python -I`` ignores PYTHON* variables and the
    user site-packages directory, and does not put the script's directory on
    ``sys.path``.

What it does NOT protect against
--------------------------------
It is an ordinary process with resource limits, not a VM or a container.
The child runs as the same user as the caller: it can read any file that user
can read, write outside its temporary directory (files are only size-capped),
open network connections (there is no network namespace), and a process that
calls ``setsid()`` can escape the process-group kill. A program written to
attack the harness could also find the nonce by reading its own source. Run
evaluations inside a container or VM when the generated code may be hostile.
Note that ``-I`` also ignores PYTHONHASHSEED, so str hashing (and thus set
iteration order) is still randomized in the child; the variable is set anyway
for any non-isolated interpreter the program itself starts.
"""

from __future__ import annotations

import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

# How much of stdout/stderr is kept in an ExecResult (the tail: that is where
# tracebacks and the final assertion are).
_TAIL_BYTES = 4096
# Cap on any file the child writes, captured stdout/stderr included.
_FSIZE_BYTES = 8 * 1024 * 1024


@dataclass
class ExecResult:
    """Outcome of one program.

    status is one of "passed", "failed" (non-zero exit, uncaught exception,
    failed assertion, killed by a signal, or exit 0 without reaching the end),
    "timeout" (wall clock or CPU limit), "memory" (the child reported a
    MemoryError under the address-space limit) or "error" (the sandbox itself
    could not run the program).
    """

    passed: bool
    status: str
    stdout: str
    stderr: str
    seconds: float


def _child_env(workdir: str) -> dict[str, str]:
    # Whitelist rather than blacklist: any variable not listed here (API keys,
    # tokens, proxies, PYTHONPATH, ...) never reaches the child.
    return {
        "PATH": os.environ.get("PATH") or os.defpath,
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "HOME": workdir,
        "TMPDIR": workdir,
    }


def _limits_setter(timeout: float, memory_mb: int):
    """Build the preexec_fn that applies resource limits in the child.

    The limits are computed here, in the parent, so that the function run
    between fork and exec only calls setrlimit: with run_many's threads around,
    anything that takes a lock (imports, logging) could deadlock the child.
    """
    cpu_soft = int(timeout) + 1
    limits = [
        # Soft limit sends SIGXCPU; the hard limit one second later is SIGKILL
        # in case the program catches SIGXCPU.
        (resource.RLIMIT_CPU, (cpu_soft, cpu_soft + 1)),
        (resource.RLIMIT_FSIZE, (_FSIZE_BYTES, _FSIZE_BYTES)),
        (resource.RLIMIT_CORE, (0, 0)),
    ]
    if memory_mb and memory_mb > 0:
        nbytes = int(memory_mb) * 1024 * 1024
        limits.append((resource.RLIMIT_AS, (nbytes, nbytes)))

    def apply() -> None:
        for which, value in limits:
            resource.setrlimit(which, value)

    return apply


def _read_file(handle) -> str:
    # The file is bounded by RLIMIT_FSIZE, so reading it whole is safe.
    handle.seek(0)
    return handle.read().decode("utf-8", errors="replace")


def _tail(text: str, limit: int = _TAIL_BYTES) -> str:
    if len(text) <= limit:
        return text
    return "[... truncated ...]\n" + text[-limit:]


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_program(code: str, timeout: float = 5.0, memory_mb: int = 512) -> ExecResult:
    """Run ``code`` in a fresh, limited Python subprocess and report the outcome.

    The run counts as passed only if the process exits with code 0 and printed
    the per-call nonce appended after ``code``, i.e. it really got to the end.
    """
    nonce = secrets.token_hex(16)
    half = len(nonce) // 2
    # The nonce is split in the source so that a program echoing its own source
    # (or a traceback quoting it) cannot print it by accident.
    program = f"{code}\n\nprint({nonce[:half]!r} + {nonce[half:]!r}, flush=True)\n"

    started = time.monotonic()
    try:
        workdir = tempfile.mkdtemp(prefix="sftmix-sandbox-")
    except OSError as exc:
        return ExecResult(False, "error", "", f"sandbox: cannot create a temporary directory: {exc}", 0.0)

    timed_out = False
    try:
        script = os.path.join(workdir, "program.py")
        with open(script, "w", encoding="utf-8") as fh:
            fh.write(program)
        # Anonymous files rather than pipes: the child's output is capped by
        # RLIMIT_FSIZE instead of piling up in the parent's memory, and no
        # reader threads are needed.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-I", script],
                    cwd=workdir,
                    env=_child_env(workdir),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    preexec_fn=_limits_setter(timeout, memory_mb),
                    close_fds=True,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                return ExecResult(False, "error", "", f"sandbox: cannot start the program: {exc}",
                                  time.monotonic() - started)
            try:
                returncode = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc.pid)
                returncode = proc.wait()
            else:
                # Background processes the program started would otherwise
                # outlive it; the group id stays reserved while they exist.
                _kill_group(proc.pid)
            seconds = time.monotonic() - started
            stdout = _read_file(out)
            stderr = _read_file(err)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    reached_end = nonce in stdout
    stdout = stdout.replace(nonce + "\n", "")

    if returncode == 0 and reached_end and not timed_out:
        status = "passed"
    elif timed_out or returncode == -signal.SIGXCPU:
        status = "timeout"
    elif returncode != 0 and "MemoryError" in stderr[-_TAIL_BYTES:]:
        # Under RLIMIT_AS a failed allocation surfaces as MemoryError (numpy's
        # _ArrayMemoryError included) rather than as a kill by the OOM killer.
        status = "memory"
    else:
        status = "failed"

    if timed_out:
        stderr += f"\n[sandbox] killed after the {timeout:g} s wall-clock timeout\n"
    elif returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        stderr += f"\n[sandbox] killed by signal {name}\n"
    elif returncode == 0 and not reached_end:
        stderr += "\n[sandbox] exited with code 0 before reaching the end of the program\n"

    return ExecResult(status == "passed", status, _tail(stdout), _tail(stderr), seconds)


def run_many(
    programs: list[str],
    timeout: float = 5.0,
    memory_mb: int = 512,
    workers: int | None = None,
    progress: bool = False,
) -> list[ExecResult]:
    """Run each program with :func:`run_program` in parallel; results keep input order.

    Threads suffice: each one only waits on its own subprocess.
    """
    if not programs:
        return []
    workers = workers or os.cpu_count() or 1
    results: list[ExecResult | None] = [None] * len(programs)
    with ThreadPoolExecutor(max_workers=min(workers, len(programs))) as pool:
        futures = {pool.submit(run_program, code, timeout, memory_mb): i for i, code in enumerate(programs)}
        done = as_completed(futures)
        if progress:
            from tqdm import tqdm

            done = tqdm(done, total=len(futures), desc="executing", unit="prog")
        for future in done:
            results[futures[future]] = future.result()
    return results  # type: ignore[return-value]
