from __future__ import annotations

import custom.outputs.reconstruction as outputs
import nibabel as nib
import numpy as np
import pytest
import torch
from custom.imaging.geometry import BiplanarGeometry
from custom.imaging.physics import hu_to_network
from custom.outputs.reconstruction import SaveReconstructiond
from custom.phantom import LABELS

GEOMETRY = BiplanarGeometry(vol_shape=(16, 20, 24), vol_spacing=8.0, det_shape=(16, 16), det_spacing=10.0)


def _item(case="case 1", bone=True):
    hu = torch.full((1, *GEOMETRY.vol_shape), -1000.0)
    if bone:
        hu[:, 4:12, 5:15, 6:18] = 1200.0
    return {"pred": hu_to_network(hu), "image": torch.rand(2, 16, 16), "case": case}


def test_writes_the_ct_in_hu_on_the_grid_with_its_affine(tmp_path):
    out = SaveReconstructiond(GEOMETRY, tmp_path)(_item())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_1.nii.gz", "case_1.png"]
    assert out["outputs"] == [str(tmp_path / "case_1.nii.gz"), str(tmp_path / "case_1.png")]
    image = nib.load(tmp_path / "case_1.nii.gz")
    assert image.get_data_dtype() == np.int16 and np.allclose(image.affine, GEOMETRY.affine)
    hu = np.asanyarray(image.dataobj)
    assert hu.max() == 1200 and hu.min() == -1000


def test_refuses_to_overwrite_before_writing_anything(tmp_path):
    (tmp_path / "case_1.png").write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="case_1.png"):
        SaveReconstructiond(GEOMETRY, tmp_path, dicom=True)(_item())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_1.png"]
    assert (tmp_path / "case_1.png").read_bytes() == b"keep"
    SaveReconstructiond(GEOMETRY, tmp_path, overwrite=True)(_item())
    assert (tmp_path / "case_1.png").read_bytes() != b"keep"


def test_a_ct_without_bone_skips_the_mesh_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="no bone surface"):
        out = SaveReconstructiond(GEOMETRY, tmp_path, stl=True, preview=False)(_item(bone=False))
    assert [p.name for p in tmp_path.iterdir()] == ["case_1.nii.gz"] and out["outputs"] == [
        str(tmp_path / "case_1.nii.gz")
    ]


def test_a_predicted_label_map_is_written_and_its_bone_class_gives_the_mesh(tmp_path):
    item = _item(bone=False)  # no bone by HU: the mesh must come from the labels
    labels = torch.ones(1, *GEOMETRY.vol_shape, dtype=torch.uint8)
    labels[:, 4:12, 5:15, 6:18] = LABELS["bone"]
    out = SaveReconstructiond(GEOMETRY, tmp_path, stl=True, preview=False, label_key="pred_labels")(
        {**item, "pred_labels": labels}
    )
    names = ["case_1.nii.gz", "case_1_labels.nii.gz", "case_1_bone.stl"]
    assert out["outputs"] == [str(tmp_path / name) for name in names]
    image = nib.load(tmp_path / "case_1_labels.nii.gz")
    assert image.get_data_dtype() == np.uint8 and np.allclose(image.affine, GEOMETRY.affine)
    assert np.array_equal(np.asanyarray(image.dataobj), labels[0].numpy())
    corners = np.frombuffer((tmp_path / "case_1_bone.stl").read_bytes()[84:], dtype=np.uint8).size
    assert corners > 0


@pytest.mark.parametrize("failing", ["write_ct_dicom", "write_bone_stl", "montage"])
def test_a_write_failure_mid_case_leaves_nothing_of_that_case(tmp_path, monkeypatch, failing):
    SaveReconstructiond(GEOMETRY, tmp_path, preview=False)(_item("earlier"))  # a complete case stays

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, failing, disk_full)
    writer = SaveReconstructiond(GEOMETRY, tmp_path, dicom=True, stl=True)
    with pytest.raises(OSError, match="No space left"):
        writer(_item())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier.nii.gz"]  # neither outputs nor temporaries
    monkeypatch.undo()
    writer(_item())  # the rerun needs no clean-up
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "case_1.nii.gz",
        "case_1.png",
        "case_1_bone.stl",
        "case_1_dicom",
        "earlier.nii.gz",
    ]
