"""Atomic file writes: readers see the old file or the complete new one, never a prefix, whatever kills the writer."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path


def atomic_write_chunks(path: str | Path, chunks: Iterable[bytes]) -> Path:
    """Stream `chunks` into a temp file beside `path` that replaces it only once all are written and synced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, so os.replace is a rename on one filesystem. os.open (not mkstemp) so the file gets the usual
    # umask permissions rather than 0600: reports and exports are meant to be shared.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt too: never leave the temp file behind
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    return atomic_write_chunks(path, [data.encode() if isinstance(data, str) else data])
