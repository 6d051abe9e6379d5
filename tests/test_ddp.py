"""Two CPU processes (DDP over gloo, through accelerate) train the same stage as one process with the same batch."""

import os
import socket

import torch.multiprocessing as mp

from sftmix.config import ModelConfig, TrainingConfig
from sftmix.data.example import Example
from sftmix.train.trainer import StageJob, train_stage


def _rows():
    # uneven lengths so the two ranks get different token counts in every batch
    return [Example([{"role": "user", "content": f"add {i} and {i * 7}" + " please" * (i % 5)},
                     {"role": "assistant", "content": f"{i} + {i * 7} = {i * 8}\n#### {i * 8}"}]) for i in range(24)]


def _job(out, packing):
    return StageJob("ddp", ModelConfig(name="tiny", finetune="full"), _rows(),
                    TrainingConfig(epochs=1, learning_rate=3e-3, batch_size=7, grad_accum=2, packing=packing), 0, None,
                    str(out))


def _worker(rank, world, port, out, cache):
    import torch

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world), SFTMIX_CACHE=cache)
    for packing in (True, False):  # both layouts in one launch: starting a process costs more than training here
        train_stage(_job(f"{out}-{packing}", packing), progress=False)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_follow_one_process(tmp_path):
    from sftmix.models import model_path
    from sftmix.train.trainer import stage_done

    model_path("tiny")  # build the cached model once, before two processes race for it
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path / "two"), os.environ["SFTMIX_CACHE"]),
                       nprocs=2, join=True, start_method="spawn")
    for packing in (True, False):
        one = train_stage(_job(tmp_path / f"one-{packing}", packing), progress=False)
        two = stage_done(tmp_path / f"two-{packing}")
        check(one, two)


def check(one, two):
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["steps"] == one["steps"] == 2  # 24 rows, batch 7 -> 4 batches, 2 per optimizer step
    assert two["train_tokens"] == one["train_tokens"]
    for a, b in zip(one["loss"], two["loss"]):
        assert abs(a - b) <= 1e-4 * abs(a), (one["loss"], two["loss"])
    # the second step's loss depends on the first update: equal losses mean equal gradients were applied
    assert one["loss"][1] < one["loss"][0]


def test_accelerate_config_runs_the_stage_under_accelerate_launch(tmp_path):
    """`training.accelerate_config` hands the stage to `accelerate launch` (here one CPU process: the launcher
    that needs no MPI); the launched rank trains with the same loop and the same result as in-process."""
    from sftmix.train.trainer import stage_done

    cfg = tmp_path / "acc.yaml"
    cfg.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nnum_processes: 1\nnum_machines: 1\n"
                   "machine_rank: 0\nuse_cpu: true\nmixed_precision: 'no'\n")
    job = _job(tmp_path / "launched", True)
    job.training = job.training.model_copy(update={"accelerate_config": str(cfg), "max_steps": 1})
    info = train_stage(job, progress=False)
    assert info == stage_done(tmp_path / "launched") and info["steps"] == 1
    here = _job(tmp_path / "here", True)
    here.training = here.training.model_copy(update={"max_steps": 1})
    assert abs(train_stage(here, progress=False)["loss"][0] - info["loss"][0]) <= 1e-5 * info["loss"][0]
