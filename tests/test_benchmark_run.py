from __future__ import annotations

import json

import pytest
from custom.benchmark import run as benchmark
from custom.benchmark.methods import METHODS, Method
from custom.benchmark.profiles import PROFILES, Profile
from custom.metrics.protocol import TRACK_A, TRACK_B
from monai.bundle import ConfigParser

TINY = Profile(
    "tiny",
    budget=3,
    num_phantoms=8,
    overrides={
        "split_fractions": [0.75, 0.0, 0.25],
        "geometry#vol_shape": [32, 32, 32],
        "geometry#vol_spacing": 6.0,
        "geometry#det_shape": [32, 32],
        "geometry#det_spacing": 7.2,
        "discriminator_def#channels": 4,
        "discriminator_def#num_layers": 1,
        "discriminator_def#num_scales": 1,
        "points": 256,
    },
    networks={
        "psctnet": {"network_def#preset": "tiny"},
        "spider": {
            "network_def#unet_features": [4, 4, 8, 8, 16, 4],
            "network_def#feature_channels": 4,
            "network_def#hash_levels": 4,
            "network_def#hash_features": 2,
            "network_def#hash_log2_table_size": 10,
            "network_def#hidden": [16],
        },
    },
)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A tiny benchmark: the atlas, the X2CT-style generator, an identical twin trained after it, SPIDER."""
    out = tmp_path_factory.mktemp("benchmark")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(PROFILES, "tiny", TINY)
        patch.setitem(METHODS, "x2ct_twin", Method("x2ct_twin", "the same as x2ct", METHODS["x2ct"].overrides))
        records = benchmark.run(
            out=str(out), profile="tiny", methods=["mean_atlas", "x2ct", "x2ct_twin", "spider"], device="cpu"
        )
    return out, records


@pytest.mark.slow
def test_every_result_file_is_written_with_one_record_per_method(results):
    out, records = results
    for name in ("results.json", "results.csv", "cases.csv", "results.md", "comparison.png"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "results.json").read_text())[0]["variant"] == "mean_atlas"
    assert [r["variant"] for r in records] == ["mean_atlas", "x2ct", "x2ct_twin", "spider"]
    for record in records:
        assert list(record["track_a"]) == list(TRACK_A) and list(record["track_b"]) == list(TRACK_B)
        assert record["infer_ms"] > 0 and record["peak_mem_mb"] > 0 and record["device"].startswith("cpu")
        assert (out / "models" / f"{record['variant']}.pt").is_file()
        assert len(record["cases"]) >= 1 and record["profile"] == "tiny"
    assert records[0]["params"] == 32**3 and records[0]["iterations"] == 0 and records[0]["train_s_per_iter"] is None
    assert records[1]["iterations"] == TINY.budget and records[1]["params"] > 1000
    assert records[3]["iterations"] == TINY.budget and 0 <= records[3]["structure"]["bone_dice_labels"] <= 1
    assert "structure" not in records[1] and "Dice of its bone class" in (out / "results.md").read_text()
    assert "bone_dice_labels" in (out / "cases.csv").read_text().splitlines()[0]


@pytest.mark.slow
def test_methods_see_the_same_data_and_seed_whatever_ran_before(results):
    _, records = results
    x2ct, twin = records[1], records[2]
    assert twin["track_b"] == pytest.approx(x2ct["track_b"], rel=1e-5) and twin["params"] == x2ct["params"]
    atlas = records[0]["track_b"]["psnr_3d"]  # x2ct starts from the atlas: 3 updates move it, but not far
    assert x2ct["track_b"]["psnr_3d"] != atlas and abs(x2ct["track_b"]["psnr_3d"] - atlas) < 0.5


@pytest.mark.slow
def test_given_weights_are_measured_as_they_are_on_the_same_or_a_larger_test_split(results, tmp_path):
    out, records = results
    given = {"x2ct": str(out / "models" / "x2ct.pt")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(PROFILES, "tiny", TINY)
        same = benchmark.run(  # and the same weights again under a label of their own
            out=str(tmp_path / "same"),
            profile="tiny",
            methods=["x2ct", "x2ct@again"],
            weights={**given, "x2ct@again": given["x2ct"]},
            device="cpu",
        )
        larger = benchmark.run(
            out=str(tmp_path / "larger"), profile="tiny", methods=["x2ct"], weights=given, test_phantoms=16
        )
    assert same[0]["iterations"] is None and same[0]["track_b"] == pytest.approx(records[1]["track_b"], rel=1e-5)
    assert same[1]["variant"] == "x2ct@again" and same[1]["track_b"] == pytest.approx(same[0]["track_b"], rel=1e-6)
    smaller_cases = {c["case"] for c in same[0]["cases"]}
    assert smaller_cases < {c["case"] for c in larger[0]["cases"]}  # every held-out case stays held out


@pytest.mark.slow
def test_existing_results_are_refused_before_any_work(results):
    out, _ = results
    with pytest.raises(FileExistsError, match="results.json"):
        benchmark.run(out=str(out), profile="quick", methods=["mean_atlas"])


def test_unknown_methods_and_profiles_are_refused(tmp_path):
    with pytest.raises(ValueError, match="nerf"):
        benchmark.run(out=str(tmp_path), methods=["nerf"])
    with pytest.raises(ValueError, match="nerf@v1"):
        benchmark.run(out=str(tmp_path), methods=["psctnet@v1"], weights={"nerf@v1": "x.pt"})
    with pytest.raises(ValueError, match="profile"):
        benchmark.run(out=str(tmp_path), profile="huge")


@pytest.mark.parametrize("name", [name for name, method in METHODS.items() if method.fitted is None])
def test_a_trained_methods_handlers_are_the_bundles_schedules_without_validation(name):
    """The benchmark replaces ``train#handlers`` by config id: the bundle's list less its validation, no writers."""
    method, root = METHODS[name], benchmark.default_bundle_root()
    bundle = ConfigParser()
    bundle.read_config([str(root / "configs" / "train.json"), *(str(root / f) for f in method.config_files)])
    parser = benchmark.method_config(root, method, {})
    assert parser["train#handlers"] == [h for h in bundle["train#handlers"] if h["_target_"] != "ValidationHandler"]
    assert parser["train#writers"] == []
    # the trainer's handlers are those two lists, so replacing them replaces every handler it attaches
    assert parser["train#trainer#train_handlers"] == "$@train#handlers + @train#writers"
