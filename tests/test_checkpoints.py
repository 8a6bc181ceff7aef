from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from custom.training.checkpoints import BestModelSaver, EpochCheckpointSaver, epoch_checkpoints, prepare_training_run


def _engine(epoch: int, best_metric_epoch: int = -1) -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(epoch=epoch, best_metric_epoch=best_metric_epoch))


def test_a_fresh_run_starts_from_scratch_in_empty_folders(tmp_path):
    assert prepare_training_run(tmp_path / "checkpoints", tmp_path / "model.pt", resume=False) is None


def test_resume_takes_the_latest_epoch(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        prepare_training_run(tmp_path, tmp_path / "model.pt", resume=True)
    for name in ("checkpoint_epoch=2.pt", "checkpoint_epoch=10.pt", "checkpoint_epoch=9.pt", "checkpoint_final.pt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in epoch_checkpoints(tmp_path)] == [f"checkpoint_epoch={n}.pt" for n in (2, 9, 10)]
    assert prepare_training_run(tmp_path, tmp_path / "model.pt", resume=True) == str(
        tmp_path / "checkpoint_epoch=10.pt"
    )


@pytest.mark.parametrize("earlier", ["checkpoint_epoch=3.pt", "model.pt"])
def test_a_fresh_run_refuses_an_earlier_runs_files_unless_told_to_overwrite(tmp_path, earlier):
    (tmp_path / earlier).write_bytes(b"earlier run")
    with pytest.raises(FileExistsError, match="--resume true.*--overwrite true"):
        prepare_training_run(tmp_path, tmp_path / "model.pt", resume=False)
    assert (tmp_path / earlier).read_bytes() == b"earlier run"
    assert prepare_training_run(tmp_path, tmp_path / "model.pt", resume=False, overwrite=True) is None
    assert not epoch_checkpoints(tmp_path)  # old checkpoints go now; model.pt is replaced at the next best


def test_epoch_checkpoints_hold_every_state_and_only_the_newest_is_kept(tmp_path):
    network = torch.nn.Linear(2, 1)
    optimizer = torch.optim.Adam(network.parameters())
    saver = EpochCheckpointSaver(tmp_path, {"generator": network, "g_optimizer": optimizer})
    saver(_engine(1))
    with torch.no_grad():
        network.weight += 1
    saver(_engine(2))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_epoch=2.pt"]
    state = torch.load(tmp_path / "checkpoint_epoch=2.pt", weights_only=True)
    assert state.keys() == {"generator", "g_optimizer"} and torch.equal(state["generator"]["weight"], network.weight)


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path):
    class Broken:
        def state_dict(self):
            return {"fine": torch.zeros(1)}

    broken = Broken()
    saver = EpochCheckpointSaver(tmp_path, {"part": broken})
    saver(_engine(1))
    broken.state_dict = lambda: {"unpicklable": lambda: None}
    with pytest.raises((pickle.PicklingError, AttributeError)):  # whichever the pickler raises
        saver(_engine(2))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_epoch=1.pt"]


def test_the_best_model_is_saved_only_at_a_new_best(tmp_path):
    network = torch.nn.Linear(2, 1)
    saver = BestModelSaver(tmp_path / "model.pt", network)
    saver(_engine(epoch=1, best_metric_epoch=1))
    first = (tmp_path / "model.pt").read_bytes()
    with torch.no_grad():
        network.weight += 1
    saver(_engine(epoch=2, best_metric_epoch=1))  # no improvement
    assert (tmp_path / "model.pt").read_bytes() == first
    saver(_engine(epoch=3, best_metric_epoch=3))
    assert torch.equal(torch.load(tmp_path / "model.pt", weights_only=True)["weight"], network.weight)


KILLED_DURING_SAVE = """
import os, signal, sys, types
import torch
import custom.training.checkpoints as checkpoints

folder = sys.argv[1]
network = torch.nn.Linear(3, 2)
saver = checkpoints.EpochCheckpointSaver(folder, {"generator": network})
saver(types.SimpleNamespace(state=types.SimpleNamespace(epoch=1)))
real_save = torch.save

def save_then_die(content, path):  # half the bytes reach the disk, then the process is killed
    real_save(content, path)
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = save_then_die
saver(types.SimpleNamespace(state=types.SimpleNamespace(epoch=2)))
"""


@pytest.mark.slow
def test_a_kill_during_a_save_keeps_the_last_checkpoint_and_the_next_run_resumes_from_it(tmp_path):
    root = Path(__file__).resolve().parents[1]
    environment = {**os.environ, "PYTHONPATH": str(root)}
    killed = subprocess.run([sys.executable, "-c", KILLED_DURING_SAVE, str(tmp_path)], env=environment)
    assert killed.returncode == -signal.SIGKILL
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[1] == "checkpoint_epoch=1.pt" and names[0].startswith(".checkpoint_epoch=2.pt.")  # a temporary
    assert prepare_training_run(tmp_path, tmp_path / "model.pt", resume=True) == str(tmp_path / "checkpoint_epoch=1.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_epoch=1.pt"]  # the temporary is gone
    state = torch.load(tmp_path / "checkpoint_epoch=1.pt", weights_only=True)
    assert state["generator"].keys() == {"weight", "bias"}
