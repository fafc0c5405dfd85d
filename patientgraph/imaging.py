"""Imaging access shared by every pipeline stage.

Three kinds of input, one interface:

* DeepLesion PNG slices (the DeepLesion release's format): 16-bit PNG, HU = value - 32768,
  one folder per series (``Images_png/000001_01_01/109.png``), read lazily by
  :class:`DeepLesionSeries`.
* NIfTI volumes (:func:`read_nifti`, nibabel) and DICOM series (:func:`read_dicom_series`,
  pydicom), both returned as a :class:`Volume` REORIENTED to one canonical orientation:
  ``array[k, j, i]`` with ``i`` increasing toward the patient's Left, ``j`` toward
  Posterior and ``k`` toward Superior (axial slices in radiological display), and an
  ``affine`` mapping ``(i, j, k, 1)`` to patient LPS millimetres (the DICOM / ITK world).
  :func:`volume_header` gives the same geometry without reading pixels.
  :class:`VolumeSeries` wraps a volume in the slice interface of :class:`DeepLesionSeries`.
* Lesion crops (:func:`crop_lesion`, :func:`lesion_crop`): a fixed physical field of view
  around the lesion centre, resampled to a fixed pixel grid, on the key slice and its
  neighbours; :func:`apply_windows` turns HU into CT-window channels.

Coordinates of a lesion in a volume (``key_slice``, ``center_x``, ``center_y`` of the lesion
table) are CANONICAL voxel coordinates: ``center_x`` = i, ``center_y`` = j, ``key_slice`` = k,
all 0-based. Ingest adapters convert the coordinates users give with
:meth:`VolumeHeader.native_to_canonical` or :func:`world_to_voxel`.

Every problem with a user's file becomes an :class:`~patientgraph.errors.InputError` that
names the file and the fix.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation
from PIL import Image, UnidentifiedImageError
from pydicom.errors import InvalidDicomError
from scipy.ndimage import map_coordinates

from patientgraph.errors import InputError, did_you_mean

HU_OFFSET = 32768
"""DeepLesion stores HU + 32768 in 16-bit PNG."""

PNG_16BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I"})
"""Pillow modes a 16-bit grayscale PNG opens as (``"I"`` on older Pillow)."""

WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-1350.0, 150.0),
    "soft_tissue": (-160.0, 240.0),
    "bone": (-450.0, 1050.0),
}
"""CT display windows as (lo, hi) HU."""

SERIES_CACHE_SIZE = 4
"""Series kept open by :func:`open_series` (a CT volume in float32 is ~300 MB)."""

_SLICE_CACHE_SIZE = 8
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


# --------------------------------------------------------------------------- PNG slices


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_header(path: str | Path) -> tuple[str, int, int]:
    """Return ``(mode, width, height)`` of a PNG (Pillow's mode name), reading only its header.

    A 16-bit grayscale PNG, what DeepLesion's slices are, is answered from its first 33
    bytes (the signature and the IHDR chunk, whose layout the PNG standard fixes): ingest
    checks every key slice of an archive, and Pillow's open costs several times the read.
    Anything else (another bit depth or colour type, a damaged or missing file) goes
    through Pillow, which names its mode or its problem.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(33)
    except OSError:
        head = b""
    if (len(head) == 33 and head[:8] == PNG_SIGNATURE and head[8:16] == b"\0\0\0\rIHDR"
            and zlib.crc32(head[12:29]) == int.from_bytes(head[29:33], "big")):
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        if head[24] == 16 and head[25] == 0 and width and height:  # 16-bit, grayscale
            return "I;16", width, height
    with _open_png(path) as im:
        return im.mode, im.width, im.height


def read_png_hu(path: str | Path) -> np.ndarray:
    """Read a DeepLesion 16-bit PNG slice as float32 HU, shape (H, W)."""
    with _open_png(path) as im:
        if im.mode not in PNG_16BIT_MODES:
            raise InputError(
                path,
                f"is a {im.mode} PNG, not the 16-bit grayscale PNG of DeepLesion "
                "(8-bit or colour images have lost the Hounsfield units)",
                "use the original 16-bit slices of Images_png, or export slices as 16-bit "
                "PNG holding HU + 32768",
            )
        try:
            im.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise _corrupt_png(path, exc) from exc
        return np.asarray(im).astype(np.float32) - np.float32(HU_OFFSET)


def _open_png(path: str | Path) -> Image.Image:
    """Open a PNG lazily (header only), turning every failure into an InputError."""
    try:
        im = Image.open(path)
    except FileNotFoundError:
        raise InputError(
            path,
            "the PNG slice does not exist",
            "check the images folder and the File_name / Key_slice_index of the row",
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise _corrupt_png(path, exc) from exc
    if im.format != "PNG":
        im.close()
        raise InputError(
            path,
            f"is a {im.format} image, not a PNG",
            "give the 16-bit PNG slices of DeepLesion (Images_png)",
        )
    return im


def _corrupt_png(path: str | Path, exc: Exception) -> InputError:
    return InputError(
        path,
        f"cannot be read as a PNG image ({type(exc).__name__})",
        "the file is corrupt or truncated: download or copy it again",
    )


class DeepLesionSeries:
    """A DeepLesion series folder of PNG slices, read lazily.

    Slice files are named by their slice number (``109.png``, or zero-padded ``058.png``);
    :meth:`get_slice` takes that number. The spacing comes from DL_info's
    ``Spacing_mm_px_`` and is passed to :func:`crop_lesion` by the caller.
    """

    spacing_z: float | None = None
    """Unknown from the folder alone: the slice interval is in DL_info.csv."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.source = str(folder)
        if not self.folder.is_dir():
            raise InputError(
                folder,
                "the series folder of PNG slices does not exist",
                "point the images root at Images_png (File_name 000001_01_01_109.png lives "
                "at Images_png/000001_01_01/109.png)",
            )
        self._files: dict[int, Path] | None = None
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def available(self) -> list[int]:
        """Slice numbers present in the folder, ascending."""
        return sorted(self._slice_files())

    def get_slice(self, k: int) -> np.ndarray:
        """Slice number ``k`` in HU, float32 (H, W), read-only (cached)."""
        k = int(k)
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        files = self._slice_files()
        if k not in files:
            raise InputError(
                self.source,
                f"slice {k} is not in this series ({_describe_slices(sorted(files))})",
                "check Key_slice_index and Slice_range of the row against the PNG files "
                "of the folder",
            )
        hu = read_png_hu(files[k])
        hu.flags.writeable = False
        self._cache[k] = hu
        if len(self._cache) > _SLICE_CACHE_SIZE:
            self._cache.popitem(last=False)
        return hu

    def _slice_files(self) -> dict[int, Path]:
        if self._files is None:
            self._files = {
                int(p.stem): p
                for p in self.folder.iterdir()
                if p.suffix.lower() == ".png" and p.stem.isdigit()
            }
        return self._files


def _describe_slices(slices: Sequence[int]) -> str:
    if not slices:
        return "it holds no slices"
    return f"it holds slices {slices[0]}..{slices[-1]}"


# --------------------------------------------------------------------------- volumes


@dataclass(frozen=True, eq=False)
class VolumeHeader:
    """Canonical geometry of a volume, known without reading its pixels.

    ``shape`` is (nk, nj, ni) of the canonical array; ``affine`` maps canonical
    ``(i, j, k, 1)`` to LPS mm; ``spacing`` is (sx, sy, sz) mm; ``native_affine`` maps the
    file's own voxel ``(i, j, k, 1)`` to canonical voxel coordinates. For a DICOM series
    the native ``i`` is the column, ``j`` the row and ``k`` the slice's rank along the
    slice normal (ImageOrientationPatient row x column direction).
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    spacing: tuple[float, float, float]
    native_affine: np.ndarray

    def native_to_canonical(self, ijk: Sequence[float] | np.ndarray) -> np.ndarray:
        """Map native voxel coordinates (..., 3) of the file to canonical (..., 3)."""
        return _apply_affine(self.native_affine, ijk)


@dataclass(eq=False)
class Volume:
    """A CT volume in canonical orientation.

    ``array`` is float32 HU indexed ``[k, j, i]`` (slice, row, column) with i toward Left,
    j toward Posterior, k toward Superior; ``affine`` maps ``(i, j, k, 1)`` to LPS mm;
    ``spacing`` is (sx, sy, sz) mm; ``source`` is the file or folder it was read from.
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    source: str | None = None


def world_to_voxel(
    header: VolumeHeader | Volume, xyz_lps: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Canonical continuous voxel coordinates (i, j, k) of LPS points (..., 3) in mm."""
    return _apply_affine(np.linalg.inv(header.affine), xyz_lps)


def volume_header(path: str | Path) -> VolumeHeader:
    """Geometry of a NIfTI file (``.nii``/``.nii.gz``) or a DICOM series, without pixels."""
    if _is_nifti(path):
        img = _load_nifti(path)
        return _canonical_header(path, _RAS_TO_LPS @ img.affine, _shape3(path, img.shape))
    slices = _read_dicom(path, pixels=False)
    affine, ordered = _dicom_geometry(path, slices)
    return _canonical_header(path, affine, _dicom_shape(ordered))


def read_volume(path: str | Path) -> Volume:
    """Read a NIfTI file (``.nii``/``.nii.gz``) or a DICOM series (folder or one file)."""
    return read_nifti(path) if _is_nifti(path) else read_dicom_series(path)


def read_nifti(path: str | Path) -> Volume:
    """Read a NIfTI volume (scl_slope / scl_inter applied) in canonical orientation."""
    img = _load_nifti(path)
    shape = _shape3(path, img.shape)
    try:
        data = img.get_fdata(dtype=np.float32, caching="unchanged")
    except Exception as exc:
        raise _unreadable_nifti(path, exc) from exc
    return _canonical_volume(path, data.reshape(shape), _RAS_TO_LPS @ img.affine)


def read_dicom_series(path: str | Path) -> Volume:
    """Read a DICOM series (a folder, or one file) as HU in canonical orientation.

    Slices are ordered by ImagePositionPatient projected on the slice normal; each slice's
    RescaleSlope / RescaleIntercept is applied. A single slice gets SliceThickness as its
    slice spacing.
    """
    slices = _read_dicom(path, pixels=True)
    affine, ordered = _dicom_geometry(path, slices)
    native = np.stack([_dicom_hu(file, ds) for file, ds in ordered])  # [k, j, i]
    return _canonical_volume(path, native.transpose(2, 1, 0), affine)


def _is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(_NIFTI_SUFFIXES)


def _apply_affine(affine: np.ndarray, points: Sequence[float] | np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=float)
    return points @ affine[:3, :3].T + affine[:3, 3]


def _canonical_header(
    source: str | Path, affine_lps: np.ndarray, shape_ijk: tuple[int, int, int]
) -> VolumeHeader:
    """Canonical geometry of a native voxel grid whose affine maps to LPS."""
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    if not np.all(np.isfinite(affine_lps)) or not np.all(spacing > 0):
        raise InputError(
            source,
            "has a degenerate voxel geometry (zero or undefined voxel spacing or direction)",
            "fix the orientation / spacing fields of the file, e.g. re-export it",
        )
    ornt = io_orientation(affine_lps)
    canonical_to_native = inv_ornt_aff(ornt, shape_ijk)
    affine = affine_lps @ canonical_to_native
    ni, nj, nk = (shape_ijk[a] for a in np.argsort(ornt[:, 0]))
    return VolumeHeader(
        shape=(int(nk), int(nj), int(ni)),
        affine=affine,
        spacing=tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0)),
        native_affine=np.linalg.inv(canonical_to_native),
    )


def _canonical_volume(source: str | Path, data_ijk: np.ndarray, affine_lps: np.ndarray) -> Volume:
    """Reorient native data indexed [i, j, k] into a canonical :class:`Volume`."""
    header = _canonical_header(source, affine_lps, data_ijk.shape)
    canonical = apply_orientation(data_ijk, io_orientation(affine_lps))
    array = np.ascontiguousarray(canonical.transpose(2, 1, 0), dtype=np.float32)
    return Volume(array, header.affine, header.spacing, str(source))


# --------------------------------------------------------------------------- NIfTI


def _load_nifti(path: str | Path) -> nib.spatialimages.SpatialImage:
    """nibabel's lazy load: the header is read, the pixels are not."""
    if not Path(path).is_file():
        raise InputError(
            path,
            "the NIfTI file does not exist",
            "check series_ref and the images root it is relative to",
        )
    try:
        return nib.load(path)
    except Exception as exc:
        raise _unreadable_nifti(path, exc) from exc


def _unreadable_nifti(path: str | Path, exc: Exception) -> InputError:
    return InputError(
        path,
        f"cannot be read as NIfTI ({type(exc).__name__})",
        "give a valid .nii or .nii.gz volume (the file may be corrupt, truncated or "
        "another format renamed)",
    )


def _shape3(path: str | Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The spatial shape of a NIfTI image; trailing singleton dimensions are dropped."""
    if len(shape) < 2 or any(n != 1 for n in shape[3:]):
        raise InputError(
            path,
            f"has shape {tuple(shape)}, not one 2-D or 3-D CT volume",
            "extract the single CT volume (e.g. with nibabel or fslroi) and point at it",
        )
    return tuple(shape[:3]) + (1,) * (3 - len(shape[:3]))


# --------------------------------------------------------------------------- DICOM


def _read_dicom(path: str | Path, *, pixels: bool) -> list[tuple[Path, pydicom.Dataset]]:
    """Image datasets of a DICOM folder (or one file); non-DICOM extras are skipped.

    In a folder, a file that is not DICOM is skipped unless its name ends in ``.dcm``.
    """
    root = Path(path)
    if root.is_file():
        files, strict = [root], True
    elif root.is_dir():
        files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
        strict = False
    else:
        raise InputError(
            path,
            "the DICOM series does not exist",
            "check series_ref and the images root it is relative to",
        )
    slices = []
    for file in files:
        ds = _dcmread(file, pixels=pixels, strict=strict or file.suffix.lower() == ".dcm")
        if ds is not None and "Rows" in ds:
            _check_single_frame(file, ds)
            slices.append((file, ds))
    if not slices:
        raise InputError(
            path,
            "holds no DICOM image",
            "point at the folder of one DICOM series (one file per slice)",
        )
    return slices


def _dcmread(file: Path, *, pixels: bool, strict: bool) -> pydicom.Dataset | None:
    """Read one DICOM file; a non-DICOM file is None unless ``strict``."""
    try:
        return pydicom.dcmread(file, stop_before_pixels=not pixels)
    except InvalidDicomError as exc:
        if not strict:
            return None
        raise _unreadable_dicom(file, exc) from exc
    except Exception as exc:
        raise _unreadable_dicom(file, exc) from exc


def _unreadable_dicom(file: Path, exc: Exception) -> InputError:
    return InputError(
        file,
        f"cannot be read as DICOM ({type(exc).__name__})",
        "give DICOM files (with the DICM preamble) or remove this file from the series "
        "folder; re-export the series if the file is corrupt",
    )


def _check_single_frame(file: Path, ds: pydicom.Dataset) -> None:
    if int(ds.get("NumberOfFrames") or 1) > 1 or int(ds.get("SamplesPerPixel") or 1) != 1:
        raise InputError(
            file,
            "is a multi-frame or colour DICOM image, not one grayscale CT slice",
            "convert the series to single-frame CT slices or to NIfTI (e.g. with dcm2niix)",
        )


def _dicom_floats(file: Path, ds: pydicom.Dataset, keyword: str, n: int) -> np.ndarray:
    values = ds.get(keyword)
    if values is None or len(values) != n:
        raise InputError(
            file,
            f"has no valid {keyword}, so the slice cannot be placed in patient space",
            "use an original CT series (secondary captures and screenshots lack geometry)",
        )
    return np.asarray([float(v) for v in values])


def _dicom_geometry(
    source: str | Path, slices: list[tuple[Path, pydicom.Dataset]]
) -> tuple[np.ndarray, list[tuple[Path, pydicom.Dataset]]]:
    """Native LPS affine (i = column, j = row, k = slice) and the slices in k order."""
    _same_everywhere(source, slices, ("SeriesInstanceUID", "Rows", "Columns"))
    file0, ds0 = slices[0]
    orientation = _dicom_floats(file0, ds0, "ImageOrientationPatient", 6)
    pixel_spacing = _dicom_floats(file0, ds0, "PixelSpacing", 2)
    for file, ds in slices[1:]:
        same_orientation = np.allclose(
            _dicom_floats(file, ds, "ImageOrientationPatient", 6), orientation, atol=1e-4
        )
        if not same_orientation or not np.allclose(
            _dicom_floats(file, ds, "PixelSpacing", 2), pixel_spacing, rtol=1e-4
        ):
            raise _mixed_series(source, "ImageOrientationPatient or PixelSpacing")
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    positions = np.stack([_dicom_floats(f, ds, "ImagePositionPatient", 3) for f, ds in slices])
    order = np.argsort(positions @ normal, kind="stable")
    ordered = [slices[n] for n in order]
    positions = positions[order]
    affine = np.eye(4)
    affine[:3, 0] = row_dir * pixel_spacing[1]  # columns advance along the row direction
    affine[:3, 1] = col_dir * pixel_spacing[0]
    affine[:3, 2] = _slice_step(source, positions, normal, ds0)
    affine[:3, 3] = positions[0]
    return affine, ordered


def _slice_step(
    source: str | Path, positions: np.ndarray, normal: np.ndarray, ds0: pydicom.Dataset
) -> np.ndarray:
    """The LPS vector from one slice to the next; uniform gaps are required.

    A single slice steps by SliceThickness (else SpacingBetweenSlices, else 1 mm) along the
    normal: it has no neighbours, so the step only completes the affine.
    """
    if len(positions) == 1:
        thickness = ds0.get("SliceThickness") or ds0.get("SpacingBetweenSlices") or 1.0
        return normal * float(thickness)
    gaps = np.diff(positions @ normal)
    if gaps.min() < 1e-3:
        raise _mixed_series(source, "slice position (two slices at one ImagePositionPatient)")
    if np.ptp(gaps) > max(0.05, 0.02 * gaps.mean()):
        raise InputError(
            source,
            f"has uneven slice gaps ({gaps.min():.3g} to {gaps.max():.3g} mm): slices are "
            "missing or the folder mixes series",
            "supply the complete series, one series per folder",
        )
    return (positions[-1] - positions[0]) / (len(positions) - 1)


def _same_everywhere(
    source: str | Path, slices: list[tuple[Path, pydicom.Dataset]], keywords: Sequence[str]
) -> None:
    for keyword in keywords:
        if len({str(ds.get(keyword)) for _, ds in slices}) > 1:
            raise _mixed_series(source, keyword)


def _mixed_series(source: str | Path, what: str) -> InputError:
    return InputError(
        source,
        f"the DICOM slices disagree on {what}: the folder holds more than one series",
        "put each DICOM series in its own folder and point series_ref at one of them",
    )


def _dicom_shape(slices: list[tuple[Path, pydicom.Dataset]]) -> tuple[int, int, int]:
    ds = slices[0][1]
    return int(ds.Columns), int(ds.Rows), len(slices)


def _dicom_hu(file: Path, ds: pydicom.Dataset) -> np.ndarray:
    """Pixels of one slice in HU (RescaleSlope x stored value + RescaleIntercept)."""
    try:
        stored = ds.pixel_array
    except Exception as exc:
        raise InputError(
            file,
            f"its pixel data cannot be decoded ({type(exc).__name__})",
            "install pydicom's optional decoders (pylibjpeg, gdcm) or decompress the series",
        ) from exc
    slope = float(ds.get("RescaleSlope") or 1.0)
    intercept = float(ds.get("RescaleIntercept") or 0.0)
    return stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)


# --------------------------------------------------------------------------- series and crops


class VolumeSeries:
    """A :class:`Volume` behind the slice interface of :class:`DeepLesionSeries`.

    Slices are canonical ``k`` indices, 0-based.
    """

    def __init__(self, volume: Volume):
        self.volume = volume
        self.source = volume.source
        self.spacing_z: float | None = volume.spacing[2]

    def available(self) -> list[int]:
        """Every canonical slice index."""
        return list(range(self.volume.array.shape[0]))

    def get_slice(self, k: int) -> np.ndarray:
        """Canonical slice ``k`` in HU, float32 (rows j, columns i)."""
        k = int(k)
        if not 0 <= k < self.volume.array.shape[0]:
            raise InputError(
                self.source,
                f"slice {k} is not in this volume ({_describe_slices(self.available())})",
                "give key_slice as a 0-based slice index of the canonical (L-P-S) volume",
            )
        return self.volume.array[k]


Series = DeepLesionSeries | VolumeSeries


def neighbour_slices(
    available: Sequence[int],
    key_slice: int,
    spacing_z: float,
    n_slices: int = 3,
    slice_step_mm: float = 2.0,
) -> list[int]:
    """Slices nearest to ``key_slice + m * slice_step_mm``, m centred on 0.

    ``available`` must contain ``key_slice``; targets beyond the series are clamped to
    its ends, so a one-slice series repeats its key slice.
    """
    slices = np.asarray(sorted(available))
    offsets_mm = (np.arange(n_slices) - (n_slices - 1) / 2) * slice_step_mm
    targets = key_slice + offsets_mm / spacing_z
    nearest = np.abs(slices[None, :] - targets[:, None]).argmin(axis=1)
    return [int(slices[n]) for n in nearest]


def crop_lesion(
    series: Series,
    center_xy: tuple[float, float],
    key_slice: int,
    spacing_xy: tuple[float, float],
    spacing_z: float,
    size_mm: float = 64.0,
    out_px: int = 64,
    n_slices: int = 3,
    slice_step_mm: float = 2.0,
    pad_hu: float = -1024.0,
) -> np.ndarray:
    """A (n_slices, out_px, out_px) float32 HU crop of ``size_mm`` around the lesion.

    ``center_xy`` is the lesion centre in 0-based pixels (x = column, y = row);
    ``spacing_xy`` mm per pixel in x and y; ``spacing_z`` mm between slice numbers.
    The crop is resampled linearly; what lies outside the image is ``pad_hu`` (air).
    """
    _require_positive(
        size_mm=size_mm,
        out_px=out_px,
        n_slices=n_slices,
        spacing_x=spacing_xy[0],
        spacing_y=spacing_xy[1],
        spacing_z=spacing_z,
    )
    available = series.available()
    if key_slice not in available:
        raise InputError(
            series.source,
            f"key slice {key_slice} is not in this series ({_describe_slices(available)})",
            "check key_slice of the lesion row",
            column="key_slice",
        )
    rows, cols = _sample_grid(center_xy, spacing_xy, size_mm, out_px)
    out = np.empty((n_slices, out_px, out_px), dtype=np.float32)
    slices = neighbour_slices(available, key_slice, spacing_z, n_slices, slice_step_mm)
    for n, k in enumerate(slices):
        image = series.get_slice(k)
        map_coordinates(image, [rows, cols], output=out[n], order=1, mode="constant", cval=pad_hu)
    return out


def _sample_grid(
    center_xy: tuple[float, float], spacing_xy: tuple[float, float], size_mm: float, out_px: int
) -> tuple[np.ndarray, np.ndarray]:
    """Source (row, column) coordinates of the centres of the crop's pixels."""
    offsets_mm = (np.arange(out_px) + 0.5 - out_px / 2) * (size_mm / out_px)
    cols = center_xy[0] + offsets_mm / spacing_xy[0]
    rows = center_xy[1] + offsets_mm / spacing_xy[1]
    return np.meshgrid(rows, cols, indexing="ij")


def _require_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")


_OPENERS: dict[str, Callable[[str], Series]] = {
    "deeplesion_png": DeepLesionSeries,
    "nifti": lambda path: VolumeSeries(read_nifti(path)),
    "dicom": lambda path: VolumeSeries(read_dicom_series(path)),
}


def open_series(image_format: str, path: str | Path) -> Series:
    """Open a series of the lesion table's ``image_format``; the last few stay cached."""
    if image_format not in _OPENERS:
        raise InputError(
            None,
            f"unknown image_format {image_format!r}.{did_you_mean(image_format, _OPENERS)}",
            f"use one of {', '.join(_OPENERS)}",
            column="image_format",
        )
    return _open_series_cached(image_format, str(path))


@functools.lru_cache(maxsize=SERIES_CACHE_SIZE)
def _open_series_cached(image_format: str, path: str) -> Series:
    return _OPENERS[image_format](path)


def clear_series_cache() -> None:
    """Forget the series :func:`open_series` keeps open (e.g. after files changed)."""
    _open_series_cached.cache_clear()


def lesion_crop(lesion_row: Mapping, image_root: str | Path | None, **kw) -> np.ndarray:
    """:func:`crop_lesion` for one row of the lesion table.

    ``series_ref`` is relative to ``image_root`` unless absolute. A missing ``spacing_z``
    falls back to the volume's slice spacing (NIfTI, DICOM); ``kw`` go to
    :func:`crop_lesion`.
    """
    series_ref = Path(str(lesion_row["series_ref"]))
    if image_root is not None and not series_ref.is_absolute():
        series_ref = Path(image_root) / series_ref
    series = open_series(str(lesion_row["image_format"]), series_ref)
    spacing_z = _optional_float(lesion_row.get("spacing_z")) or series.spacing_z
    if spacing_z is None:
        raise InputError(
            series.source,
            "the lesion row has no slice interval",
            "fill in spacing_z (the third value of Spacing_mm_px_ in DL_info.csv)",
            column="spacing_z",
        )
    return crop_lesion(
        series,
        (float(lesion_row["center_x"]), float(lesion_row["center_y"])),
        int(lesion_row["key_slice"]),
        (float(lesion_row["spacing_x"]), float(lesion_row["spacing_y"])),
        spacing_z,
        **kw,
    )


def _optional_float(value: object) -> float | None:
    """``value`` as a float, or None when it is missing (None, NaN, pandas NA)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


# --------------------------------------------------------------------------- CT windows


def apply_windows(
    hu: np.ndarray,
    windows: Sequence[str | tuple[float, float]] = ("lung", "soft_tissue", "bone"),
) -> np.ndarray:
    """Map HU to [0, 1] under each window; a leading channel axis, float32.

    A window is a name in :data:`WINDOWS` or a (lo, hi) HU pair.
    """
    if isinstance(windows, str):
        windows = (windows,)
    hu = np.asarray(hu, dtype=np.float32)
    out = np.empty((len(windows), *hu.shape), dtype=np.float32)
    for channel, window in enumerate(windows):
        lo, hi = _window_bounds(window)
        np.clip((hu - lo) / (hi - lo), 0.0, 1.0, out=out[channel])
    return out


def _window_bounds(window: str | tuple[float, float]) -> tuple[float, float]:
    if isinstance(window, str):
        if window not in WINDOWS:
            raise ValueError(
                f"unknown CT window {window!r} (known: {', '.join(WINDOWS)})."
                f"{did_you_mean(window, WINDOWS)}"
            )
        return WINDOWS[window]
    lo, hi = (float(v) for v in window)
    if not lo < hi:
        raise ValueError(f"a CT window needs lo < hi, got ({lo}, {hi})")
    return lo, hi
