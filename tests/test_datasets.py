from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from custom.data.canonicalise import CanonicaliseCTd
from custom.data.ct_files import LoadCTd
from custom.data.datasets import (
    SPLITS,
    MakePhantomd,
    ct_folder_datalist,
    json_datalist,
    load_datalist,
    phantom_datalist,
    split_datalist,
    xray_datalist,
    xray_folder_datalist,
    xray_pair,
)
from custom.data.pose import RandHeadPosed
from custom.data.simulate import SimulateBiplanarXRayd, XRayAugmentation
from custom.imaging.geometry import BiplanarGeometry
from custom.phantom import make_phantom
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose

SMALL = BiplanarGeometry(vol_shape=(32,) * 3, vol_spacing=6.0, det_shape=(32, 32))


def test_phantom_datalist_is_deterministic_with_distinct_seeds():
    items = phantom_datalist(20, seed=3)
    assert items == phantom_datalist(20, seed=3) != phantom_datalist(20, seed=4)
    assert len({i["phantom_seed"] for i in items}) == 20 and items[7]["case"] == "phantom_007"


@pytest.mark.parametrize("n", [3, 10, 64])
def test_split_is_a_deterministic_partition(n):
    items = [{"case": f"case_{i}"} for i in range(n)]
    split = split_datalist(items, seed=1)
    assert all(split[s] for s in ("train", "val", "test"))  # tiny lists still get every split
    cases = [i["case"] for part in split.values() for i in part]
    assert sorted(cases) == sorted(i["case"] for i in items)  # every case exactly once
    assert split == split_datalist(list(reversed(items)), seed=1)  # the order of the list does not matter
    assert split != split_datalist(items, seed=2)


def test_split_keeps_cases_in_place_as_data_grows_and_matches_the_fractions():
    items = [{"case": f"ct_{i:04d}"} for i in range(2000)]
    small, large = split_datalist(items[:1000]), split_datalist(items)
    where = {item["case"]: name for name, part in large.items() for item in part}
    assert all(where[item["case"]] == name for name, part in small.items() for item in part)
    shares = [len(large[s]) / 2000 for s in ("train", "val", "test")]
    np.testing.assert_allclose(shares, (0.8, 0.1, 0.1), atol=0.025)


def _touch_dicom(path):
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)


def test_ct_folder_lists_volume_files_and_dicom_series_folders(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "series").mkdir()
    (tmp_path / ".cache").mkdir()
    names = (
        "a.nii.gz",
        "a_labels.nii.gz",
        "sub/b.mha",
        "sub/b_seg.nrrd",
        "notes.txt",
        ".hidden.nii.gz",
        ".cache/c.nii",
    )
    for name in names:
        (tmp_path / name).write_bytes(b"")
    _touch_dicom(tmp_path / "series" / "1.2.840.1")  # named by UID
    _touch_dicom(tmp_path / "DICOMDIR")  # an export's index is not a series
    items = ct_folder_datalist(tmp_path)
    assert [i["case"] for i in items] == ["a.nii.gz", "series", "sub/b.mha"]
    assert items[1]["ct"] == str(tmp_path / "series")


def test_json_datalist_sections_and_relative_paths(tmp_path):
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": [{"ct": "a.nii.gz", "age": 3}], "test": [{"ct": "/abs/b.nii"}]}))
    sections = json_datalist(path)
    train = {"case": "a.nii.gz", "ct": str(tmp_path / "a.nii.gz"), "age": 3}
    assert sections == {"train": [train], "test": [{"case": "/abs/b.nii", "ct": "/abs/b.nii"}]}
    assert load_datalist(path, "test") == sections["test"] and len(load_datalist(path, None)) == 2
    assert load_datalist(path, "all") == load_datalist(path, None)
    # without sections the cases are split, the same way wherever the datalist lives
    cases = json.dumps([{"ct": f"{i}.nii"} for i in range(20)])
    splits = []
    for folder in (tmp_path / "here", tmp_path / "there"):
        folder.mkdir()
        (folder / "plain.json").write_text(cases)
        splits.append({s: [i["case"] for i in load_datalist(folder / "plain.json", s)] for s in SPLITS})
    assert splits[0] == splits[1] and sum(map(len, splits[0].values())) == 20 and all(splits[0].values())


@pytest.mark.parametrize(
    "call",
    [
        lambda tmp: phantom_datalist(0),
        lambda tmp: split_datalist([{}] * 5, fractions=(0.5, 0.5)),
        lambda tmp: split_datalist([{}] * 5, fractions=(0.9, 0.2, -0.1)),
        lambda tmp: split_datalist([{}], fractions=(0.8, 0.1, 0.1)),
        lambda tmp: ct_folder_datalist(tmp),  # empty folder
        lambda tmp: ct_folder_datalist(tmp / "missing"),
        lambda tmp: load_datalist("phantom", split="training"),
        lambda tmp: load_datalist(tmp / "missing.json"),
        lambda tmp: (tmp / "bad.json").write_text("{") and load_datalist(tmp / "bad.json"),
        lambda tmp: (tmp / "odd.json").write_text('{"cases": []}') and load_datalist(tmp / "odd.json"),
        lambda tmp: (tmp / "t.json").write_text('{"training": [{"ct": "x"}]}') and load_datalist(tmp / "t.json", "val"),
    ],
)
def test_ill_arg(call, tmp_path):
    with pytest.raises(ValueError):
        call(tmp_path)


def test_phantom_dataset_caches_the_rendering_and_simulates_per_epoch():
    items = load_datalist("phantom", "train", n=5, seed=0)
    transform = Compose(
        [
            MakePhantomd(SMALL, pose=False),
            RandHeadPosed(keys="ct", label_keys="labels"),  # spacing from the affine
            SimulateBiplanarXRayd(keys="ct", geometry=SMALL, augmentation=XRayAugmentation()),
        ]
    )
    transform.set_random_state(0)
    dataset = CacheDataset(items, transform, progress=False)
    first = dataset[0]
    expected = make_phantom(items[0]["phantom_seed"], SMALL, pose=False)
    assert torch.equal(dataset._cache[0]["ct"][0], expected.hu)  # the deterministic part is cached
    assert first["image"].shape == (2, 32, 32) and first["ct"].shape == (1, 32, 32, 32)
    assert np.allclose(first["ct"].affine.numpy(), SMALL.affine)
    assert json.loads(first["phantom"])["seed"] == items[0]["phantom_seed"]
    assert not torch.equal(dataset[0]["image"], first["image"])  # augmentation draws anew each time
    batch = next(iter(DataLoader(dataset, batch_size=2)))
    assert batch["image"].shape == (2, 2, 32, 32) and len(batch["phantom"]) == 2


def test_a_ct_folder_becomes_training_pairs(tmp_path):
    geometry = BiplanarGeometry(vol_shape=(64,) * 3, vol_spacing=3.0, det_shape=(64, 64))
    phantom = make_phantom(2, geometry, pose=False, age_months=12.0)
    # the same head stored LPS (flipped x and y) at half the resolution, as a scanner might write it
    lps = np.diag([-6.0, -6.0, 6.0, 1.0])
    lps[:3, 3] = [93.0, 93.0, -93.0]
    coarse = torch.nn.functional.avg_pool3d(phantom.hu[None, None], 2)[0, 0].numpy()
    nib.save(nib.Nifti1Image(coarse[::-1, ::-1].copy(), lps), tmp_path / "head.nii.gz")
    items = load_datalist(tmp_path, None)
    assert [Path(item["ct"]).name for item in items] == ["head.nii.gz"]
    pipeline = Compose(
        [LoadCTd("ct"), CanonicaliseCTd(geometry=geometry, keys="ct"), SimulateBiplanarXRayd("ct", geometry=geometry)]
    )
    case = pipeline(items[0])
    # references through the same pipeline: the same coarse head stored RAS, and the phantom at full resolution
    ras = np.diag([6.0, 6.0, 6.0, 1.0])
    ras[:3, 3] = geometry.affine[:3, 3] + 1.5  # the first coarse voxel's centre
    nib.save(nib.Nifti1Image(coarse, ras), tmp_path / "ras.nii")
    nib.save(nib.Nifti1Image(phantom.hu.numpy(), geometry.affine), tmp_path / "full.nii")
    same, full = (pipeline({"ct": str(tmp_path / name)})["image"] for name in ("ras.nii", "full.nii"))
    assert case["ct"].shape == (1, 64, 64, 64) and np.allclose(case["ct"].affine.numpy(), geometry.affine)
    assert torch.allclose(case["image"], same, atol=1e-5)  # LPS storage changes nothing
    correlation = np.corrcoef(case["image"].flatten().numpy(), full.flatten().numpy())[0, 1]
    assert correlation > 0.93  # the same radiographs up to resolution (6 mm voxels lose the thin infant bone)


def _touch(*paths):
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return [str(p) for p in paths]


def test_xray_pairs_from_files_are_named_after_the_frontal_file(tmp_path):
    frontal, lateral = _touch(tmp_path / "child_07_PA.dcm", tmp_path / "child_07_lat.dcm")
    assert xray_datalist(frontal=frontal, lateral=lateral) == [
        {"case": "child_07", "frontal": frontal, "lateral": lateral}
    ]
    assert xray_datalist(frontal=frontal, lateral=lateral, case="mine")[0]["case"] == "mine"
    uid, other = _touch(tmp_path / "1.2.840.10008.1.dcm", tmp_path / "1.2.840.10008.2.dcm")
    assert xray_datalist(frontal=uid, lateral=other)[0]["case"] == "1.2.840.10008.1"  # a UID is not cut at its dots
    frontal, lateral = _touch(tmp_path / "child_09" / "frontal.png", tmp_path / "child_09" / "lateral.png")
    assert xray_datalist(frontal=frontal, lateral=lateral)[0]["case"] == "child_09"  # named by its folder


def test_xray_datalist_resolves_paths_and_uses_the_test_section(tmp_path):
    _touch(tmp_path / "x" / "f.png", tmp_path / "x" / "l.png")
    (tmp_path / "list.json").write_text(json.dumps({"test": [{"frontal": "x/f.png", "lateral": "x/l.png"}]}))
    (item,) = xray_datalist(tmp_path / "list.json")
    assert item == {"case": "f", "frontal": str(tmp_path / "x/f.png"), "lateral": str(tmp_path / "x/l.png")}
    (tmp_path / "train.json").write_text(json.dumps({"training": [{"frontal": "f.png", "lateral": "l.png"}]}))
    with pytest.raises(ValueError, match="no 'test' section"):
        xray_datalist(tmp_path / "train.json")


def test_xray_datalist_takes_both_views_or_neither_and_checks_the_list(tmp_path):
    frontal, lateral = _touch(tmp_path / "f.png", tmp_path / "l.png")
    sample = dict(zip(("frontal", "lateral"), _touch(tmp_path / "s" / "sample_frontal.png", tmp_path / "s" / "l.png")))
    with pytest.raises(ValueError, match=r"only the frontal X-ray was given .*f.png\); give the lateral one too"):
        xray_datalist(frontal=frontal, sample=sample)  # never paired with the sample's other view
    with pytest.raises(ValueError, match=r"only the lateral X-ray was given .*l.png\); give the frontal one too"):
        xray_datalist(lateral=lateral, sample=sample)
    assert xray_datalist(sample=sample) == [{"case": "sample", **sample}]
    assert xray_datalist(frontal=frontal, lateral=lateral, sample=sample)[0]["case"] == "f"
    (tmp_path / "list.json").write_text(json.dumps([{"case": "c", "lateral": "l.png"}]))
    with pytest.raises(ValueError, match="'c' has no frontal X-ray"):
        xray_datalist(tmp_path / "list.json")
    twins = [
        {"case": "a/b", "frontal": "f.png", "lateral": "l.png"},
        {"case": "a b", "frontal": "l.png", "lateral": "f.png"},
    ]
    (tmp_path / "twins.json").write_text(json.dumps(twins))
    with pytest.raises(ValueError, match="would both be written as 'a_b'"):
        xray_datalist(tmp_path / "twins.json")
    with pytest.raises(ValueError, match=r"give a frontal and a lateral X-ray file \(--frontal, --lateral\)"):
        xray_datalist()


VIEWS = ("frontal", "lateral")


def test_folder_scans_follow_symbolic_links_to_folders_once(tmp_path):
    pair = _touch(tmp_path / "store" / "child07_pa.png", tmp_path / "store" / "child07_lat.png")
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "linked").symlink_to(tmp_path / "store", target_is_directory=True)
    (tmp_path / "store" / "loop").symlink_to(tmp_path / "scans", target_is_directory=True)  # scans -> store -> scans
    assert xray_folder_datalist(tmp_path / "scans") == [
        {
            "case": "linked/child07",
            **{v: str(tmp_path / "scans" / "linked" / Path(f).name) for v, f in zip(VIEWS, pair)},
        }
    ]
    series = tmp_path / "dicom_store" / "series"
    series.mkdir(parents=True)
    (series / "IM0001").write_bytes(b"\0" * 128 + b"DICM")
    (tmp_path / "cts").mkdir()
    (tmp_path / "cts" / "child07").symlink_to(series, target_is_directory=True)
    (series / "back").symlink_to(tmp_path / "cts", target_is_directory=True)
    assert ct_folder_datalist(tmp_path / "cts") == [{"case": "child07", "ct": str(tmp_path / "cts" / "child07")}]


def test_a_folder_of_xrays_pairs_files_by_case_and_view(tmp_path):
    flat = _touch(tmp_path / "b_lat.png", tmp_path / "b_PA.png", tmp_path / "a_frontal.dcm", tmp_path / "a_lateral.dcm")
    nested = _touch(tmp_path / "c" / "frontal.png", tmp_path / "c" / "lateral.tif")
    _touch(tmp_path / "notes.txt", tmp_path / "scout.png", tmp_path / ".hidden" / "x_frontal.png")  # not views
    assert xray_folder_datalist(tmp_path) == [
        {"case": "a", "frontal": flat[2], "lateral": flat[3]},
        {"case": "b", "frontal": flat[1], "lateral": flat[0]},
        {"case": "c", "frontal": nested[0], "lateral": nested[1]},
    ]
    assert xray_datalist(folder=tmp_path) == xray_folder_datalist(tmp_path)
    deeper = _touch(*(tmp_path / "deep" / s / "x" / f"{v}.png" for s in "pq" for v in ("frontal", "lateral")))
    deeper += _touch(tmp_path / "deep" / "r" / "y_pa.png", tmp_path / "deep" / "r" / "y_lat.png")
    assert [(i["case"], i["frontal"]) for i in xray_folder_datalist(tmp_path / "deep")] == [
        ("p/x", deeper[0]),
        ("q/x", deeper[2]),
        ("r/y", deeper[4]),
    ]
    _touch(tmp_path / "d_frontal.png", tmp_path / "b_ap.png")
    with pytest.raises(ValueError, match="'b' has 2 frontal files.*'d' has 0 lateral files"):
        xray_folder_datalist(tmp_path)
    _touch(tmp_path / "empty" / "x.png")
    with pytest.raises(ValueError, match="no X-ray pair"):
        xray_folder_datalist(tmp_path / "empty")


def test_one_xray_finds_its_other_view_beside_it(tmp_path):
    frontal, lateral, _ = _touch(tmp_path / "k_pa.png", tmp_path / "k_lateral.dcm", tmp_path / "other_lat.png")
    assert xray_pair(frontal) == xray_pair(lateral) == {"case": "k", "frontal": frontal, "lateral": lateral}
    with pytest.raises(ValueError, match="expected one frontal X-ray of case 'other'"):
        xray_pair(tmp_path / "other_lat.png")
    with pytest.raises(ValueError, match="does not say its view"):
        xray_pair(_touch(tmp_path / "scout.png")[0])
    assert xray_pair(_touch(tmp_path / "m" / "frontal.png", tmp_path / "m" / "lateral.png")[0])["case"] == "m"
    _touch(*(tmp_path / "two" / f"{case}_{view}.png" for case in "pq" for view in ("frontal", "lateral")))
    with pytest.raises(ValueError, match="holds 2 X-ray pairs"):
        xray_pair(tmp_path / "two")
