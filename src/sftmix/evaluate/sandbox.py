"""Run untrusted, model-generated Python programs in an isolated sandbox.

This is the only place in sftmix where model-generated code is executed; it
never runs in the caller's interpreter.

How a program runs
------------------
Programs are not started as fresh interpreters (start-up would dominate
scoring). A helper process, the *zygote* (this file run with ``python -I`` and
a scrubbed environment, common standard-library modules preloaded), serves one
program at a time; ``run_many`` drives one zygote per worker, so programs run in
parallel across cores. For each program the zygote forks, and the fork isolates
itself with the kernel's own mechanisms (the ones bubblewrap and ``unshare(1)``
use, called directly, so no binary has to be installed or started per program)
before any untrusted code runs (the modes are tried in order: as root without a
user namespace, in a user namespace, through bubblewrap, and without isolation):

* ``unshare(2)`` into new network, mount, pid, IPC and UTS namespaces (plus a
  user namespace when the caller is not root). The network namespace has only
  a downed loopback: nothing, 127.0.0.1 included, is reachable.
* In the mount namespace the whole tree is made read-only and nosuid
  (``mount_setattr(AT_RECURSIVE)``, or a remount per mount point on kernels
  before 5.12). Fresh size-capped tmpfs's cover /tmp, /var/tmp, /run and
  /dev/shm; /dev is a tmpfs holding only null, zero, full, random and urandom;
  the caller's home directory is covered by an empty tmpfs (paths the
  interpreter needs are bound back, read-only); /proc is a new procfs of the
  program's pid namespace. The only writable places are the program's private
  directory (its cwd, HOME and TMPDIR, under the private /tmp) and those
  tmpfs's, all gone when it ends.
* The program is the first process (pid 1) of a new pid namespace, in a
  session of its own, watched from outside by a trusted monitor (the zygote's
  fork): it sees no other process on the machine and cannot signal its caller
  or the monitor; when it exits, or the monitor kills it, the kernel kills
  every process left in the namespace, ``setsid()`` daemons included.
* Before running the code the program drops its privileges: as root, to a
  throw-away unprivileged uid with no capabilities; otherwise into a nested user
  namespace, so that it cannot undo the read-only mounts. It is non-dumpable and
  ``no_new_privs`` (setuid binaries do not elevate).
* Resource limits: RLIMIT_NPROC against fork and thread bombs (enforced because
  the program's real uid is not root), RLIMIT_AS (memory, per process; the
  monitor also stops a sandbox whose processes together hold too much), RLIMIT_FSIZE
  (files and the captured output), RLIMIT_NOFILE, no core dumps, RLIMIT_CPU as
  a backstop.
* Time: the monitor adds up the CPU time of every process in the sandbox and stops
  the program when the sum passes ``timeout`` (status "timeout"): CPU time, not
  wall time, decides, so a busy host does not cause false timeouts. A program
  that waits instead of computing (sleep, blocking reads) is stopped when its
  wall time less the time it queued for a CPU (``/proc/PID/schedstat``) passes
  ``timeout``; a generous hard wall limit backs that up. Both are reported as
  "wall_timeout".
* Environment: only PATH, LANG, HOME and TMPDIR; API keys, tokens and proxies
  never reach the zygote or the program.

Passing needs more than exit code 0: after the program returns normally, the
driver writes a per-run random nonce. The nonce never appears in the program's
source; it is held only by an audit hook (``sys.addaudithook``) that hands it
out to the driver's own frame alone, and that refuses the usual ways to dig for
it (``gc`` object walks, tracing, ctypes, opening ``*/mem``). So an early
``sys.exit(0)``/``os._exit(0)``, printed success messages, patched checkers or
reading the program's or the harness's source do not count as passing.

Threat model
------------
``protections()`` says which of these hold on the machine; it is probed once by
running a program, and a warning naming what is missing is logged once.

With all protections (namespaces available; as root, or as a user whose kernel
allows unprivileged user namespaces), a hostile program cannot: write anywhere on
the host's file systems, read the caller's home directory, reach the network or
local services, see or signal host processes (the caller and the test runner
included), outlive its run, exhaust process ids, memory, disk or output space,
or read the caller's environment. What remains: it can read world-readable
files outside the home directory (the OS, the Python install); it shares the
kernel, so a kernel exploit escapes (use a VM against that); and it runs in the
same interpreter as the checks, so a program written against this particular
harness can still fake a pass from inside (for example by returning an object
that compares equal to everything). Faked passes corrupt a score; they do not
harm the host.

Root in a user namespace only (root where the first mode fails, e.g. when the
interpreter is unreadable by other users): as above, except that the program
runs as the caller's root user inside the namespace: RLIMIT_NPROC is not
enforced for root (``process_limit`` false; the monitor's memory and CPU limits
still end a fork bomb) and root-only files are readable (``drop_privileges``
false).

Bubblewrap (used when the kernel refuses the namespaces to this process but
``bwrap`` is installed, e.g. setuid or allowed by an AppArmor profile): each
program starts a fresh interpreter inside ``bwrap --unshare-all`` with the same
read-only tree, tmpfs's, minimal /dev, own /proc, scrubbed environment, limits
and nonce; slower (an interpreter start per program). As a user, the program is
root only inside bubblewrap's user namespace; as root, it has no capabilities
but stays uid 0 outside, so ``process_limit`` and ``drop_privileges`` are false.

Without namespaces (no user namespaces, as in many containers), the sandbox
falls back to a plain child process with the same resource limits (no
RLIMIT_NPROC), scrubbed environment, private working directory and nonce, and
kills its process group; it then does NOT stop writes outside the private
directory, network access, a view of and signals to the caller's processes, a
``setsid()`` escape from the kill, or fork bombs.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

# How much of stdout/stderr is kept in an ExecResult (the tail: that is where
# tracebacks and the final assertion are).
_TAIL_BYTES = 4096
# Cap on any file the child writes, captured stdout/stderr included.
_FSIZE_BYTES = 8 * 1024 * 1024
# Processes and threads one program may have at once.
_NPROC = 32
_NOFILE = 256
# Size of the private /tmp (private directory included) and of the smaller tmpfs's.
_TMP_SIZE = "64m"
_SMALL_TMP_SIZE = "8m"
# How often the monitor samples CPU time and memory of the sandbox, and the slack on the wall limit.
_POLL_S = 0.02
_WALL_GRACE_S = 0.25

log = logging.getLogger(__name__)


@dataclass
class ExecResult:
    """Outcome of one program.

    status is one of "passed", "failed" (non-zero exit, uncaught exception,
    failed assertion, killed by a signal, or exit 0 without reaching the end),
    "timeout" (the CPU time of all its processes passed the limit),
    "wall_timeout" (it waited, e.g. slept, past the limit without computing),
    "memory" (out of memory under the limits) or "error" (the sandbox itself
    could not run the program). cpu_seconds is the CPU time of all the
    program's processes; seconds - queued_seconds is the time it took on its own.
    """

    passed: bool
    status: str
    stdout: str
    stderr: str
    seconds: float
    cpu_seconds: float = 0.0
    wall_timeout: bool = False
    queued_seconds: float = 0.0  # time its processes (and their monitor) waited for a CPU: host contention


# ============================================================================ host side


def _child_env() -> dict[str, str]:
    # Whitelist rather than blacklist: any variable not listed here (API keys,
    # tokens, proxies, PYTHONPATH, ...) never reaches the zygote or the programs.
    # MALLOC_ARENA_MAX: glibc reserves 64 MiB of address space per thread's malloc arena, which under RLIMIT_AS
    # would leave room for only a handful of threads.
    return {"PATH": os.environ.get("PATH") or os.defpath, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
            "MALLOC_ARENA_MAX": "2"}


class _Zygote:
    """One zygote process and the line-based JSON protocol to it."""

    def __init__(self) -> None:
        forced = [_mode_for_tests] if _mode_for_tests else []
        self.proc = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), "--zygote", *forced],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_child_env(),
            cwd="/",
            close_fds=True,
            start_new_session=True,
        )
        self.hello = self._read(timeout=60.0)
        if self.hello is None:
            self.close()
            raise RuntimeError("the sandbox helper process did not start")

    def _read(self, timeout: float) -> dict | None:
        out = self.proc.stdout
        ready, _, _ = select.select([out], [], [], timeout)
        if not ready:
            return None
        line = out.readline()
        return json.loads(line) if line else None

    def send(self, req: dict) -> bool:
        try:
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
            return True
        except (OSError, ValueError):
            return False

    def receive(self, timeout: float) -> dict | None:
        try:
            return self._read(timeout)
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass


_pool: list[_Zygote] = []
_pool_lock = threading.Lock()
_pool_pid = os.getpid()
_protections: dict[str, bool] | None = None
_warned = False  # the start-up message is logged once per process
_mode_for_tests: str | None = None  # "userns", "bwrap" or "fallback": tests force a mode weaker than the best here


def _acquire() -> _Zygote:
    global _pool_pid
    with _pool_lock:
        if _pool_pid != os.getpid():
            # A forked copy of the caller must not talk to its parent's zygotes.
            _pool.clear()
            _pool_pid = os.getpid()
        while _pool:
            zygote = _pool.pop()
            if zygote.proc.poll() is None:
                return zygote
    zygote = _Zygote()
    _announce(zygote.hello.get("protections", {}))
    return zygote


def _release(zygote: _Zygote) -> None:
    with _pool_lock:
        if len(_pool) < 2 * (os.cpu_count() or 1):
            _pool.append(zygote)
            return
    zygote.close()  # more idle zygotes than a default run_many needs


def _shutdown() -> None:
    """Stop the idle zygotes (they are restarted on demand) and forget the probed protections."""
    global _protections
    with _pool_lock:
        if _pool_pid == os.getpid():
            while _pool:
                _pool.pop().close()
        _pool.clear()
        _protections = None


atexit.register(_shutdown)


def _announce(found: dict[str, bool]) -> None:
    global _protections, _warned
    with _pool_lock:
        _protections = dict(found)
        if _warned:
            return
        _warned = True
    missing = [name for name, ok in found.items() if not ok]
    if not missing:
        log.info("code sandbox: all protections active (%s)", ", ".join(found))
    else:
        active = [name for name, ok in found.items() if ok]
        log.warning(
            "code sandbox: running WITHOUT %s (active: %s); hostile generated code could harm this machine. "
            "Enable unprivileged user namespaces, install bubblewrap, or run evaluations inside a VM.",
            ", ".join(missing), ", ".join(active) or "none",
        )


def protections() -> dict[str, bool]:
    """Which protections the sandbox has on this machine (probed once, by running a program).

    Keys: network, filesystem (read-only host, private writable dir), processes
    (own pid namespace: no view of the caller's processes, kill reaches all),
    process_limit (RLIMIT_NPROC enforced), drop_privileges, resource_limits,
    scrubbed_env, cpu_time_limit.
    """
    if _protections is None:
        _release(_acquire())
    return dict(_protections or {})


def _tail(text: str, limit: int = _TAIL_BYTES) -> str:
    if len(text) <= limit:
        return text
    return "[... truncated ...]\n" + text[-limit:]


def _hard_wall(timeout: float) -> float:
    # Generous: CPU time decides; this only bounds a program starved by a very busy host.
    return max(4.0 * timeout, timeout + 10.0)


def run_program(code: str, timeout: float = 5.0, memory_mb: int = 512) -> ExecResult:
    """Run ``code`` in the sandbox and report the outcome.

    The run counts as passed only if the program exits normally (code 0)
    after running to its end, within ``timeout`` seconds of CPU time and
    ``memory_mb`` MiB of address space per process.
    """
    import secrets

    req = {
        "code": code,
        "nonce": secrets.token_hex(16),
        "workdir": "sandbox-" + secrets.token_hex(6),
        "timeout": float(timeout),
        "memory_mb": int(memory_mb or 0),
    }
    started = time.monotonic()
    for attempt in range(2):
        try:
            zygote = _acquire()
        except (OSError, RuntimeError) as exc:
            return ExecResult(False, "error", "", f"sandbox: cannot start the sandbox: {exc}", 0.0)
        if zygote.send(req):
            break
        zygote.close()  # it died while idle: start another
    else:
        return ExecResult(False, "error", "", "sandbox: the sandbox helper process keeps dying", 0.0)
    resp = zygote.receive(timeout=_hard_wall(timeout) + 30.0)
    if resp is None or "error" in resp:
        zygote.close()
        why = (resp or {}).get("error", "the sandbox helper process died")
        return ExecResult(False, "error", "", f"sandbox: {why}", time.monotonic() - started)
    _release(zygote)
    return _result(resp, timeout)


def _result(resp: dict, timeout: float) -> ExecResult:
    code, verdict, reached = resp["exit"], resp["verdict"], resp["reached_end"]
    stdout, stderr = resp["stdout"], resp["stderr"]
    if code == 0 and reached and verdict is None:
        status = "passed"
    elif verdict == "cpu" or code == -signal.SIGXCPU:
        status = "timeout"
        stderr += f"\n[sandbox] stopped after {timeout:g} s of CPU time\n"
    elif verdict == "wall":
        status = "wall_timeout"
        stderr += f"\n[sandbox] stopped after waiting {timeout:g} s (wall clock, less time queued for a CPU)\n"
    elif verdict == "memory" or (code != 0 and "MemoryError" in stderr[-_TAIL_BYTES:]):
        # Under RLIMIT_AS a failed allocation surfaces as MemoryError (numpy's
        # _ArrayMemoryError included) rather than as a kill by the OOM killer.
        status = "memory"
    else:
        status = "failed"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            stderr += f"\n[sandbox] killed by signal {name}\n"
        elif code == 0:
            stderr += "\n[sandbox] exited with code 0 before reaching the end of the program\n"
    return ExecResult(
        status == "passed", status, _tail(stdout), _tail(stderr), resp["seconds"],
        cpu_seconds=resp["cpu_seconds"], wall_timeout=status == "wall_timeout", queued_seconds=resp["queued"],
    )


def run_many(
    programs: list[str],
    timeout: float = 5.0,
    memory_mb: int = 512,
    workers: int | None = None,
    progress: bool = False,
) -> list[ExecResult]:
    """Run each program with :func:`run_program` in parallel; results keep input order.

    Each worker thread drives its own zygote, so ``workers`` programs run at once
    (default: one per core).
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

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


# ============================================================================ zygote side
# Everything below runs in the zygote and its forks; it uses the standard library only.

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_CHILD_SUBREAPER, _PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
_SYS_MOUNT_SETATTR = 442  # same number on every architecture (the unified syscall table)
_AT_FDCWD, _AT_RECURSIVE = -100, 0x8000
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID = 0x1, 0x2
_DEVICES = ("null", "zero", "full", "random", "urandom")
_DONE_EVENT = "sftmix.sandbox.done"
# Modules a generated solution commonly imports, and those the sandbox itself uses per program: loaded once in
# the zygote so that programs skip the import.
_PRELOAD = (
    "typing math re collections itertools functools heapq bisect string hashlib fractions decimal random "
    "statistics json copy operator traceback io types datetime dataclasses enum abc numbers array "
    "resource tempfile shutil builtins"
).split()


class _Libc:
    def __init__(self) -> None:
        import ctypes

        self.ctypes = ctypes
        self.lib = ctypes.CDLL(None, use_errno=True)
        self.lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        self.lib.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

    def check(self, rc: int, what: str) -> None:
        if rc != 0:
            err = self.ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def unshare(self, flags: int) -> None:
        self.check(self.lib.unshare(flags), "unshare")

    def mount(self, source, target, fstype, flags, data=None) -> None:
        enc = [None if v is None else os.fsencode(v) for v in (source, target, fstype, data)]
        self.check(self.lib.mount(enc[0], enc[1], enc[2], flags, enc[3]), f"mount {target}")

    def prctl(self, option: int, value: int) -> None:
        self.check(self.lib.prctl(option, value, 0, 0, 0), "prctl")

    def new_session_keyring(self) -> None:
        """Leave the caller's session keyring (keys in it would be readable by their possessor)."""
        number = {"x86_64": 250, "aarch64": 219}.get(os.uname().machine)
        if number is not None:  # KEYCTL_JOIN_SESSION_KEYRING with no name: a new anonymous keyring
            self.lib.syscall(self.ctypes.c_long(number), self.ctypes.c_int(1), None)

    def readonly_tree(self, path: str) -> None:
        """Make ``path`` and every mount below it read-only and nosuid."""
        ctypes = self.ctypes

        class MountAttr(ctypes.Structure):
            _fields_ = [("set", ctypes.c_uint64), ("clr", ctypes.c_uint64),
                        ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]

        attr = MountAttr(_MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID, 0, 0, 0)
        rc = self.lib.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(_AT_FDCWD), os.fsencode(path),
                              ctypes.c_uint(_AT_RECURSIVE), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
        if rc == 0:
            return
        # Kernels before 5.12: remount every mount point one by one, keeping the flags it has.
        with open("/proc/self/mountinfo") as fh:
            points = [line.split()[4] for line in fh]
        for point in points:
            if point != path and not point.startswith(path.rstrip("/") + "/"):
                continue
            try:
                flags = os.statvfs(point).f_flag
            except OSError:
                continue
            keep = flags & (_MS_NODEV | _MS_NOEXEC | _MS_NOSUID)
            try:
                self.mount(None, point, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | keep)
            except OSError:
                if point == path:
                    raise


# Directories covered by a fresh tmpfs: (path, size, mode, read-only afterwards). The home directory joins them.
_COVERED = (("/tmp", _TMP_SIZE, "1777", False), ("/var/tmp", _SMALL_TMP_SIZE, "1777", False),
            ("/run", _SMALL_TMP_SIZE, "755", False))


def _covered_and_kept() -> tuple[list[tuple[str, str, str, bool]], list[str]]:
    """Directories to cover with a tmpfs and the paths under them the interpreter needs (bound back read-only)."""
    covered = [c for c in _COVERED if os.path.isdir(c[0]) and not os.path.islink(c[0])]
    home = os.path.realpath(os.path.expanduser("~"))
    system = ("/dev", "/proc", "/sys") + tuple(c[0] for c in covered)
    if home != "/" and os.path.isdir(home) and not any(home == d or home.startswith(d + "/") for d in system):
        covered.append((home, "1m", "755", True))
    needed = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(os.__file__),
              os.path.dirname(os.path.realpath(sys.executable))}
    needed |= {p for p in sys.path if p and os.path.isdir(p)}
    needed = {os.path.realpath(p) for p in needed}
    # A directory the interpreter lives in, or below, is left uncovered (read-only like the rest).
    covered = [c for c in covered if not any(p == c[0] or c[0].startswith(p + "/") for p in needed)]
    kept: list[str] = []
    for path in sorted(needed):
        if any(path.startswith(c[0] + "/") for c in covered) and not any(path.startswith(k + "/") for k in kept):
            kept.append(path)
    return covered, kept


class _ZygoteState:
    """State of the zygote process: mode, libc, the home directory to hide."""

    def __init__(self) -> None:
        self.libc: _Libc | None = None
        try:
            self.libc = _Libc()
        except (OSError, AttributeError):
            pass
        self.covered, self.kept = _covered_and_kept()
        self.root = os.geteuid() == 0
        self.mode = "fallback"
        self.outer_uid, self.outer_gid = os.geteuid(), os.getegid()
        import shutil

        self.bwrap = shutil.which("bwrap", path=os.environ.get("PATH") or os.defpath)
        try:  # the host's /proc, still readable after the sandbox's mount namespace covers it
            self.proc: int | None = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            self.proc = None


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _die_with_parent(z: _ZygoteState, parent: int) -> None:
    if z.libc is not None:
        z.libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() not in (parent, 0):  # 0: the parent is outside our new pid namespace
        os._exit(1)


def _setup_filesystem(z: _ZygoteState, workdir: str, uid: int | None) -> None:
    """In a fresh mount namespace: read-only host, private tmpfs's, minimal /dev, own /proc."""
    libc = z.libc
    libc.mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing below propagates back to the host
    kept = [(path, os.open(path, os.O_PATH)) for path in z.kept]
    devices = [(name, os.open(f"/dev/{name}", os.O_PATH)) for name in _DEVICES if os.path.exists(f"/dev/{name}")]
    libc.readonly_tree("/")
    private = _MS_NOSUID | _MS_NODEV
    libc.mount("tmpfs", "/dev", "tmpfs", _MS_NOSUID | _MS_NOEXEC, "mode=755,size=1m")
    for name, fd in devices:
        os.close(os.open(f"/dev/{name}", os.O_CREAT | os.O_WRONLY, 0o666))
        libc.mount(f"/proc/self/fd/{fd}", f"/dev/{name}", None, _MS_BIND)
        os.close(fd)
    os.mkdir("/dev/shm")
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", f"/dev/{name}")
    os.symlink("/proc/self/fd", "/dev/fd")
    libc.readonly_tree("/dev")  # device nodes stay usable: a read-only mount does not stop writing to them
    libc.mount("tmpfs", "/dev/shm", "tmpfs", private, f"mode=1777,size={_SMALL_TMP_SIZE}")
    for top, size, mode, readonly in z.covered:
        libc.mount("tmpfs", top, "tmpfs", private, f"mode={mode},size={size}")
        for path, fd in kept:
            if path.startswith(top + "/"):
                os.makedirs(path, exist_ok=True)
                libc.mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC)
                libc.readonly_tree(path)
        if readonly:
            libc.readonly_tree(top)
    for _, fd in kept:
        os.close(fd)
    os.mkdir(workdir, 0o700)
    if uid is not None:
        os.chown(workdir, uid, uid)


def _mount_proc(libc: _Libc) -> None:
    """A procfs of the new pid namespace; called by its first process, before it drops privileges."""
    try:
        libc.mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    except OSError:
        # A new procfs is refused in a user namespace when the host's /proc is partly covered (containers):
        # hide the host's processes behind an empty directory instead.
        libc.mount("tmpfs", "/proc", "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC | _MS_RDONLY, "size=4k")


def _install_guard(nonce: str, frame) -> None:
    """Audit hook that holds the nonce and refuses the usual ways to dig for it.

    Only the driver's own frame, after the program returned, gets the nonce
    written (``sys.audit(_DONE_EVENT)``). Everything it uses is bound here, so
    a program that patches ``sys`` or ``os`` afterwards cannot fool it.
    """
    getframe, write, marker = sys._getframe, os.write, (nonce + "\n").encode()
    blocked = {"gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._current_frames",
               "sys._current_exceptions", "sys.settrace", "sys.setprofile"}

    def hook(event: str, args: tuple) -> None:
        if event == _DONE_EVENT:
            if getframe(1) is frame:
                write(1, marker)
            return
        if event in blocked or event.startswith("ctypes."):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args and args[0] in ("ctypes", "_ctypes"):
            raise ImportError(f"sandbox: {args[0]} is not available")  # ImportError: optional users carry on
        if event in ("open", "os.symlink") and args:
            # /proc/*/mem, by any path or through a symlink the program makes (its final name is "mem").
            for name in args[:2] if event == "os.symlink" else args[:1]:
                if _final_name(name) == "mem":
                    raise PermissionError(f"sandbox: opening {name!r} is not allowed")

    sys.addaudithook(hook)


def _final_name(path) -> str:
    if isinstance(path, bytes):
        path = path.decode("utf-8", "replace")
    elif not isinstance(path, str):
        try:
            path = type(path).__fspath__(path)  # pathlib paths; ints (file descriptors) have none
        except Exception:  # noqa: BLE001
            return ""
        if isinstance(path, bytes):
            path = path.decode("utf-8", "replace")
    return path.rstrip("/").rpartition("/")[2] if isinstance(path, str) else ""


def _limits(timeout: float, memory_mb: int, nproc: bool) -> None:
    import math
    import resource

    cpu = int(math.ceil(timeout)) + 1  # a backstop: the monitor stops the program at `timeout` of CPU time
    limits = [
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_FSIZE, (_FSIZE_BYTES, _FSIZE_BYTES)),
        (resource.RLIMIT_CORE, (0, 0)),
        (resource.RLIMIT_NOFILE, (_NOFILE, _NOFILE)),
    ]
    if nproc:
        limits.append((resource.RLIMIT_NPROC, (_NPROC, _NPROC)))
    if memory_mb > 0:
        limits.append((resource.RLIMIT_AS, (memory_mb * 1024 * 1024,) * 2))
    for which, value in limits:
        resource.setrlimit(which, value)


def _program(z: _ZygoteState, req: dict, out: int, err: int, workdir: str, uid: int | None, monitor: int) -> None:
    """The program's process: drop privileges, then run the untrusted code. Never returns.

    With namespaces it is pid 1 of its pid namespace: when it exits, the kernel kills everything it left.
    """
    _die_with_parent(z, monitor)
    os.setsid()  # out of the monitor's process group: kill(0, ...) must not reach the monitor
    if z.mode in ("root", "userns"):
        _mount_proc(z.libc)
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.closerange(3, 65536)
    if z.mode == "bwrap":
        _exec_bwrap(z, req, workdir)
    _limits(req["timeout"], req["memory_mb"], nproc=z.mode in ("root", "userns"))
    if z.mode == "root":
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    elif z.mode == "userns":
        # A nested user namespace: the program is root only there, not in the namespace that owns the
        # mounts, so the read-only mounts are locked.
        z.libc.unshare(_CLONE_NEWUSER)
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", "0 0 1")
        _write("/proc/self/gid_map", "0 0 1")
    if z.libc is not None:
        z.libc.prctl(_PR_SET_NO_NEW_PRIVS, 1)
        z.libc.prctl(_PR_SET_DUMPABLE, 0)  # no reading this process's memory from a child
    _run_untrusted(z, req, workdir)


def _run_untrusted(z, req: dict, workdir: str) -> None:
    """Run the program's code in this (already isolated) process, as ``python program.py`` would. Never returns."""
    import builtins
    import types

    os.chdir(workdir)
    os.environ.clear()
    os.environ.update(_child_env(), HOME=workdir, TMPDIR=workdir)
    import tempfile

    tempfile.tempdir = None
    # No ctypes for the program (raw memory access would find the nonce): drop the zygote's copy and every
    # reference to it; the guard refuses to import it again.
    z.libc = None
    for name in list(sys.modules):
        if name in ("ctypes", "_ctypes") or name.startswith("ctypes."):
            del sys.modules[name]
    if "random" in sys.modules:
        sys.modules["random"].seed()  # as a fresh interpreter would, not the zygote's sequence
    sys.stdin = sys.__stdin__ = open(0, "r", closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", errors="backslashreplace", buffering=1,
                                       closefd=False)
    path = os.path.join(workdir, "program.py")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(req["code"])
    code_text = req.pop("code")
    _install_guard(req.pop("nonce"), sys._getframe())
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    sys.argv = [path]
    status = 0
    try:
        exec(compile(code_text, path, "exec"), module.__dict__)
    except SystemExit as exc:
        code = exc.code
        status = code if isinstance(code, int) else (0 if code is None else 1)
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
    except BaseException as exc:  # noqa: BLE001 - report it as the interpreter would
        tb = exc.__traceback__.tb_next if exc.__traceback__ else None  # hide this driver's frame
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        status = 1
    else:
        sys.stdout.flush()
        sys.audit(_DONE_EVENT)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            status = status or 120
    os._exit(status & 0xFF)


def _exec_bwrap(z: _ZygoteState, req: dict, workdir: str) -> None:
    """bwrap mode: start a fresh interpreter in bubblewrap's namespaces to run the program. Never returns."""
    import tempfile

    # The request travels on fd 3 (a file, not a pipe: a long program would fill a pipe before exec).
    spec = tempfile.TemporaryFile()
    spec.write(json.dumps(req).encode())
    spec.seek(0)
    if spec.fileno() != 3:
        os.dup2(spec.fileno(), 3)
    os.set_inheritable(3, True)
    _limits(req["timeout"], req["memory_mb"], nproc=False)  # RLIMIT_NPROC is set inside, per namespace
    argv = [z.bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--hostname", "sandbox", "--ro-bind", "/", "/", "--dev", "/dev", "--remount-ro", "/dev",
            "--proc", "/proc", "--size", str(_size_bytes(_SMALL_TMP_SIZE)), "--tmpfs", "/dev/shm"]
    for top, size, _mode, readonly in z.covered:
        argv += ["--size", str(_size_bytes(size)), "--tmpfs", top]
        argv += [a for path in z.kept if path.startswith(top + "/") for a in ("--ro-bind", path, path)]
        if readonly:
            argv += ["--remount-ro", top]
    argv += ["--dir", workdir, "--chdir", workdir, "--clearenv"]
    for key, value in {**_child_env(), "HOME": workdir, "TMPDIR": workdir}.items():
        argv += ["--setenv", key, value]
    argv += ["--", sys.executable, "-I", os.path.abspath(__file__), "--run"]
    os.execv(z.bwrap, argv)


def _size_bytes(size: str) -> int:
    return int(size[:-1]) * {"k": 1024, "m": 1024 ** 2}[size[-1]]


def _run_main() -> None:
    """``sandbox.py --run``: the interpreter bwrap starts; the request is on fd 3."""
    with os.fdopen(3, "rb") as fh:
        req = json.loads(fh.read())
    z = _ZygoteState()
    z.mode = "bwrap"
    if z.proc is not None:
        os.close(z.proc)
    try:
        with open("/proc/self/uid_map") as fh:
            outer = [line.split() for line in fh]
        # In bubblewrap's own user namespace with an unprivileged outside uid, RLIMIT_NPROC counts this
        # sandbox's processes only.
        nproc = len(outer) == 1 and outer[0][1] != "0" and outer[0][2] == "1"
    except OSError:
        nproc = False
    _limits(req["timeout"], req["memory_mb"], nproc=nproc)
    if z.libc is not None:
        z.libc.prctl(_PR_SET_DUMPABLE, 0)
    _run_untrusted(z, req, os.getcwd())


def _proc_read(proc: int | None, path: str) -> bytes:
    """A file of the host's /proc, through a directory fd opened before any mount changed (``proc``)."""
    if proc is None:
        raise OSError("no /proc")
    fd = os.open(path, os.O_RDONLY, dir_fd=proc)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def _descendants(pid: int, proc: int | None) -> list[str]:
    """pid and every process below it, from /proc/PID/task/TID/children."""
    found, todo = [], [str(pid)]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for tid in _tasks(proc, p):
                todo.extend(_proc_read(proc, f"{p}/task/{tid}/children").decode().split())
        except OSError:
            pass
    return found


def _tasks(proc: int | None, pid: str) -> list[str]:
    if proc is None:
        raise OSError("no /proc")
    fd = os.open(f"{pid}/task", os.O_RDONLY | os.O_DIRECTORY, dir_fd=proc)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def _tree_usage(pids: list[str], proc: int | None) -> tuple[float, int]:
    """CPU seconds (incl. waited-for children) and resident bytes of the given processes."""
    ticks, pages = 0, 0
    for pid in pids:
        try:
            f = _proc_read(proc, f"{pid}/stat").rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(f) > 21:
            ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
            pages += int(f[21])
    return ticks / os.sysconf("SC_CLK_TCK"), pages * os.sysconf("SC_PAGE_SIZE")


def _run_delay(pid: str, proc: int | None) -> float:
    try:
        return int(_proc_read(proc, f"{pid}/schedstat").split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _monitor(z: _ZygoteState, req: dict, out: int, err: int, report: int) -> None:
    """Set the sandbox up, start the program, watch its CPU time, wall time and memory, report. Never returns.

    Runs in the zygote's fork, after it entered the new namespaces (but not the new pid namespace: the program is
    the first process there). It reads the host's /proc through the zygote's directory fd.
    """
    born = time.monotonic()
    if z.libc is not None:
        z.libc.prctl(_PR_SET_DUMPABLE, 0)
    # Our own session and process group: the zygote's group spans namespaces, and a program signalling its
    # group (kill(0, ...)) must reach nothing outside the sandbox.
    os.setsid()
    isolated = z.mode in ("root", "userns")
    uid = None
    if isolated:
        workdir = "/tmp/" + req["workdir"]
        if z.mode == "root":
            import random

            uid = random.SystemRandom().randrange(2_000_000_000, 2_100_000_000)  # one throw-away uid per run
        _setup_filesystem(z, workdir, uid)
    elif z.mode == "bwrap":
        workdir = "/tmp/" + req["workdir"]  # made by bubblewrap in its private /tmp
    else:
        import tempfile

        workdir = tempfile.mkdtemp(prefix="sftmix-sandbox-")
    if z.libc is not None:
        z.libc.new_session_keyring()
        if not isolated:
            # Orphans (setsid daemons included) become our children, so the final kill finds them.
            z.libc.prctl(_PR_SET_CHILD_SUBREAPER, 1)
    start = time.monotonic()
    me = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(report)
            _program(z, req, out, err, workdir, uid, me)
        except BaseException as exc:  # noqa: BLE001 - setup failed before the program ran
            os.write(err, f"[sandbox] could not start the program: {type(exc).__name__}: {exc}\n".encode())
            memory = isinstance(exc, MemoryError)
            os._exit(3 if memory else 126)
        finally:
            os._exit(127)
    timeout, hard, proc = req["timeout"], _hard_wall(req["timeout"]), z.proc
    mem_cap = max(2 * req["memory_mb"], 1024) * 1024 * 1024 if req["memory_mb"] > 0 else None
    try:
        waiter = os.pidfd_open(pid)
    except (AttributeError, OSError):
        waiter = None
    status, verdict, queued, cpu, reaped = None, None, 0.0, 0.0, 0.0
    while status is None:
        if waiter is not None:
            select.select([waiter], [], [], _POLL_S)
        else:
            time.sleep(_POLL_S / 4)
        while True:  # the program, and orphans adopted as a subreaper
            try:
                done, wstatus, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if done == 0:
                break
            reaped += usage.ru_utime + usage.ru_stime  # includes the children it had reaped
            if done == pid:
                status = os.waitstatus_to_exitcode(wstatus)
        if status is not None:
            break
        wall = time.monotonic() - start
        procs = _descendants(pid, proc)
        cpu, rss = _tree_usage(procs, proc)
        cpu += reaped
        # Time spent queued for a CPU by the program's processes (on a busy host); the rest is its own time.
        queued = max(queued, min(wall, sum(_run_delay(p, proc) for p in procs)))
        if cpu > timeout or wall - queued > timeout + _WALL_GRACE_S:
            # Include this monitor's own wait: a starved monitor notices late.
            queued = max(queued, min(wall, sum(_run_delay(p, proc) for p in procs) + _run_delay(str(me), proc)))
        if cpu > timeout:
            verdict = "cpu"
        elif wall - queued > timeout + _WALL_GRACE_S or wall > hard:
            verdict = "wall"
        elif mem_cap is not None and rss > mem_cap:
            verdict = "memory"
        if verdict:
            break
    wall = time.monotonic() - start
    # A fast program's only measurable delay is this monitor's (setting the sandbox up included).
    queued = max(queued, min(time.monotonic() - born, _run_delay(str(me), proc)))
    if status is None:
        # With namespaces the program is pid 1 of its namespace: everything in it dies with it; bwrap's namespace
        # dies with bwrap (--die-with-parent).
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        _, wstatus, usage = os.wait4(pid, 0)
        reaped += usage.ru_utime + usage.ru_stime
    else:
        cpu = max(cpu, reaped)
    if not isolated:
        # No pid namespace: whatever the program left behind was adopted by this subreaper; kill it.
        for _ in range(100):
            victims = _children(proc)
            if not victims:
                break
            for victim in victims:
                try:
                    os.kill(int(victim), signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.002)
            _reap()
        if z.mode == "fallback":
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    if z.mode == "bwrap" and status is not None and status > 128:
        status = -(status - 128)  # bubblewrap reports a program killed by signal N as exit 128 + N
    os.write(report, json.dumps({"exit": status if status is not None else -9, "verdict": verdict,
                                 "wall": wall, "cpu": cpu, "queued": queued}).encode())
    os._exit(0)


def _children(proc: int | None) -> list[str]:
    """This process's children (orphans it adopted as a subreaper)."""
    me = str(os.getpid())
    try:
        return _proc_read(proc, f"{me}/task/{me}/children").decode().split()
    except OSError:
        return []


def _reap() -> None:
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


def _capture_file():
    """Where a program's stdout or stderr goes: an anonymous file, capped by RLIMIT_FSIZE like any other."""
    try:
        return os.fdopen(os.memfd_create("sftmix-sandbox"), "w+b")
    except (AttributeError, OSError):
        import tempfile

        return tempfile.TemporaryFile()


def _sandbox(z: _ZygoteState, req: dict) -> dict:
    """Run one request; called in the zygote."""
    flags = _CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWPID | _CLONE_NEWIPC | _CLONE_NEWUTS
    with _capture_file() as out, _capture_file() as err:
        rfd, wfd = os.pipe()
        started = time.monotonic()
        zygote = os.getpid()
        sys.stdout.flush()
        child = os.fork()
        if child == 0:
            try:
                os.close(rfd)
                _die_with_parent(z, zygote)
                if z.mode == "userns":
                    z.libc.unshare(flags | _CLONE_NEWUSER)
                    _write("/proc/self/setgroups", "deny")
                    _write("/proc/self/uid_map", f"0 {z.outer_uid} 1")
                    _write("/proc/self/gid_map", f"0 {z.outer_gid} 1")
                elif z.mode == "root":
                    z.libc.unshare(flags)
                _monitor(z, req, out.fileno(), err.fileno(), wfd)
            except BaseException as exc:  # noqa: BLE001
                try:
                    os.write(wfd, json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
                finally:
                    os._exit(1)
            os._exit(1)
        os.close(wfd)
        chunks = []
        deadline = started + _hard_wall(req["timeout"]) + 10.0
        while True:
            ready, _, _ = select.select([rfd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(child, signal.SIGKILL)  # the program dies with it (PDEATHSIG), and its namespace with it
                break
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            if chunk.endswith(b"}"):
                try:  # complete: no need to wait while the monitor's exit tears its namespaces down
                    json.loads(b"".join(chunks))
                    break
                except ValueError:
                    pass
        os.close(rfd)
        seconds = time.monotonic() - started
        _reap()  # the monitor has reported and exits; reap it now or with the next program
        try:
            report = json.loads(b"".join(chunks) or b'{"error": "the sandbox monitor died"}')
        except ValueError:
            report = {"error": "the sandbox monitor sent a broken report"}
        if "error" in report:
            return report
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", errors="replace")
        stderr = err.read().decode("utf-8", errors="replace")
    marker = req["nonce"] + "\n"
    return {
        "exit": report["exit"],
        "verdict": report["verdict"],
        "reached_end": marker in stdout,
        "stdout": _tail(stdout.replace(marker, "")),
        "stderr": _tail(stderr),
        "seconds": seconds,
        "cpu_seconds": report["cpu"],
        "queued": report["queued"],
    }


# The program must be able to read the interpreter's import path (as the unprivileged uid, with home covered).
_PROBE = """
import os
for p in {paths!r}:
    os.listdir(p)
assert os.getcwd() == os.environ["HOME"]
print("ok")
"""


def _choose_mode(z: _ZygoteState, only: str | None = None) -> dict[str, bool]:
    """Try the strongest mode that works here (or just ``only``); return the protections it gives."""
    candidates = ((["root"] if z.root else []) + ["userns"] if z.libc is not None else [])
    candidates += ["bwrap"] if z.bwrap else []
    if only:
        candidates = [m for m in candidates if m == only]
    for mode in candidates:
        z.mode = mode
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        req = {"code": _PROBE.format(paths=paths), "nonce": "probe-" + os.urandom(8).hex(), "workdir": "probe",
               "timeout": 10.0, "memory_mb": 0}
        resp = _sandbox(z, req)
        if resp.get("exit") == 0 and resp.get("reached_end"):
            break
    else:
        z.mode = "fallback"
    isolated = z.mode != "fallback"
    unprivileged = z.mode == "root" or (z.mode in ("userns", "bwrap") and z.outer_uid != 0)
    return {
        "network": isolated,
        "filesystem": isolated,
        "processes": isolated,
        "process_limit": unprivileged,
        "drop_privileges": unprivileged,
        "resource_limits": True,
        "scrubbed_env": True,
        "cpu_time_limit": True,
    }


def _zygote_main() -> None:
    for name in _PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    z = _ZygoteState()
    found = _choose_mode(z, only=sys.argv[2] if len(sys.argv) > 2 else None)
    out = sys.stdout
    out.write(json.dumps({"mode": z.mode, "protections": found}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            del line
            resp = _sandbox(z, req)
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            resp = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(resp) + "\n")
        out.flush()


if __name__ == "__main__" and sys.argv[1:2] == ["--zygote"]:
    _zygote_main()
elif __name__ == "__main__" and sys.argv[1:] == ["--run"]:
    _run_main()
