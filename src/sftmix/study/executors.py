"""Executors decide where stages train and runs evaluate. Each takes (plan, tasks, out, store, batch_size, progress)
and must leave the store complete; `Plan.waves()` gives the dependency order a parallel executor needs."""

from __future__ import annotations


def get_executor(kind: str):
    if kind == "local":
        from .runner import run_local

        return run_local
    raise ValueError(f"unknown executor {kind!r}; available: local")
