from __future__ import annotations

import math

import custom.imaging.projector as projector_module
import pytest
import torch
import torch.nn.functional as F
from custom.imaging.ellipsoids import Ellipsoid, rasterise
from custom.imaging.geometry import BiplanarGeometry, View
from custom.imaging.projector import Projector

BEAMS = ["cone", "parallel"]
MU = 0.02  # 1/mm, about soft tissue


def small(beam: str = "cone", vol_shape=(6, 7, 8), det_shape=(5, 9)) -> Projector:
    """A non-cubic grid and non-square detector, so that any mixed-up axis shows (10 mm voxels)."""
    return Projector(BiplanarGeometry(vol_shape=vol_shape, vol_spacing=10.0, det_shape=det_shape, beam=beam))


def marker_volume(geometry: BiplanarGeometry, centre_mm, radius_mm: float = 6.0) -> torch.Tensor:
    return rasterise([Ellipsoid(centre_mm, (radius_mm,) * 3, MU)], geometry, supersampling=2)[None, None]


def centroid(image: torch.Tensor) -> torch.Tensor:
    """(row, column) intensity centroid of an (H, W) image, pixels."""
    rows, cols = torch.meshgrid(*(torch.arange(n, dtype=image.dtype) for n in image.shape), indexing="ij")
    return torch.stack(((rows * image).sum(), (cols * image).sum())) / image.sum()


@pytest.mark.parametrize("beam", BEAMS)
@pytest.mark.parametrize(
    "batch, channels, vol_shape, det_shape",
    [(1, 1, (6, 7, 8), (5, 9)), (2, 3, (8, 12, 16), (10, 6)), (1, 4, (16, 16, 16), (8, 8))],
)
def test_shapes(beam, batch, channels, vol_shape, det_shape):
    projector = small(beam, vol_shape, det_shape)
    volume = torch.rand(batch, channels, *vol_shape)
    images = torch.rand(batch, channels, 2, *det_shape)
    assert projector(volume).shape == (batch, channels, 2, *det_shape)
    assert projector.backproject(images).shape == (batch, channels, *vol_shape)
    assert projector.backproject(images).is_contiguous() and projector.adjoint(images).is_contiguous()
    assert projector.backproject(images, reduction="none").shape == (batch, channels, 2, *vol_shape)
    assert projector.adjoint(images).shape == (batch, channels, *vol_shape)
    # the network layout (B, 2, H, W) is the one-channel case
    assert projector.backproject(images[:, 0]).shape == (batch, 1, *vol_shape)
    assert torch.equal(projector.backproject(images[:, :1]), projector.backproject(images[:, 0]))


@pytest.mark.parametrize("beam", BEAMS)
@pytest.mark.parametrize(
    "ellipsoid",
    [Ellipsoid((0, 0, 0), (60, 60, 60), MU), Ellipsoid((10, -15, 20), (70, 50, 40), MU)],
    ids=["centred ball", "off-centre ellipsoid"],
)
def test_line_integrals_match_chord_lengths(beam, ellipsoid):
    geometry = BiplanarGeometry(beam=beam)
    projections = Projector(geometry)(rasterise([ellipsoid], geometry, supersampling=4)[None, None])[0, 0]
    for view, projection in zip(geometry.views, projections):
        exact = ellipsoid.chord(*view.rays()) * ellipsoid.value
        inside = exact > 0.5 * exact.max()  # rays well inside the object
        relative = (projection.double() - exact)[inside].abs() / exact[inside]
        assert inside.sum() > 1000 and relative.max() < 0.01, f"{view.name}: {relative.max():.4f}"


def test_line_integrals_on_a_requested_detector_shape():
    geometry = BiplanarGeometry()
    ball = Ellipsoid((5.0, -10.0, 0.0), (50.0, 50.0, 50.0), MU)
    projections = Projector(geometry)(rasterise([ball], geometry)[None, None], det_shape=(96, 96))[0, 0]
    for view, projection in zip(geometry.resampled(det_shape=(96, 96)).views, projections):
        exact = ball.chord(*view.rays()) * MU
        inside = exact > 0.5 * exact.max()
        assert projection.shape == (96, 96)
        assert ((projection.double() - exact)[inside].abs() / exact[inside]).max() < 0.01


@pytest.mark.parametrize("beam", BEAMS)
def test_adjoint_is_exact(beam):
    projector = small(beam)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 7, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    y = torch.randn(2, 3, 2, 5, 9, dtype=torch.float64, generator=generator)
    forward_side = (projector(x) * y).sum()
    adjoint_side = (x * projector.adjoint(y)).sum()
    assert abs(forward_side - adjoint_side) / abs(forward_side) < 1e-6
    # ... and it is the gradient autograd computes for the forward projection
    (vjp,) = torch.autograd.grad(forward_side, x)
    assert torch.allclose(vjp, projector.adjoint(y), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("beam", BEAMS)
def test_gradcheck(beam):
    projector = small(beam, vol_shape=(3, 4, 5), det_shape=(3, 4))
    volume = torch.rand(1, 1, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    images = torch.rand(1, 1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(projector, (volume,))
    assert torch.autograd.gradcheck(projector.adjoint, (images,))
    for method in ("separable", "sampling"):
        backproject = Projector(projector.geometry, backprojection=method).backproject
        assert torch.autograd.gradcheck(lambda v, f=backproject: f(v, vol_shape=(3, 4, 5)), (images,))


@pytest.mark.parametrize("beam", BEAMS)
def test_both_backprojections_compute_the_same_function(beam):
    geometry = BiplanarGeometry(vol_shape=(10, 12, 14), vol_spacing=10.0, det_shape=(9, 13), beam=beam)
    separable, sampling = (Projector(geometry, backprojection=m) for m in ("separable", "sampling"))
    for vol_shape in [(10, 12, 14), (5, 6, 7)]:
        images = torch.rand(2, 3, 2, 9, 13, dtype=torch.float64, requires_grad=True)
        outputs = [p.backproject(images, vol_shape, reduction="none") for p in (separable, sampling)]
        assert torch.allclose(outputs[0], outputs[1], rtol=1e-10, atol=1e-12)
        weights = torch.rand_like(outputs[0])
        grads = [torch.autograd.grad((out * weights).sum(), images)[0] for out in outputs]
        assert torch.allclose(grads[0], grads[1], rtol=1e-10, atol=1e-12)


def test_parallel_fast_path_is_an_exact_flipped_sum_and_expand():
    n, spacing = 6, 20.0
    projector = Projector(BiplanarGeometry(vol_shape=(n,) * 3, vol_spacing=spacing, det_shape=(n, n), beam="parallel"))
    volume = torch.rand(2, 1, n, n, n, dtype=torch.float64)
    frontal, lateral = projector(volume)[:, 0].unbind(1)
    # rows run superior -> inferior; frontal columns run right -> left, lateral anterior -> posterior
    assert torch.allclose(frontal, volume[:, 0].sum(2).flip(1, 2).transpose(1, 2) * spacing, rtol=1e-13)
    assert torch.allclose(lateral, volume[:, 0].sum(1).flip(1, 2).transpose(1, 2) * spacing, rtol=1e-13)
    images = torch.rand(1, 1, 2, n, n, dtype=torch.float64)
    smeared = projector.backproject(images, reduction="none")[0, 0]
    image_f, image_l = images[0, 0, 0], images[0, 0, 1]
    # sampling exactly at pixel centres returns the pixel values (to rounding)
    assert torch.allclose(smeared[0], image_f.flip(0, 1).T[:, None, :].expand(n, n, n), rtol=1e-12)  # constant along y
    assert torch.allclose(smeared[1], image_l.flip(0, 1).T[None, :, :].expand(n, n, n), rtol=1e-12)  # constant along x


@pytest.mark.parametrize("beam", BEAMS)
def test_orientation_marker_lands_on_documented_side(beam):
    geometry = BiplanarGeometry(beam=beam).resampled((64,) * 3, (64, 64))
    left_anterior_superior = (-50.0, 40.0, 45.0)  # mm: patient's left, anterior, superior
    frontal, lateral = Projector(geometry)(marker_volume(geometry, left_anterior_superior))[0, 0]
    middle = (64 - 1) / 2
    (f_row, f_col), (l_row, l_col) = centroid(frontal), centroid(lateral)
    assert f_row < middle and l_row < middle  # superior is up in both views
    assert f_col > middle  # PA: the patient's left appears on the image's right
    assert l_col < middle  # left lateral: anterior (the face) appears on the image's left
    # (so the marker sits on opposite sides of the two images: swapped channels fail the two lines above)
    # and each image agrees with the geometry's own point projection
    point = torch.tensor(left_anterior_superior, dtype=torch.float64)
    for view, image in zip(geometry.views, (frontal, lateral)):
        assert torch.allclose(centroid(image.double()), view.project(point), atol=0.3)


def test_cone_magnification_grows_toward_the_source():
    geometry = BiplanarGeometry()
    projector = Projector(geometry)
    radius, offset = 15.0, 60.0  # mm
    pixel_area = geometry.det_spacing**2  # mm^2
    ball_integral = MU * 4 / 3 * math.pi * radius**3  # mm^3 / mm
    magnified = {}
    for y in (-offset, offset):  # toward the frontal source, toward its detector
        frontal = projector(marker_volume(geometry, (0.0, y, 0.0), radius))[0, 0, 0].double()
        # the detector sees the ball's integral spread over an area scaled by magnification^2
        magnified[y] = (frontal.sum() * pixel_area / ball_integral).sqrt()
        assert magnified[y] == pytest.approx(geometry.sdd / (geometry.sod + y), rel=0.01)
    assert magnified[-offset] > magnified[offset]


@pytest.mark.parametrize("beam", BEAMS)
def test_backprojection_localises_a_point_at_every_resolution(beam):
    geometry = BiplanarGeometry(beam=beam)
    point = (-30.0, 20.0, 35.0)  # mm
    views = Projector(geometry)(marker_volume(geometry, point, radius_mm=3.0))[:, 0]  # (1, 2, 128, 128)
    projector = Projector(geometry)
    for size in (128, 64, 32, 16, 8):
        images = F.avg_pool2d(views, 128 // size)  # the same detector, coarser pixels
        prior = projector.backproject(images, vol_shape=(size,) * 3)[0, 0]  # mean of two ray smears
        found = geometry.resampled((size,) * 3).voxel_centres()[divmod_3d(prior.argmax().item(), size)]
        assert (found - torch.tensor(point, dtype=torch.float64)).abs().max() <= 192 / size, size


def divmod_3d(flat: int, size: int) -> tuple[int, int, int]:
    return flat // size**2, flat // size % size, flat % size


def test_backprojection_is_unfiltered_and_constant_on_a_constant_image():
    projector = Projector()
    ones = torch.ones(1, 2, 128, 128)
    prior = projector.backproject(ones, vol_shape=(32, 32, 32))
    # every voxel of the central region projects inside both detectors: value 1, no path weighting
    assert torch.allclose(prior[0, 0, 8:24, 8:24, 8:24], torch.ones(16, 16, 16))


def test_operators_are_cached_per_shape_device_and_dtype(monkeypatch):
    builds = []
    for name in ("separable_operator", "sampling_grid"):
        original = getattr(projector_module, name)
        monkeypatch.setattr(projector_module, name, lambda *a, _f=original, _n=name: builds.append(_n) or _f(*a))
    projector = small()
    volume, images = torch.rand(1, 1, 6, 7, 8), torch.rand(1, 2, 5, 9)
    for _ in range(3):
        projector(volume), projector.adjoint(images), projector.backproject(images)
    assert sorted(builds) == ["sampling_grid"] * 2 + ["separable_operator"] * 2  # once per view
    projector(volume.double())
    projector(torch.rand(1, 1, 12, 14, 16))
    assert builds.count("separable_operator") == 6
    projector.backproject(images.bfloat16())  # sampling positions stay float32: the same grids serve
    assert builds.count("sampling_grid") == 2


def test_cache_built_under_inference_mode_still_supports_gradients():
    projector = small()
    volume, images = torch.rand(1, 1, 6, 7, 8), torch.rand(1, 2, 5, 9)
    with torch.inference_mode():
        projector(volume), projector.adjoint(images), projector.backproject(images)
    for operator, data in ((projector, volume), (projector.adjoint, images), (projector.backproject, images)):
        leaf = data.clone().requires_grad_()
        operator(leaf).sum().backward()
        assert leaf.grad is not None and leaf.grad.abs().sum() > 0


@pytest.mark.parametrize("beam", BEAMS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_agrees_with_float32(beam, dtype):
    geometry = BiplanarGeometry(beam=beam).resampled((32,) * 3, (32, 32))
    volume, images = torch.rand(1, 2, 32, 32, 32) * MU, torch.rand(1, 2, 2, 32, 32)
    for method in ("separable", "sampling"):
        projector = Projector(geometry, backprojection=method)
        for operator, data in ((projector, volume), (projector.backproject, images), (projector.adjoint, images)):
            low, high = operator(data.to(dtype)), operator(data)
            assert low.dtype == dtype
            assert (low.float() - high).norm() / high.norm() < 1e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("beam", BEAMS)
def test_cuda_matches_cpu(beam):
    projector = Projector(BiplanarGeometry(beam=beam).resampled((64,) * 3, (64, 64)))  # caches per device
    # CPU back-projects by sampling, CUDA by contractions: this also checks the two agree across devices
    volume, images = torch.rand(2, 1, 64, 64, 64) * MU, torch.rand(2, 3, 2, 64, 64)
    for operator, data in ((projector, volume), (projector.backproject, images), (projector.adjoint, images)):
        results = []
        for device in ("cpu", "cuda"):
            leaf = data.detach().to(device).requires_grad_()
            out = operator(leaf)
            out.square().sum().backward()
            results.append((out.detach().cpu(), leaf.grad.cpu()))
        (out_cpu, grad_cpu), (out_cuda, grad_cuda) = results
        assert torch.allclose(out_cuda, out_cpu, rtol=6e-4, atol=2e-5)
        assert torch.allclose(grad_cuda, grad_cpu, rtol=6e-4, atol=2e-3)


def test_ill_arg():
    projector = small()
    with pytest.raises(ValueError, match="volume"):
        projector(torch.rand(1, 6, 7, 8))
    with pytest.raises(ValueError, match="volume"):
        projector(torch.ones(1, 1, 6, 7, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="images"):
        projector.backproject(torch.rand(1, 1, 3, 5, 9))  # three views
    with pytest.raises(ValueError, match="images"):
        projector.adjoint(torch.rand(5, 9))
    with pytest.raises(ValueError, match="reduction"):
        projector.backproject(torch.rand(1, 2, 5, 9), reduction="max")
    with pytest.raises(ValueError, match="vol_shape"):
        projector.backproject(torch.rand(1, 2, 5, 9), vol_shape=(6, 6, 6))  # non-cubic voxels
    with pytest.raises(ValueError, match="det_shape"):
        projector(torch.rand(1, 1, 6, 7, 8), det_shape=(5, 5))
    with pytest.raises(ValueError, match="backprojection"):
        Projector(backprojection="fastest")
    with pytest.raises(ValueError, match="driven"):
        geometry = projector.geometry
        projector_module.separable_operator(geometry.frontal, geometry, torch.float32, torch.device("cpu"), "pixel")


@pytest.mark.parametrize(
    "direction, col_axis, message",
    [
        ((math.sqrt(0.5), math.sqrt(0.5), 0.0), (-math.sqrt(0.5), math.sqrt(0.5), 0.0), "aligned"),
        ((0.0, 1.0, 0.0), (0.0, -1.0, 0.0), "span three grid axes"),  # columns along the rays
    ],
)
def test_ill_arg_views_the_projector_cannot_handle(direction, col_axis, message):
    geometry = BiplanarGeometry(vol_shape=(4, 4, 4), vol_spacing=20.0)
    view = View("frontal", direction, (0.0, 0.0, -1.0), col_axis, 1000.0, 1200.0, (4, 4), 24.0, "cone")
    with pytest.raises(ValueError, match=message):  # (sampling_grid projects each voxel: any view works)
        projector_module.separable_operator(view, geometry, torch.float32, torch.device("cpu"))
