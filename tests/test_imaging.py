"""Tests of patientgraph.imaging on real files nobody here wrote (pydicom's CT_small.dcm)
and on files written by the reference libraries (nibabel NIfTI, PIL 16-bit PNG)."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from patientgraph.errors import InputError
from patientgraph.imaging import (
    WINDOWS,
    DeepLesionSeries,
    Volume,
    VolumeSeries,
    apply_windows,
    clear_series_cache,
    crop_lesion,
    lesion_crop,
    neighbour_slices,
    open_series,
    png_header,
    read_dicom_series,
    read_nifti,
    read_png_hu,
    read_volume,
    volume_header,
    world_to_voxel,
)
from patientgraph.schema import IMAGE_FORMATS

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def names(path: Path) -> str:
    """A pytest.raises pattern: the error names this file."""
    return re.escape(str(path))


# --------------------------------------------------------------------------- fixtures


def write_png_hu(path: Path, hu: np.ndarray) -> Path:
    """Write HU as a DeepLesion 16-bit PNG (value = HU + 32768) with PIL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.asarray(hu) + 32768).astype(np.uint16)).save(path)
    return path


def write_series(folder: Path, slices: dict[int, float], shape=(16, 16)) -> Path:
    """A DeepLesion series folder whose slice k is the constant ``slices[k]`` HU."""
    for k, value in slices.items():
        write_png_hu(folder / f"{k:03d}.png", np.full(shape, value))
    return folder


def disk_image(shape, center_xy, radius_mm, spacing_xy=(1.0, 1.0)) -> np.ndarray:
    """A slice of -1000 HU with a physically round disk of 100 HU."""
    rows, cols = np.indices(shape)
    dx_mm = (cols - center_xy[0]) * spacing_xy[0]
    dy_mm = (rows - center_xy[1]) * spacing_xy[1]
    return np.where(dx_mm**2 + dy_mm**2 <= radius_mm**2, 100.0, -1000.0)


def memory_series(*slices: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> VolumeSeries:
    return VolumeSeries(Volume(np.stack(slices).astype(np.float32), np.eye(4), spacing))


def write_dicom_slices(
    folder: Path,
    z_positions: list[float],
    order: list[int],
    orientation=(1, 0, 0, 0, 1, 0),
    series_uids: list[str] | None = None,
    pixel_spacing=(0.661468, 0.661468),
) -> Path:
    """Copies of CT_small.dcm at the given z, slice n marked by RescaleIntercept -1024 + 10 n.

    Files are written in ``order`` under names that sort in that order, so the file order
    says nothing about the slice order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for rank, n in enumerate(order):
        ds = pydicom.dcmread(CT_SMALL)
        x, y, _ = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z_positions[n]]
        ds.ImageOrientationPatient = list(orientation)
        ds.PixelSpacing = list(pixel_spacing)
        ds.InstanceNumber = n + 1
        ds.RescaleIntercept = -1024 + 10 * n
        if series_uids is not None:
            ds.SeriesInstanceUID = series_uids[n]
        ds.save_as(folder / f"file{rank:02d}.dcm")
    return folder


def write_nifti(path: Path, raw: np.ndarray, affine_ras: np.ndarray) -> Path:
    """A NIfTI written by nibabel with stored int16 values and scl_slope 2, scl_inter -1000."""
    img = nib.Nifti1Image(raw.astype(np.int16), affine_ras)
    img.header.set_slope_inter(2.0, -1000.0)
    nib.save(img, path)
    return path


# --------------------------------------------------------------------------- PNG


def test_png_hu_round_trip(tmp_path):
    hu = np.array([[-1024, 0, 40], [3071, -3000, 1000]])
    path = write_png_hu(tmp_path / "109.png", hu)

    assert png_header(path) == ("I;16", 3, 2)
    got = read_png_hu(path)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, hu)


def test_8bit_png_is_an_input_error(tmp_path):
    path = tmp_path / "8bit.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)

    assert png_header(path)[0] == "L"
    with pytest.raises(InputError, match=names(path) + ".*16-bit"):
        read_png_hu(path)


def test_missing_png_is_an_input_error(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(InputError, match=names(path) + ".*does not exist"):
        read_png_hu(path)
    with pytest.raises(InputError, match=names(path)):
        png_header(path)


def test_corrupt_png_is_an_input_error(tmp_path):
    good = write_png_hu(tmp_path / "good.png", np.arange(400).reshape(20, 20) * 7)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    text = tmp_path / "text.png"
    text.write_text("not an image")

    with pytest.raises(InputError, match=names(truncated) + ".*corrupt"):
        read_png_hu(truncated)
    with pytest.raises(InputError, match=names(text) + ".*cannot be read"):
        png_header(text)


def test_png_header_agrees_with_pillow_and_sends_damaged_headers_to_it(tmp_path):
    # the 16-bit grayscale header is read from the file's first 33 bytes; everything else,
    # and a header whose checksum is wrong, goes through Pillow as before
    path = write_png_hu(tmp_path / "a.png", np.zeros((5, 7)))
    with Image.open(path) as im:
        assert png_header(path) == (im.mode, 7, 5)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(rgb)
    assert png_header(rgb) == ("RGB", 4, 3)
    wide = tmp_path / "wide.png"
    data = bytearray(path.read_bytes())
    data[16:20] = (9999).to_bytes(4, "big")  # the width, without mending the IHDR's CRC
    wide.write_bytes(bytes(data))
    with pytest.raises(InputError, match=names(wide) + ".*cannot be read"):
        png_header(wide)
    short = tmp_path / "short.png"
    short.write_bytes(path.read_bytes()[:20])
    with pytest.raises(InputError, match=names(short)):
        png_header(short)


def test_deeplesion_series_reads_padded_slice_names(tmp_path):
    folder = write_series(tmp_path / "000001_01_01", {k: 10.0 * k for k in range(8, 13)})
    (folder / "notes.txt").write_text("not a slice")
    series = DeepLesionSeries(folder)

    assert series.available() == [8, 9, 10, 11, 12]
    np.testing.assert_array_equal(series.get_slice(10), np.full((16, 16), 100.0))
    with pytest.raises(InputError, match=r"slice 13 is not in this series.*8\.\.12"):
        series.get_slice(13)
    with pytest.raises(InputError, match=names(tmp_path / "missing")):
        DeepLesionSeries(tmp_path / "missing")


# --------------------------------------------------------------------------- DICOM


def test_ct_small_single_slice(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    assert (ds.RescaleSlope, ds.RescaleIntercept) == (1, -1024)
    assert [float(v) for v in ds.PixelSpacing] == [0.661468, 0.661468]
    folder = tmp_path / "ct"
    folder.mkdir()
    (folder / "CT_small.dcm").write_bytes(CT_SMALL.read_bytes())

    for source in (folder, CT_SMALL):
        vol = read_dicom_series(source)
        assert vol.array.shape == (1, 128, 128) and vol.array.dtype == np.float32
        np.testing.assert_array_equal(vol.array[0], apply_modality_lut(ds.pixel_array, ds))
        np.testing.assert_array_equal(vol.array[0], ds.pixel_array * 1.0 - 1024)
        np.testing.assert_allclose(vol.spacing, (0.661468, 0.661468, 5.0))
        np.testing.assert_allclose(vol.affine[:3, 3], [float(v) for v in ds.ImagePositionPatient])

    header = volume_header(folder)
    assert header.shape == (1, 128, 128)
    np.testing.assert_allclose(header.affine, vol.affine)


def test_dicom_series_written_shuffled_is_sorted_by_position(tmp_path):
    z = [-75.7 + 2.5 * n for n in range(4)]
    folder = write_dicom_slices(tmp_path / "series", z, order=[2, 0, 3, 1])
    stored = pydicom.dcmread(CT_SMALL).pixel_array

    vol = read_dicom_series(folder)

    assert vol.array.shape == (4, 128, 128)
    for k in range(4):  # slice n carries intercept -1024 + 10 n
        np.testing.assert_array_equal(vol.array[k], stored - 1024.0 + 10 * k)
    np.testing.assert_allclose(vol.spacing, (0.661468, 0.661468, 2.5))
    np.testing.assert_allclose(vol.affine[:3, 2], [0, 0, 2.5])
    assert vol.affine[2, 3] == pytest.approx(-75.7)


def test_dicom_right_facing_rows_are_reoriented(tmp_path):
    # Rows run toward patient Right, so the slice normal points Inferior: both the column
    # axis and the slice order must flip to reach the canonical L-P-S orientation.
    z = [0.0, 3.0, 6.0]
    folder = write_dicom_slices(
        tmp_path / "rl", z, [1, 2, 0], orientation=(-1, 0, 0, 0, 1, 0), pixel_spacing=(0.6, 0.7)
    )
    stored = pydicom.dcmread(CT_SMALL).pixel_array
    x0 = float(pydicom.dcmread(CT_SMALL).ImagePositionPatient[0])

    vol = read_dicom_series(folder)
    header = volume_header(folder)

    for k in range(3):
        np.testing.assert_array_equal(vol.array[k], stored[:, ::-1] - 1024.0 + 10 * k)
    # PixelSpacing is (between rows, between columns): x steps 0.7 mm, y steps 0.6 mm.
    np.testing.assert_allclose(vol.affine[:3, :3], np.diag([0.7, 0.6, 3.0]), atol=1e-9)
    np.testing.assert_allclose(vol.spacing, (0.7, 0.6, 3.0))
    assert vol.affine[0, 3] == pytest.approx(x0 - 127 * 0.7)
    # Native slice 0 is the most superior one (ranked along the inferior-pointing normal).
    np.testing.assert_allclose(header.native_to_canonical([0, 0, 0]), [127, 0, 2])
    np.testing.assert_allclose(header.affine, vol.affine)


def test_volume_header_reads_no_pixels(tmp_path):
    folder = tmp_path / "no_pixels"
    folder.mkdir()
    ds = pydicom.dcmread(CT_SMALL)
    del ds.PixelData
    ds.save_as(folder / "slice.dcm")

    assert volume_header(folder).shape == (1, 128, 128)
    with pytest.raises(InputError, match=names(folder / "slice.dcm") + ".*cannot be decoded"):
        read_dicom_series(folder)


def test_unreadable_dicom_is_an_input_error(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(CT_SMALL.read_bytes())
    bad = folder / "b.dcm"
    bad.write_text("a text file renamed .dcm")

    with pytest.raises(InputError, match=names(bad) + ".*cannot be read as DICOM"):
        read_dicom_series(folder)
    with pytest.raises(InputError, match=names(bad)):
        volume_header(bad)


def test_folder_without_dicom_is_an_input_error(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "README").write_text("no images here")

    with pytest.raises(InputError, match=names(folder) + ".*holds no DICOM image"):
        read_dicom_series(folder)
    with pytest.raises(InputError, match=names(tmp_path / "gone") + ".*does not exist"):
        read_dicom_series(tmp_path / "gone")


@pytest.mark.parametrize(
    ("z", "uids", "problem"),
    [
        ([0.0, 2.5, 2.5], None, "disagree on slice position"),
        ([0.0, 2.5, 7.5], None, "uneven slice gaps"),
        ([0.0, 2.5, 5.0], ["1.2.3", "1.2.3", "1.2.4"], "disagree on SeriesInstanceUID"),
    ],
)
def test_broken_dicom_series_is_an_input_error(tmp_path, z, uids, problem):
    folder = write_dicom_slices(tmp_path / "s", z, order=[0, 1, 2], series_uids=uids)
    with pytest.raises(InputError, match=names(folder) + ".*" + problem):
        volume_header(folder)


# --------------------------------------------------------------------------- NIfTI


def _las(i, j, k, shape):
    """LAS file: x already toward Left in LPS, y toward Anterior flips."""
    return i, shape[1] - 1 - j, k


def _sal(i, j, k, shape):
    """i toward Superior, j toward Left, k toward Anterior: permuted and flipped."""
    return j, shape[2] - 1 - k, i


LAS_AFFINE = np.array(
    [[-0.8, 0, 0, 10.0], [0, 0.8, 0, -20.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]]
)
SAL_AFFINE = np.array(
    [[0, -0.8, 0, 10.0], [0, 0, 0.8, -20.0], [2.5, 0, 0, 30.0], [0, 0, 0, 1]]
)


@pytest.mark.parametrize(("affine_ras", "to_canonical"), [(LAS_AFFINE, _las), (SAL_AFFINE, _sal)])
def test_nifti_is_reoriented_to_lps(tmp_path, affine_ras, to_canonical):
    shape = (3, 4, 5)
    raw = np.fromfunction(lambda i, j, k: 100 * i + 10 * j + k, shape)
    path = write_nifti(tmp_path / "ct.nii.gz", raw, affine_ras)

    vol = read_nifti(path)
    header = volume_header(path)

    np.testing.assert_allclose(vol.spacing, (0.8, 0.8, 2.5))
    np.testing.assert_allclose(vol.affine[:3, :3], np.diag([0.8, 0.8, 2.5]), atol=1e-6)
    assert header.shape == vol.array.shape
    np.testing.assert_allclose(header.affine, vol.affine)
    for ijk in np.ndindex(shape):
        canonical = to_canonical(*ijk, shape)
        assert vol.array[canonical[::-1]] == 2 * raw[ijk] - 1000  # scl_slope, scl_inter
        world = (RAS_TO_LPS @ affine_ras @ [*ijk, 1])[:3]
        np.testing.assert_allclose(world_to_voxel(header, world), canonical, atol=1e-5)
        np.testing.assert_allclose(header.native_to_canonical(ijk), canonical, atol=1e-6)
        np.testing.assert_allclose((vol.affine @ [*canonical, 1])[:3], world, atol=1e-5)


def test_unreadable_nifti_is_an_input_error(tmp_path):
    text = tmp_path / "notes.nii"
    text.write_text("a text file named like a NIfTI")
    with pytest.raises(InputError, match=names(text) + ".*cannot be read as NIfTI"):
        read_nifti(text)
    with pytest.raises(InputError, match=names(text)):
        volume_header(text)

    good = write_nifti(tmp_path / "ct.nii", np.zeros((8, 8, 8)), LAS_AFFINE)
    truncated = tmp_path / "truncated.nii"
    truncated.write_bytes(good.read_bytes()[:500])
    assert volume_header(truncated).shape == (8, 8, 8)
    with pytest.raises(InputError, match=names(truncated) + ".*cannot be read as NIfTI"):
        read_volume(truncated)


def test_nifti_with_several_volumes_is_an_input_error(tmp_path):
    path = tmp_path / "4d.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.int16), np.eye(4)), path)
    with pytest.raises(InputError, match=names(path) + r".*shape \(4, 4, 4, 2\)"):
        read_nifti(path)


# --------------------------------------------------------------------------- crops


def test_crop_centres_the_lesion():
    center = (150.3, 60.7)
    image = disk_image((200, 240), center, 10.0, spacing_xy=(0.7, 0.7))
    crop = crop_lesion(memory_series(image), center, 0, (0.7, 0.7), 1.0, n_slices=1)

    assert crop.shape == (1, 64, 64) and crop.dtype == np.float32
    rows, cols = np.nonzero(crop[0] > -450)
    assert rows.mean() == pytest.approx(31.5, abs=0.3)
    assert cols.mean() == pytest.approx(31.5, abs=0.3)


def test_crop_honours_the_physical_size():
    areas = []
    for mm_per_px in (0.5, 1.0):
        size = int(120 / mm_per_px)
        center = (size / 2 + 3.2, size / 2 - 5.4)
        image = disk_image((size, size), center, 10.0, (mm_per_px, mm_per_px))  # 20 mm wide
        crop = crop_lesion(memory_series(image), center, 0, (mm_per_px, mm_per_px), 1.0)
        areas.append((crop[1] > -450).sum())

    assert areas[0] == pytest.approx(areas[1], rel=0.05)
    assert areas[0] == pytest.approx(np.pi * 10**2, rel=0.08)  # crop pixels are 1 mm


def test_crop_is_round_for_anisotropic_pixels():
    spacing = (0.5, 1.0)  # a round disk is twice as wide as tall in pixels
    center = (100.3, 40.6)
    image = disk_image((80, 200), center, 20.0, spacing)  # 40 mm wide
    crop = crop_lesion(memory_series(image), center, 0, spacing, 1.0, n_slices=1)

    rows, cols = np.nonzero(crop[0] > -450)
    assert np.ptp(rows) == pytest.approx(39, abs=1)
    assert np.ptp(cols) == pytest.approx(39, abs=1)
    assert rows.var() / cols.var() == pytest.approx(1.0, abs=0.05)


def test_crop_pads_outside_the_image_with_air():
    image = np.full((50, 50), 40.0)
    crop = crop_lesion(memory_series(image), (0.0, 0.0), 0, (1.0, 1.0), 1.0, n_slices=1)
    assert np.all(crop[0, :31, :] == -1024)
    assert np.all(crop[0, :, :31] == -1024)
    assert np.all(crop[0, 33:, 33:] == 40)

    other = crop_lesion(memory_series(image), (0.0, 0.0), 0, (1.0, 1.0), 1.0, pad_hu=-2000)
    assert other.min() == -2000


@pytest.mark.parametrize(
    ("available", "key", "spacing_z", "expected"),
    [
        ([8, 9, 10, 11, 12], 10, 1.0, [8, 10, 12]),
        ([8, 9, 10, 11, 12], 8, 1.0, [8, 8, 10]),
        ([8, 9, 10, 11, 12], 12, 1.0, [10, 12, 12]),
        ([8, 9, 10, 11, 12], 10, 5.0, [10, 10, 10]),
        ([1, 2, 5, 6], 5, 1.0, [2, 5, 6]),
        ([7], 7, 1.0, [7, 7, 7]),
    ],
)
def test_neighbour_slices(available, key, spacing_z, expected):
    assert neighbour_slices(available, key, spacing_z, n_slices=3, slice_step_mm=2.0) == expected


def test_crop_reads_neighbouring_png_slices(tmp_path):
    folder = write_series(tmp_path / "s", {k: 10.0 * k for k in range(8, 13)})
    series = DeepLesionSeries(folder)

    crop = crop_lesion(series, (8.0, 8.0), 10, (1.0, 1.0), 1.0, size_mm=8, out_px=4)
    assert crop.shape == (3, 4, 4)
    np.testing.assert_array_equal(crop[:, 1, 1], [80, 100, 120])

    single = DeepLesionSeries(write_series(tmp_path / "one", {7: 55.0}))
    crop = crop_lesion(single, (8.0, 8.0), 7, (1.0, 1.0), 1.0, size_mm=8, out_px=4)
    np.testing.assert_array_equal(crop[:, 1, 1], [55, 55, 55])

    with pytest.raises(InputError, match="key slice 13 is not in this series"):
        crop_lesion(series, (8.0, 8.0), 13, (1.0, 1.0), 1.0)


def test_lesion_crop_opens_each_image_format(tmp_path):
    clear_series_cache()
    root = tmp_path / "Images_png"
    write_series(root / "000001_01_01", {k: 10.0 * k for k in range(8, 13)})
    slice_marks = np.fromfunction(lambda i, j, k: 10 * k, (20, 20, 6))  # HU 20 k - 1000
    nifti = write_nifti(tmp_path / "ct.nii.gz", slice_marks, LAS_AFFINE)
    write_dicom_slices(root / "dicom", [0.0, 2.5, 5.0], order=[2, 1, 0])
    base = {"center_x": 8.0, "center_y": 8.0, "spacing_x": 1.0, "spacing_y": 1.0}
    png_row = {**base, "image_format": "deeplesion_png", "series_ref": "000001_01_01",
               "key_slice": 10, "spacing_z": 1.0}
    nifti_row = {**base, "image_format": "nifti", "series_ref": str(nifti), "key_slice": 2,
                 "spacing_z": float("nan")}
    dicom_row = {**base, "image_format": "dicom", "series_ref": "dicom", "key_slice": 1,
                 "spacing_z": 2.5}

    crop = lesion_crop(png_row, root, size_mm=8, out_px=4)
    np.testing.assert_array_equal(crop[:, 1, 1], [80, 100, 120])
    crop = lesion_crop(nifti_row, None)  # spacing_z 2.5 from the volume: slices 1, 2, 3
    np.testing.assert_array_equal(crop[:, 32, 32], [-980, -960, -940])
    assert np.all(crop[:, 0, 0] == -1024)
    assert lesion_crop(dicom_row, root, n_slices=1).shape == (1, 64, 64)

    assert open_series("dicom", root / "dicom") is open_series("dicom", root / "dicom")


def test_lesion_crop_row_errors(tmp_path):
    root = tmp_path / "Images_png"
    write_series(root / "s", {3: 0.0})
    row = {"image_format": "deeplesion_png", "series_ref": "s", "key_slice": 3,
           "center_x": 1.0, "center_y": 1.0, "spacing_x": 1.0, "spacing_y": 1.0}

    with pytest.raises(InputError, match="spacing_z"):
        lesion_crop(row, root)
    with pytest.raises(InputError, match="Did you mean 'nifti'"):
        lesion_crop({**row, "image_format": "nifty", "spacing_z": 1.0}, root)


@pytest.mark.parametrize("image_format", IMAGE_FORMATS)
def test_every_schema_image_format_can_be_opened(tmp_path, image_format):
    missing = tmp_path / "missing"
    with pytest.raises(InputError, match=names(missing) + ".*does not exist"):
        open_series(image_format, missing)


# --------------------------------------------------------------------------- windows


def test_windows_map_hu_to_unit_range():
    hu = np.array([[-600.0, 40.0], [300.0, -2000.0], [3000.0, 0.0]])
    out = apply_windows(hu)

    assert out.shape == (3, 3, 2) and out.dtype == np.float32
    assert out[0, 0, 0] == pytest.approx(0.5)  # lung centre
    assert out[1, 0, 1] == pytest.approx(0.5)  # soft tissue centre
    assert out[2, 1, 0] == pytest.approx(0.5)  # bone centre
    assert np.all(out[:, 1, 1] == 0) and np.all(out[:, 2, 0] == 1)
    assert set(WINDOWS) == {"lung", "soft_tissue", "bone"}


def test_windows_accept_pairs_and_single_names():
    np.testing.assert_allclose(apply_windows(np.array([50.0]), [(0, 100)]), [[0.5]])
    assert apply_windows(np.zeros((2, 2)), "bone").shape == (1, 2, 2)


def test_unknown_window_suggests_a_name():
    with pytest.raises(ValueError, match="Did you mean 'soft_tissue'"):
        apply_windows(np.zeros(2), ["soft_tisue"])
    with pytest.raises(ValueError, match="lo < hi"):
        apply_windows(np.zeros(2), [(100, 0)])
