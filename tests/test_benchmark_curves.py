from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from custom.benchmark.curves import METRICS, curves, training_curve
from custom.benchmark.profiles import PROFILES
from PIL import Image
from test_benchmark_run import TINY as RUN_TINY

TINY = replace(  # the side-by-side benchmark's tiny profile with a validation split to measure on
    RUN_TINY, name="tiny_curves", overrides={**RUN_TINY.overrides, "split_fractions": [0.5, 0.25, 0.25]}
)


@pytest.mark.slow
def test_a_curve_runs_on_training_time_and_starts_from_the_untrained_model(tmp_path):
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(PROFILES, TINY.name, TINY)
        record = curves(out=str(tmp_path), methods="psctnet", seconds=3.0, every=1.0, profile=TINY.name, device="cpu")
        with pytest.raises(FileExistsError):
            curves(out=str(tmp_path), methods="psctnet", seconds=1.0, profile=TINY.name)
    points = record["curves"]["psctnet"]
    assert points[0]["seconds"] == 0 and points[0]["iteration"] == 0
    assert points[-1]["seconds"] >= 3.0 and len(points) >= 2  # the last point ends the budget
    assert all(a["iteration"] < b["iteration"] and a["seconds"] < b["seconds"] for a, b in zip(points, points[1:]))
    assert all(math.isfinite(p[name]) for p in points for name in METRICS)
    assert json.loads((tmp_path / "curves.json").read_text())["curves"]["psctnet"] == points
    assert Image.open(tmp_path / "curves.png").size[0] > 0


def test_fitted_methods_unknown_profiles_and_bad_times_are_refused(tmp_path):
    for arguments in (dict(methods="mean_atlas"), dict(profile="huge"), dict(seconds=0)):
        with pytest.raises(ValueError):
            curves(out=str(tmp_path), **{"methods": "psctnet", **arguments})


@pytest.mark.slow
def test_a_training_runs_curve_is_read_from_its_events(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "run"))
    for iteration in range(1, 7):  # two epochs of three updates, 10 s apart, validated after each epoch
        writer.add_scalar("loss", 1.0 / iteration, iteration, walltime=100.0 + 10 * iteration)
        if iteration % 3 == 0:
            for name, value in (("psnr_3d", 20.0 + iteration), ("mae_hu", 90.0 - iteration), ("bone_dice", 0.1)):
                writer.add_scalar(f"val_{name}", value, iteration // 3, walltime=100.0 + 10 * iteration + 5)
    writer.close()
    record = training_curve(str(tmp_path / "run"), out=str(tmp_path / "out"))
    points = record["curves"]["psctnet"]
    assert [(p["seconds"], p["iteration"], p["psnr_3d"], p["mae_hu"]) for p in points] == [
        (25.0, 3, 23.0, 87.0),
        (55.0, 6, 26.0, 84.0),
    ]
    assert (tmp_path / "out" / "curves.png").is_file()
    with pytest.raises(ValueError):
        training_curve(str(tmp_path), out=str(tmp_path / "empty"))  # no events there
