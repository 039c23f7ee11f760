"""``torchrun`` DistributedDataParallel on 2 CPU processes (gloo) against one process: the same
global batches, so the per-step losses agree (up to BatchNorm statistics computed per rank)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.dicom_peers import free_port
from tests.training.test_train import REPO, UNPAIRED, read_steps, tiny_overrides
from training.train.loop import train
from training.train.recipe import load_recipe


def test_ddp_on_two_gloo_processes_matches_one_process(shared_data: Path, tmp_path: Path) -> None:
    extra = {
        "optim.max_steps": 3,
        "optim.epochs": 2,
        "text.language": "en",
        "run.tensorboard": False,
    }
    single = tmp_path / "single"
    train(load_recipe(UNPAIRED, tiny_overrides(shared_data, single, **extra)))

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # Seen once in three clean CI runs on 2 loaded cores: a rank aborted at exit with "terminate
    # called without an active exception" (a C++ thread of the gloo process group torn down at
    # interpreter exit). One more try only for that exact abort; any other failure fails.
    for attempt in range(2):
        ddp = tmp_path / f"ddp{attempt}"
        sets = [a for o in tiny_overrides(shared_data, ddp, **extra) for a in ("--set", o)]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc_per_node",
                "2",
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                str(free_port()),
                "-m",
                "training.cli",
                "train",
                str(UNPAIRED),
                *sets,
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        if proc.returncode == 0 or "terminate called without an active" not in proc.stderr:
            break
    assert proc.returncode == 0, proc.stderr[-3000:]

    want, got = read_steps(single), read_steps(ddp)
    assert [r["step"] for r in got] == [r["step"] for r in want] == ["1", "2", "3"]
    for a, b in zip(want, got, strict=True):
        for key in ("train/loss", "train/findings", "train/lm", "train/boxes"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=0.05, abs=1e-3), (key, a, b)
    # Only rank 0 writes outputs; both ranks trained (the run validated and checkpointed).
    assert (ddp / "checkpoints" / "last.pt").is_file() and (ddp / "validation.json").is_file()
