"""Named crash points for the kill -9 tests: `SFTMIX_CRASH_AT=point:n` kills this process with SIGKILL the n-th
time it reaches `point` (a store write half done, a stage directory written but not yet moved into place...), so the
tests can show that resume survives a crash at exactly the worst moment. Unset, a crash point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get("SFTMIX_CRASH_AT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
