"""Executors decide where units of work run: `local` (in this process, or N worker processes), `ray` (tasks on a
Ray cluster) and `slurm` (jobs through submitit). They share one scheduler: a unit (train a stage, evaluate a
checkpoint) is handed out once the unit it depends on has finished, as many at a time as the executor has slots.
Units run `steps.run_unit`, which writes only through the stage directory and the store; executors never import
the runner.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable

from ..errors import SftmixError
from .plan import Plan
from .steps import esc, eval_units, log, run_unit, stage_dir
from .store import Store

Submit = Callable[[str, str], Future]  # (kind, unit id) -> future of run_unit's result


def pending_units(plan: Plan, out: Path, store: Store) -> list[tuple[str, str, str | None]]:
    """(kind, id, dependency) for every unit not done yet, parents before children."""
    from ..train.trainer import stage_done
    from .steps import eval_id

    units = []
    for wave in plan.waves():
        for st in wave:
            # Not trained, or trained but not yet recorded in the store (ensure_stage then only records it).
            recorded = (store.stage(st.stage_id) or {}).get("status") == "done"
            if stage_done(stage_dir(out, st.stage_id)) is None or not recorded:
                units.append(("train", st.stage_id, st.parent_id))
    for checkpoint, _run in eval_units(plan):
        if not all(store.has_eval(eval_id(checkpoint, t, plan.backend)) for t in plan.tasks):
            units.append(("eval", checkpoint, checkpoint if checkpoint in plan.stages else None))
    return units


def schedule(plan: Plan, out: Path, store: Store, submit: Submit, slots: int, progress: bool,
             on_batch: Callable[[], None] | None = None) -> None:
    units = pending_units(plan, out, store)
    waiting = {(k, u): dep for k, u, dep in units}
    trained_pending = {u for k, u, _ in units if k == "train"}
    running: dict[Future, tuple[str, str]] = {}
    failures: list[str] = []
    bar = None
    if progress and units:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(units), desc="study", unit="unit", position=0, disable=None)
    t0 = time.time()
    while waiting or running:
        ready = [key for key, dep in waiting.items() if dep is None or dep not in trained_pending]
        ready.sort(key=lambda k: k[0] != "train")  # training first: it unblocks more work
        for key in ready[: max(0, slots - len(running))]:
            del waiting[key]
            running[submit(*key)] = key
        if on_batch is not None:
            on_batch()
        if not running:
            if waiting:  # only units whose dependency failed are left
                break
            continue
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for fut in done:
            kind, unit = running.pop(fut)
            try:
                res = fut.result()
            except Exception as e:  # a unit failed: keep what finished, report it, stop handing out more
                failures.append(f"{kind} {unit[:12]}: {type(e).__name__}: {e}")
                waiting.clear()
                continue
            if kind == "train":
                trained_pending.discard(unit)
            if bar is not None:
                bar.update(1)
            log(f"[green]done[/] {kind} {unit[:12]}: {esc(res.get('what', ''))}")
    if bar is not None:
        bar.close()
    if failures:
        raise SftmixError("some units failed (finished work is kept; run again to resume):\n  " + "\n  ".join(failures))
    log(f"{len(units)} units in {time.time() - t0:.0f}s")


def _threads(cfg, slots: int) -> int:
    return cfg.threads_per_worker or max(1, (os.cpu_count() or 1) // slots)


def run_local(plan: Plan, out: Path, store: Store, cfg, progress: bool) -> None:
    """One worker: every unit in this process (progress bars of training and generation show). N workers: processes,
    each with cores/N torch threads so they do not oversubscribe the CPU; on several GPUs, one GPU each."""
    out = Path(out)
    if cfg.workers == 1:
        def submit(kind, unit):
            fut: Future = Future()
            try:
                fut.set_result(run_unit(str(out), kind, unit, cfg.threads_per_worker, progress))
            except BaseException as e:  # noqa: BLE001 - the scheduler reports it
                if isinstance(e, KeyboardInterrupt):
                    raise
                fut.set_exception(e)
            return fut

        schedule(plan, out, store, submit, 1, progress)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    threads = _threads(cfg, cfg.workers)
    gpus = _gpu_count()
    # spawn, not fork: a forked child would inherit this process's torch threads and locks.
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(threads, gpus, ctx.Value("i", 0))) as pool:
        schedule(plan, out, store, lambda kind, unit: pool.submit(run_unit, str(out), kind, unit, threads),
                 cfg.workers, progress)


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch/CUDA: CPU workers
        return 0


def _init_worker(threads: int, gpus: int, counter) -> None:
    # Environment first: tokenizers and BLAS read theirs at import.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if gpus:
        with counter.get_lock():
            os.environ["CUDA_VISIBLE_DEVICES"] = str(counter.value % gpus)
            counter.value += 1
    import torch

    torch.set_num_threads(threads)


def run_ray(plan: Plan, out: Path, store: Store, cfg, progress: bool) -> None:
    """Units as Ray tasks with their CPU/GPU resources; an existing cluster with executor.address, else a local one."""
    try:
        import ray
    except ImportError:
        raise SftmixError("executor.kind ray needs Ray: pip install 'sftmix[ray]' (or pip install ray)") from None
    started = False
    if not ray.is_initialized():
        kw = {"address": cfg.address} if cfg.address else {"num_cpus": os.cpu_count(), "include_dashboard": False}
        ray.init(log_to_driver=False, **kw)
        started = True
    try:
        threads = _threads(cfg, cfg.workers)
        task = ray.remote(num_cpus=threads, num_gpus=cfg.gpus_per_worker, max_retries=0)(run_unit)
        schedule(plan, out, store, lambda kind, unit: task.remote(str(out), kind, unit, threads).future(),
                 cfg.workers, progress)
    finally:
        if started:
            ray.shutdown()


def run_slurm(plan: Plan, out: Path, store: Store, cfg, progress: bool) -> None:
    """Units as Slurm jobs through submitit; the units ready at the same time go in one job array. The output
    directory (stages, store) must be on a filesystem every node sees."""
    try:
        import submitit
    except ImportError:
        raise SftmixError("executor.kind slurm needs submitit: pip install 'sftmix[slurm]' "
                          "(or pip install submitit)") from None
    sc = cfg.slurm
    folder = Path(sc.folder) if sc.folder else Path(out) / "slurm"
    if sc.local:
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=sc.time_min)
    else:
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
        params = {"timeout_min": sc.time_min, "cpus_per_task": sc.cpus_per_task, "gpus_per_node": sc.gpus_per_node,
                  "slurm_array_parallelism": sc.array_parallelism, **sc.extra}
        if sc.partition:
            params["slurm_partition"] = sc.partition
        if sc.mem_gb:
            params["mem_gb"] = sc.mem_gb
        ex.update_parameters(**params)
    threads = cfg.threads_per_worker or sc.cpus_per_task
    waiters = ThreadPoolExecutor(max(1, cfg.workers))
    batch: list[tuple[Future, str, str]] = []

    def submit(kind, unit):
        fut: Future = Future()
        batch.append((fut, kind, unit))
        return fut

    def flush():
        # Everything ready now is submitted together, as one job array.
        if not batch:
            return
        todo = list(batch)
        batch.clear()
        with ex.batch():
            jobs = [ex.submit(run_unit, str(out), kind, unit, threads) for _, kind, unit in todo]
        for (fut, _, _), job in zip(todo, jobs):
            waiters.submit(_relay, job, fut)

    try:
        schedule(plan, out, store, submit, cfg.workers, progress, on_batch=flush)
    finally:
        waiters.shutdown(wait=False)


def _relay(job, fut: Future) -> None:
    try:
        fut.set_result(job.result())
    except Exception as e:  # noqa: BLE001 - handed to the scheduler
        fut.set_exception(e)


EXECUTORS = {"local": run_local, "ray": run_ray, "slurm": run_slurm}


def get_executor(kind: str):
    if kind not in EXECUTORS:
        raise SftmixError(f"unknown executor {kind!r}; available: {', '.join(EXECUTORS)}")
    return EXECUTORS[kind]
