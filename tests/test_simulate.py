from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from custom.data.pose import RandHeadPosed, rigid_motion
from custom.data.simulate import DetectorModel, SimulateBiplanarXRay, SimulateBiplanarXRayd, XRayAugmentation
from custom.imaging.geometry import BiplanarGeometry
from custom.imaging.physics import MU_WATER, detector_blur, hu_to_mu, normalise_radiograph
from custom.imaging.projector import Projector
from custom.phantom import make_phantom
from monai.data import MetaTensor
from monai.transforms import Compose

GEOMETRY = BiplanarGeometry(vol_shape=(48,) * 3, vol_spacing=4.0, det_shape=(48, 48))
PARALLEL = BiplanarGeometry(vol_shape=(32,) * 3, vol_spacing=4.0, det_shape=(32, 32), beam="parallel")


@pytest.fixture(scope="module")
def ct() -> torch.Tensor:
    return make_phantom(0, GEOMETRY).hu[None]  # (1, X, Y, Z) HU


def test_without_augmentation_the_simulator_is_projector_plus_physics(ct):
    expected = Projector(GEOMETRY)(hu_to_mu(ct)[None])[0, 0]  # (2, H, W) line integrals
    raw = SimulateBiplanarXRay(GEOMETRY, normalise=False)
    assert torch.equal(raw(ct), expected) and torch.equal(raw(ct[0]), expected)
    simulated = SimulateBiplanarXRay(GEOMETRY)(MetaTensor(ct))
    assert type(simulated) is torch.Tensor and simulated.shape == (2, *GEOMETRY.det_shape)
    assert torch.equal(simulated, normalise_radiograph(expected))
    assert torch.equal(simulated, SimulateBiplanarXRay(GEOMETRY)(ct))  # deterministic


def test_detector_blur_gain_and_offset_act_on_intensities(ct):
    line_integrals = SimulateBiplanarXRay(GEOMETRY, normalise=False)(ct)
    detector = DetectorModel(blur_mm=GEOMETRY.det_spacing, gain=2.0, offset=0.01)
    simulated = SimulateBiplanarXRay(GEOMETRY, detector, normalise=False)(ct)
    expected = -torch.log(2 * detector_blur(torch.exp(-line_integrals), 1.0) + 0.01)
    assert torch.allclose(simulated, expected, atol=1e-5)
    gain_only = SimulateBiplanarXRay(GEOMETRY, DetectorModel(gain=2.0), normalise=False)(ct)
    assert torch.allclose(gain_only, line_integrals - math.log(2), atol=1e-5)
    assert torch.allclose(normalise_radiograph(gain_only), normalise_radiograph(line_integrals), atol=1e-5)


def test_quantum_noise_has_the_poisson_variance_of_the_dose():
    water = torch.zeros(PARALLEL.vol_shape)  # 0 HU fills the grid: every ray crosses 128 mm of water
    photons = 2e4
    simulator = SimulateBiplanarXRay(PARALLEL, DetectorModel(photons=photons), normalise=False)
    simulator.set_random_state(0)
    images = torch.stack([simulator(water) for _ in range(8)])
    line_integral = MU_WATER * PARALLEL.fov[0]
    assert images.mean().item() == pytest.approx(line_integral, abs=2e-3)
    expected_variance = 1 / (photons * math.exp(-line_integral))  # var(log N) = 1 / E[N]
    assert images.var().item() == pytest.approx(expected_variance, rel=0.05)


def test_augmentation_draws_reproducible_detectors_within_range(ct):
    augmentation = XRayAugmentation()
    simulator = SimulateBiplanarXRay(GEOMETRY, augmentation=augmentation)
    first = simulator.set_random_state(3)(ct)
    again = simulator.set_random_state(3)(ct)
    other = simulator.set_random_state(4)(ct)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.min() >= 0 and first.max() <= 1
    random = np.random.RandomState(0).random_sample
    for _ in range(50):
        drawn = augmentation.draw(random)
        for name in ("photons", "blur_mm", "gain", "offset", "gamma"):
            low, high = getattr(augmentation, name)
            assert low <= getattr(drawn, name) <= high


def test_dictionary_wrapper_writes_the_network_input(ct):
    simulate = SimulateBiplanarXRayd(keys="ct", output_key="image", geometry=GEOMETRY)
    out = simulate({"ct": ct, "case": "x"})
    assert torch.equal(out["image"], SimulateBiplanarXRay(GEOMETRY)(ct)) and out["case"] == "x"
    assert torch.equal(out["ct"], ct)


@pytest.mark.parametrize(
    "build",
    [
        lambda: DetectorModel(photons=0),
        lambda: DetectorModel(blur_mm=-1),
        lambda: DetectorModel(gain=0),
        lambda: DetectorModel(gamma=-1),
        lambda: XRayAugmentation(photons=(1e5, 1e3)),
        lambda: XRayAugmentation(blur_mm=(-1, 0)),
        lambda: SimulateBiplanarXRayd(keys=("ct", "other")),
        lambda: SimulateBiplanarXRay(GEOMETRY)(torch.zeros(1, 16, 16, 16)),
        lambda: RandHeadPosed(max_rotation_deg=-1),
    ],
)
def test_ill_arg(build):
    with pytest.raises(ValueError):
        build()


def test_rigid_motion_rotates_about_the_centre_and_pads():
    volume = torch.zeros(1, 9, 11, 13)
    volume[0, 6, 5, 6] = 1  # 2 voxels right of the centre (4, 5, 6)
    quarter_turn = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])  # about z: +x -> +y
    moved = rigid_motion(volume, quarter_turn, (0, 0, 1), "nearest", 0.0)
    assert (moved[0] == 1).nonzero().tolist() == [[4, 7, 7]]
    assert torch.equal(rigid_motion(volume, np.eye(3), (0, 0, 0), "bilinear", 0.0), volume)
    padded = rigid_motion(torch.zeros(1, 8, 8, 8), np.eye(3), (3, 0, 0), "bilinear", -1024.0)
    assert torch.allclose(padded[0, :3], torch.tensor(-1024.0), atol=1e-3)
    assert torch.allclose(padded[0, 3:], torch.tensor(0.0), atol=1e-3)


def test_head_pose_moves_ct_and_labels_together():
    ct = torch.full((1, 24, 24, 24), -1024.0)
    labels = torch.zeros(1, 24, 24, 24, dtype=torch.uint8)
    ct[0, 15:19, 6:10, 12:16], labels[0, 15:19, 6:10, 12:16] = 2000.0, 3  # a bone block off the centre
    posed = RandHeadPosed(keys="ct", label_keys="labels", max_rotation_deg=20, max_shift_mm=6, spacing=2.0)
    out = posed.set_random_state(2)({"ct": ct, "labels": labels})
    assert out["labels"].dtype == torch.uint8 and not torch.equal(out["labels"], labels)

    def centroid(mask: torch.Tensor) -> torch.Tensor:
        return mask.nonzero().float().mean(0)

    moved_ct, moved_labels = centroid(out["ct"][0] > 500), centroid(out["labels"][0] == 3)
    assert torch.linalg.norm(moved_ct - centroid(ct[0] > 500)) > 1  # it moved ...
    assert torch.allclose(moved_ct, moved_labels, atol=0.5)  # ... and both maps moved alike
    assert out["ct"].min() >= -1024.01


def test_head_pose_reads_the_voxel_size_from_the_affine():
    ct = torch.full((1, 16, 16, 16), -1024.0)
    ct[0, 6:10, 6:10, 6:10] = 1000.0
    moved = {}
    for spacing in (2.0, 4.0):
        meta = MetaTensor(ct, affine=torch.diag(torch.tensor([spacing, spacing, spacing, 1.0])))
        posed = RandHeadPosed(max_rotation_deg=0, max_shift_mm=8).set_random_state(5)
        moved[spacing] = posed({"ct": meta})["ct"][0]
        explicit = RandHeadPosed(max_rotation_deg=0, max_shift_mm=8, spacing=spacing).set_random_state(5)
        assert torch.equal(moved[spacing], explicit({"ct": ct})["ct"][0])
    index = torch.stack(torch.meshgrid(*[torch.arange(16.0)] * 3, indexing="ij"))

    def centre(volume):  # mass centre above air, voxels; linear interpolation keeps it exact
        return (index * (volume + 1024)).sum((1, 2, 3)) / (volume + 1024).sum()

    shift = {spacing: centre(volume) - centre(ct[0]) for spacing, volume in moved.items()}
    assert shift[2.0].abs().max() > 1  # moved, and the same mm are twice the voxels at 2 mm as at 4 mm
    assert torch.allclose(shift[2.0], 2 * shift[4.0], atol=0.05)
    with pytest.raises(ValueError, match="spacing"):
        RandHeadPosed()({"ct": ct})
    with pytest.raises(ValueError, match="isotropic"):
        RandHeadPosed()({"ct": MetaTensor(ct, affine=torch.diag(torch.tensor([1.0, 2.0, 2.0, 1.0])))})


def test_seeding_a_pipeline_reproduces_its_augmented_views():
    phantom = make_phantom(3, GEOMETRY)
    data = {"ct": MetaTensor(phantom.hu[None], affine=torch.as_tensor(GEOMETRY.affine)), "labels": phantom.labels[None]}
    pipeline = Compose(
        [
            RandHeadPosed(keys="ct", label_keys="labels"),
            SimulateBiplanarXRayd(keys="ct", geometry=GEOMETRY, augmentation=XRayAugmentation()),
        ]
    )
    first, again, other = (pipeline.set_random_state(s)(dict(data))["image"] for s in (1, 1, 2))
    assert torch.equal(first, again) and not torch.equal(first, other)
