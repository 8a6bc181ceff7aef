from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest
import torch
from custom.handlers.checkpoints import BestModelSaver, EpochCheckpointSaver, epoch_checkpoints, prepare_training_run


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
