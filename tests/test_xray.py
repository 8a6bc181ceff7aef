from __future__ import annotations

import custom.data.xray as xray
import numpy as np
import pytest
import torch
from custom.data.xray import LoadXRay, LoadXRayd, write_xray
from custom.errors import InvalidInputError
from custom.imaging.geometry import BiplanarGeometry
from custom.imaging.physics import normalise_radiograph
from custom.outputs.writers import save_dicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

GEOMETRY = BiplanarGeometry(det_shape=(48, 64), det_spacing=2.0)  # H != W catches transposed images
DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def write_dicom(path, pixels, photometric="MONOCHROME2", **tags):
    """Single- or multi-frame uint16 grayscale DICOM, explicit VR little endian; ``tags`` set as given."""
    pixels = np.asarray(pixels, dtype=np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = DX_SOP_CLASS, meta.MediaStorageSOPInstanceUID, "DX"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for name, value in tags.items():
        setattr(ds, name, value)
    ds.PixelData = pixels.tobytes()
    save_dicom(ds, path)
    return path


def write_nifti(path, image, affine=None, trailing_one=False):
    """A displayed image (rows, columns) as 2D NIfTI in the documented convention: data = image.T."""
    import nibabel as nib

    data = np.asarray(image, dtype=np.float32).T
    nib.save(nib.Nifti1Image(data[..., None] if trailing_one else data, affine), path)
    return path


def markers(shape=(48, 64), scale=1000):
    """Background 0, a bright 6x6 marker at the top-left and a half-bright one at the top-right."""
    image = np.zeros(shape)
    image[:6, :6] = scale
    image[:6, -6:] = scale // 2
    return image


def test_orientation_marker_lands_top_left_for_every_format(tmp_path):
    image = markers()
    files = {
        "png": tmp_path / "x.png",
        "dicom": write_dicom(tmp_path / "x.dcm", image),
        "dicom without extension": write_dicom(tmp_path / "1.2.840.99", image),
        "nifti": write_nifti(tmp_path / "x.nii.gz", image),
        "nifti (A, B, 1)": write_nifti(tmp_path / "y.nii", image, trailing_one=True),
    }
    Image.fromarray(image.astype(np.uint16)).save(files["png"])
    expected = torch.zeros(1, 48, 64)
    expected[0, :6, :6], expected[0, :6, -6:] = 1, 0.5
    for name, path in files.items():
        out = LoadXRay(GEOMETRY)(path)
        assert out.dtype == torch.float32 and out.shape == (1, 48, 64), name
        assert torch.allclose(out, expected, atol=1e-6), name
        assert out.meta["placement"] == "fitted" and out.meta["zoom"] == (1.0, 1.0), name


def test_monochrome1_is_inverted_to_load_like_monochrome2(tmp_path):
    image = markers() + np.arange(64) * 10  # a ramp too, so every grey level is checked
    mono2 = LoadXRay(GEOMETRY)(write_dicom(tmp_path / "m2.dcm", image, "MONOCHROME2"))
    mono1 = LoadXRay(GEOMETRY)(write_dicom(tmp_path / "m1.dcm", 4000 - image, "MONOCHROME1"))
    assert torch.allclose(mono1, mono2, atol=1e-6)
    expected = normalise_radiograph(torch.from_numpy(image).float())  # MONOCHROME2: high values bright
    assert torch.allclose(mono2[0], expected, atol=1e-6)


def ramp(step=64):
    """Stored values growing along the columns: column c holds c * step, in every row."""
    return np.tile(np.arange(64) * step, (48, 1))


def test_voi_window_is_applied(tmp_path):
    # window [1500, 2500]: columns below 1500 / step = 23.4 black, above 2500 / step = 39.1 white
    out = LoadXRay(GEOMETRY)(write_dicom(tmp_path / "w.dcm", ramp(), WindowCenter=2000, WindowWidth=1000))[0]
    assert (out[:, :24] == 0).all() and (out[:, 40:] == 1).all()
    inside = out[0, 24:40]
    assert ((inside > 0) & (inside < 1)).all() and (inside.diff() > 0).all()
    plain = LoadXRay(GEOMETRY)(write_dicom(tmp_path / "p.dcm", ramp()))[0]
    assert torch.allclose(plain[0], torch.arange(64) / 63, atol=1e-6)  # no window: the whole ramp


def test_rescale_slope_and_intercept_come_before_the_window(tmp_path):
    # modality value 2 s - 1000 in window [1500, 2500] <=> stored s in [1250, 1750]: columns 20..27
    path = write_dicom(
        tmp_path / "r.dcm", ramp(), RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=2000, WindowWidth=1000
    )
    out = LoadXRay(GEOMETRY)(path)[0, 0]
    assert (out[:20] == 0).all() and (out[28:] == 1).all()
    assert ((out[20:28] > 0) & (out[20:28] < 1)).all()


def test_imager_pixel_spacing_resamples_centres_and_pads(tmp_path):
    # 96 x 80 pixels of 1 mm onto 64 x 64 pixels of 2 mm: the image covers rows 8..55, columns 12..51
    image = np.full((96, 80), 500)
    image[:10, :10] = 0  # a dark corner, so the background normalises to 0.5
    image[38:58, 30:50] = 1000  # a 20 mm square about the image centre (48, 40)
    path = write_dicom(tmp_path / "s.dcm", image, ImagerPixelSpacing=[1.0, 1.0], PixelSpacing=[0.5, 0.5])
    geometry = BiplanarGeometry(det_shape=(64, 64), det_spacing=2.0)
    out = LoadXRay(geometry)(path)
    assert out.meta["placement"] == "resampled" and out.meta["spacing_source"] == "ImagerPixelSpacing"
    assert out.meta["zoom"] == (0.5, 0.5)
    square = out[0] > 0.75
    rows, cols = torch.nonzero(square, as_tuple=True)
    assert square.sum() == 100 and rows.min() == 27 and rows.max() == 36 and cols.min() == 27 and cols.max() == 36
    assert (out[0, :8] == 0).all() and (out[0, 56:] == 0).all()  # padding above and below
    assert (out[0, :, :12] == 0).all() and (out[0, :, 52:] == 0).all()  # and at the sides
    assert torch.allclose(out[0, 40:56, 12:52], torch.tensor(0.5), atol=1e-6)  # background up to the edge


def test_spacing_argument_is_used_only_when_the_file_has_none(tmp_path):
    image = markers()
    png = tmp_path / "x.png"
    Image.fromarray(image.astype(np.uint16)).save(png)
    dicom = write_dicom(tmp_path / "x.dcm", image, PixelSpacing=[2.0, 2.0])
    loader = LoadXRay(GEOMETRY, spacing=1.0)
    assert loader(png).meta["spacing_source"] == "argument" and loader(png).meta["zoom"] == (0.5, 0.5)
    assert loader(dicom).meta["spacing_source"] == "PixelSpacing" and loader(dicom).meta["zoom"] == (1.0, 1.0)


def test_fitted_image_keeps_its_aspect_ratio_and_is_centred(tmp_path):
    # 32 x 64 into 128 x 128: scaled by 2 to 64 x 128, rows 32..95; a native pixel spans 2 of 2 mm
    image = np.full((32, 64), 128, dtype=np.uint8)
    image[:16] = 255
    image[:, :8] = 0
    Image.fromarray(image).save(tmp_path / "f.png")
    loaded = LoadXRay(BiplanarGeometry(det_shape=(128, 128), det_spacing=2.0))(tmp_path / "f.png")
    assert loaded.meta["placement"] == "fitted" and loaded.meta["zoom"] == (2.0, 2.0)
    assert loaded.meta["native_spacing"] == (4.0, 4.0)  # mm: the detector's spacing times the zoom
    out = loaded[0]
    assert (out[:32] == 0).all() and (out[96:] == 0).all()
    assert (out[32:63, 20:] == 1).all()
    assert torch.allclose(out[65:96, 20:], torch.tensor(128 / 255), atol=1e-6)


def test_a_large_fitted_radiograph_records_its_fine_native_spacing(tmp_path):
    # a 2400 x 1920 cephalogram fitted into 128 x 128 pixels of 1.8 mm: 0.096 mm per native pixel, not 18.75
    image = np.zeros((2400, 1920), dtype=np.uint16)
    image[600:1800, 400:1500] = 30000
    Image.fromarray(image).save(tmp_path / "ceph.png")
    loaded = LoadXRay(BiplanarGeometry(det_shape=(128, 128), det_spacing=1.8))(tmp_path / "ceph.png")
    assert loaded.meta["native_spacing"] == pytest.approx((0.096, 0.096))
    assert loaded.meta["zoom"] == pytest.approx((128 / 2400, 128 / 2400))


@pytest.mark.parametrize("shape", [(8, 8), (31, 200), (200, 31)])
def test_an_image_under_the_minimum_size_is_refused(tmp_path, shape):
    Image.fromarray(np.indices(shape).sum(0).astype(np.uint8)).save(tmp_path / "icon.png")
    with pytest.raises(InvalidInputError, match=rf"{shape[0]} x {shape[1]} pixels; an X-ray needs at least 32"):
        LoadXRay()(tmp_path / "icon.png")


def test_16_bit_png_keeps_the_low_byte(tmp_path):
    values = (40000 + np.arange(1024)).reshape(32, 32).astype(np.uint16)  # 0x9C40..0xA03F
    Image.fromarray(values).save(tmp_path / "r.png")
    out = LoadXRay(BiplanarGeometry(det_shape=(32, 32), det_spacing=2.0))(tmp_path / "r.png")
    expected = normalise_radiograph(torch.from_numpy(values.astype(np.float32) - 40000))
    assert torch.allclose(out[0], expected, atol=1e-6)
    assert out.unique().numel() > 250


def pure_colours():
    """48 x 64 RGB: a pure red square and a pure green square on black."""
    rgb = np.zeros((48, 64, 3), dtype=np.uint8)
    rgb[10:20, 10:20, 0] = 255
    rgb[10:20, 40:50, 1] = 255
    return rgb


@pytest.mark.parametrize(
    "name, save, atol",
    [
        ("8-bit png", lambda g, p: Image.fromarray(g).save(p / "a.png"), 1e-6),
        ("palette png", lambda g, p: Image.fromarray(g).convert("P").save(p / "a.png"), 1e-6),
        ("gray+alpha png", lambda g, p: Image.fromarray(g).convert("LA").save(p / "a.png"), 1e-6),
        ("rgb png", lambda g, p: Image.fromarray(np.stack([g] * 3, -1)).save(p / "a.png"), 1e-6),
        ("8-bit tiff", lambda g, p: Image.fromarray(g).save(p / "a.tif"), 1e-6),
        ("16-bit tiff", lambda g, p: Image.fromarray(g.astype(np.uint16) * 257).save(p / "a.tiff"), 1e-6),
        ("float tiff", lambda g, p: Image.fromarray(g.astype(np.float32) / 7).save(p / "a.tif"), 1e-6),
        ("jpeg", lambda g, p: Image.fromarray(g).save(p / "a.jpg", quality=95), 0.05),
    ],
)
def test_pillow_formats_load_as_gray(tmp_path, name, save, atol):
    gray = (markers() / 1000 * 255).astype(np.uint8) + np.tile(np.arange(64, dtype=np.uint8), (48, 1))
    save(gray, tmp_path)
    (path,) = tmp_path.iterdir()
    out = LoadXRay(GEOMETRY)(path)
    expected = normalise_radiograph(torch.from_numpy(gray.astype(np.float32)))
    assert torch.allclose(out[0], expected, atol=atol), name


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_becomes_luminance_and_alpha_is_ignored(tmp_path, mode):
    rgb = pure_colours()
    if mode == "RGBA":
        alpha = np.random.default_rng(0).integers(0, 256, rgb.shape[:2], dtype=np.uint8)
        rgb = np.concatenate([rgb, alpha[..., None]], axis=-1)
    Image.fromarray(rgb, mode).save(tmp_path / "c.png")
    out = LoadXRay(GEOMETRY)(tmp_path / "c.png")[0]
    assert torch.allclose(out[10:20, 40:50], torch.tensor(1.0))  # green, the brightest luminance
    assert torch.allclose(out[10:20, 10:20], torch.tensor(0.299 / 0.587), atol=1e-6)  # red relative to green
    assert (out[20:] == 0).all()


def test_nifti_zooms_give_column_then_row_spacing(tmp_path):
    path = write_nifti(tmp_path / "z.nii", markers(), affine=np.diag([4.0, 1.0, 1.0, 1.0]))  # 4 mm columns
    out = LoadXRay(GEOMETRY)(path)
    assert out.meta["spacing_source"] == "NIfTI zooms" and out.meta["native_spacing"] == (1.0, 4.0)
    assert out.meta["zoom"] == (0.5, 2.0)


def centroid(image):
    """Intensity-weighted (row, column) of an image (H, W), pixels."""
    rows, cols = (torch.arange(n, dtype=torch.float64) for n in image.shape)
    total = image.double().sum()
    return float((image.double().sum(1) * rows).sum() / total), float((image.double().sum(0) * cols).sum() / total)


def test_large_images_are_block_averaged_before_normalising(tmp_path, monkeypatch):
    image = np.zeros((131, 131))
    image[45:85, 45:85] = 1000  # 40 mm square, 1 mm pixels, centred 0.5 mm above-left of the image centre
    path = write_dicom(tmp_path / "big.dcm", image, ImagerPixelSpacing=[1.0, 1.0])
    geometry = BiplanarGeometry(det_shape=(32, 32), det_spacing=4.0)
    direct = LoadXRay(geometry)(path)[0]
    monkeypatch.setattr(xray, "_MAX_QUANTILE_PIXELS", 1100)  # forces 4 x 4 blocks, dropping 3 rows and columns
    blocked = LoadXRay(geometry)(path)[0]
    assert centroid(direct) == pytest.approx((15.375, 15.375), abs=1e-4)  # 15.5 - 0.5 mm / 4 mm
    assert centroid(blocked) == pytest.approx(centroid(direct), abs=1e-4)
    assert (direct - blocked).abs().mean() < 0.01


def test_shrinking_is_antialiased(tmp_path):
    # 4-pixel stripes (period 8) shrunk 8 times: an antialiased resampling averages them to 0.5; plain
    # bilinear sampling would hit the middle of the dark stripes and give 0
    columns = (np.arange(256) + 2) % 8 < 4
    path = write_dicom(tmp_path / "stripes.dcm", np.tile(columns * 1000, (64, 1)), ImagerPixelSpacing=[0.25, 0.25])
    out = LoadXRay(BiplanarGeometry(det_shape=(8, 32), det_spacing=2.0))(path)[0]
    assert torch.allclose(out[:, 2:-2], torch.tensor(0.5), atol=1e-5)


def test_write_xray_round_trips(tmp_path):
    image = torch.linspace(-0.3, 1.3, 48 * 64).reshape(48, 64).clamp(0, 1)  # display-normalised: ties at 0 and 1
    image[10:20, 5:9] = 0.25
    png = LoadXRay(GEOMETRY)(write_xray(tmp_path / "x.png", image))
    assert png.meta["placement"] == "fitted" and torch.allclose(png[0], image, atol=0.5 / 65535 + 1e-7)
    nifti = LoadXRay(GEOMETRY)(write_xray(tmp_path / "x.nii.gz", image[None], spacing=GEOMETRY.det_spacing))
    assert nifti.meta["placement"] == "resampled" and torch.allclose(nifti[0], image, atol=1e-5)
    assert torch.allclose(LoadXRay(GEOMETRY)(write_xray(tmp_path / "y.nii", image.numpy()))[0], image, atol=1e-6)
    with pytest.raises(FileExistsError):
        write_xray(tmp_path / "x.png", image)
    write_xray(tmp_path / "x.png", 1 - image, overwrite=True)
    assert torch.allclose(LoadXRay(GEOMETRY)(tmp_path / "x.png")[0], 1 - image, atol=1e-4)


def test_load_xrayd_stacks_frontal_then_lateral_and_mirrors(tmp_path):
    frontal = write_dicom(tmp_path / "f.dcm", markers())
    lateral = tmp_path / "l.png"
    Image.fromarray(markers()[::-1].astype(np.uint16)).save(lateral)  # markers at the bottom
    single = LoadXRay(GEOMETRY)
    out = LoadXRayd(geometry=GEOMETRY)({"frontal": str(frontal), "lateral": lateral})
    assert out["image"].shape == (2, 48, 64) and out["frontal"] == str(frontal)
    assert torch.equal(out["image"][0], single(frontal)[0]) and torch.equal(out["image"][1], single(lateral)[0])
    assert out["image"].meta["lateral_filename_or_obj"] == str(lateral) and not out["image"].meta["lateral_mirrored"]
    mirrored = LoadXRayd(geometry=GEOMETRY, mirror=(False, True))({"frontal": frontal, "lateral": lateral})["image"]
    assert torch.equal(mirrored[0], out["image"][0]) and torch.equal(mirrored[1], out["image"][1].flip(-1))
    assert mirrored[1, -1, -1] == 1 and mirrored.meta["lateral_mirrored"]


@pytest.mark.parametrize("data", [{"frontal": "f.png"}, {"frontal": "f.png", "lateral": None}])
def test_ill_arg_missing_view(data):
    with pytest.raises(ValueError, match="lateral"):
        LoadXRayd()(data)


def _truncated_png(path):
    Image.fromarray(markers().astype(np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:-60])


def _truncated_dicom(path):
    write_dicom(path, markers())
    path.write_bytes(path.read_bytes()[:-1000])


def _multipage_tiff(path):
    frames = [Image.fromarray(markers(scale=200).astype(np.uint8)) for _ in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:])


def _nifti(data):
    def make(path):
        import nibabel as nib

        nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.eye(4)), path)

    return make


def _png(values):
    return lambda path: Image.fromarray(np.asarray(values, dtype=np.uint8)).save(path)


def _tiff_with(value):
    def make(path):
        image = markers().astype(np.float32)
        image[3, 3] = value
        Image.fromarray(image).save(path)

    return make


nearly_constant = np.full((48, 64), 7)
nearly_constant[0, 0] = 9  # one pixel: constant between the 0.5 and 99.5 percentiles


@pytest.mark.parametrize(
    "name, make, error, fragment",
    [
        ("gone.png", None, FileNotFoundError, "no such"),
        ("folder.dcm", lambda p: p.mkdir(), ValueError, "folder"),
        ("notes.txt", lambda p: p.write_text("not an x-ray"), ValueError, "unknown X-ray file type"),
        ("noise.dcm", lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)), ValueError, "as DICOM"),
        ("cut.png", _truncated_png, ValueError, "cannot read as an image"),
        ("cut.dcm", _truncated_dicom, ValueError, "pixel data"),
        ("frames.dcm", lambda p: write_dicom(p, np.stack([markers()] * 2)), ValueError, "3D/multi-frame"),
        ("pages.tif", _multipage_tiff, ValueError, "3D/multi-page"),
        ("volume.nii.gz", _nifti(np.arange(4 * 5 * 3).reshape(4, 5, 3)), ValueError, "3D volume was given"),
        ("empty.nii", _nifti(np.zeros((0, 5))), ValueError, "empty"),
        ("flat.png", _png(np.full((8, 8), 7)), ValueError, "constant"),
        ("almost.png", _png(nearly_constant), ValueError, "constant between its display percentiles"),
        ("nan.nii", _nifti(np.where(np.eye(6) > 0, np.nan, 1.0)), ValueError, "NaN"),
        ("inf.tif", _tiff_with(np.inf), ValueError, "infinite"),
        ("zero.dcm", lambda p: write_dicom(p, markers(), ImagerPixelSpacing=[0, 1]), ValueError, "ImagerPixelSpacing"),
    ],
)
def test_ill_arg(tmp_path, name, make, error, fragment):
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(error) as info:
        LoadXRay(GEOMETRY)(path)
    assert name in str(info.value) and fragment in str(info.value)


@pytest.mark.parametrize("spacing", [0, -1.0, (1.0, 2.0, 3.0), float("nan"), "1"])
def test_ill_arg_spacing(spacing):
    with pytest.raises(ValueError, match="spacing"):
        LoadXRay(GEOMETRY, spacing=spacing)


@pytest.mark.parametrize(
    "name, image, spacing, fragment",
    [
        ("x.jpg", torch.zeros(4, 4), None, "writes .png"),
        ("x.png", torch.zeros(2, 4, 4), None, "(H, W)"),
        ("x.png", torch.full((4, 4), 1.5), None, "in [0, 1]"),
        ("x.nii", torch.full((4, 4), float("nan")), None, "finite"),
        ("x.png", torch.zeros(4, 4), 1.0, "PNG cannot store"),
    ],
)
def test_ill_arg_write_xray(tmp_path, name, image, spacing, fragment):
    with pytest.raises(ValueError) as info:
        write_xray(tmp_path / name, image, spacing=spacing)
    assert fragment in str(info.value) and not (tmp_path / name).exists()
