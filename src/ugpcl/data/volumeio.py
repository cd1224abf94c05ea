"""Reading NIfTI and HDF5 arrays with checks: slices first (Z x Y x X), errors naming the file; their
voxel sizes (a NIfTI header's, an HDF5 `spacing` attribute)."""

from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np

from ..errors import UserError

REPLACE = "replace the file with an intact copy"


def volume_zyx(data: np.ndarray, path: Path) -> np.ndarray:
    """A NIfTI array (X x Y [x Z], trailing singleton axes allowed) as Z x Y x X.

    nibabel's (X, Y, Z) order transposed, as SimpleITK's GetArrayFromImage returns it (and as
    the ACDC preparation reads the Creatis files).
    """
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise UserError(f"NIfTI image of shape {data.shape} is not 2D or 3D", path=path,
                        fix="give one volume (split 4D series into 3D files first)")
    return data.transpose(2, 1, 0)


def nifti_zyx(volume: np.ndarray, spacing_zyx: tuple[float, float, float], dtype=None) -> nib.Nifti1Image:
    """The inverse of `volume_zyx`: a NIfTI image holding the Z x Y x X `volume` as X x Y x Z (as
    the Creatis files store it), in `dtype` (default: its own), with the voxel size (z, y, x) on
    the affine's diagonal."""
    dz, dy, dx = spacing_zyx
    data = np.ascontiguousarray(volume.transpose(2, 1, 0)).astype(dtype or volume.dtype, copy=False)
    return nib.Nifti1Image(data, np.diag([dx, dy, dz, 1.0]))


def read_nifti(path: Path) -> np.ndarray:
    """The voxels of a .nii / .nii.gz file as Z x Y x X, in their stored type (scaled if the header says so)."""
    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as exc:  # nibabel, gzip and zlib raise many types for corrupt files
        raise UserError(f"not a readable NIfTI file ({exc})", path=path, fix=REPLACE) from exc
    return volume_zyx(np.asarray(data), path)


LENGTH_UNITS_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001, "unknown": 1.0}  # unknown: taken as mm


def nifti_spacing(path: Path) -> tuple[float, float, float]:
    """The voxel size of a .nii / .nii.gz file in mm, in `read_nifti`'s (z, y, x) order (a 2D file: z 1)."""
    try:
        header = nib.load(str(path)).header
        zooms = [float(z) for z in header.get_zooms()[:3]]
        scale = LENGTH_UNITS_MM.get(header.get_xyzt_units()[0], 1.0)
    except Exception as exc:
        raise UserError(f"not a readable NIfTI file ({exc})", path=path, fix=REPLACE) from exc
    zooms += [1.0] * (3 - len(zooms))
    return tuple(scale * z for z in zooms[::-1])


def read_h5(path: Path, key: str) -> np.ndarray:
    """Dataset `key` of an HDF5 file as Z x H x W (an H x W array is one slice)."""
    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                raise UserError(f"no `{key}` dataset in this HDF5 file (it has: {', '.join(f) or 'nothing'})",
                                path=path, fix=f"store the {'image' if key == 'image' else 'mask'} as `{key}`, "
                                               "H x W or D x H x W")
            data = f[key][()]
    except OSError as exc:
        raise UserError(f"not a readable HDF5 file ({exc})", path=path, fix=REPLACE) from exc
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3 or data.size == 0:
        raise UserError(f"`{key}` has shape {data.shape}, expected H x W or D x H x W", path=path,
                        fix="store one 2D slice or one volume per file")
    return data


def h5_spacing(path: Path) -> tuple[float, ...] | None:
    """The voxel size of an HDF5 file's `image`, in mm: a `spacing` attribute of that dataset or else of the
    file, one positive size per axis of `image` in its axis order ((z, y, x) for a volume); None where neither
    has one (or there is no `image`: `read_h5` says so)."""
    try:
        with h5py.File(path, "r") as f:
            if "image" not in f:
                return None
            ndim = f["image"].ndim
            found = [a["spacing"] for a in (f["image"].attrs, f.attrs) if "spacing" in a]
    except OSError as exc:
        raise UserError(f"not a readable HDF5 file ({exc})", path=path, fix=REPLACE) from exc
    if not found:
        return None
    try:
        spacing = tuple(float(v) for v in np.ravel(found[0]))
    except (TypeError, ValueError):
        spacing = ()
    if len(spacing) == ndim and all(np.isfinite(spacing)) and min(spacing) > 0:
        return spacing
    raise UserError(f"`spacing` {found[0]!r} does not give one positive size per axis of `image` ({ndim})",
                    path=path, fix="store the voxel size in mm in the array's axis order, or remove it")
