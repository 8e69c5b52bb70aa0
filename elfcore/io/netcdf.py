"""netCDF case files: one case Dataset (``docs/datamodel.md``) per file.

Written as netCDF-4/HDF5 through ``h5netcdf`` (fields zlib-compressed); read
from netCDF-4 (``h5netcdf``) or classic netCDF (``scipy``). A single field is
stored as a one-field case. Attributes that netCDF cannot hold (dicts, lists,
booleans, None, 2D arrays) are stored as JSON strings and listed in the
attribute ``elfcore_json_attrs``, so settings survive the round trip.

Fields may be stored quantized (``quantize={"elf_ref": "uint16"}``): integers
with ``scale_factor``/``add_offset`` spanning the field's range and the top
integer reserved as ``_FillValue``. xarray decodes them on read, so readers
always get floats (error ≤ half a step, e.g. 7.6e-6 for ELF in [0, 1] as uint16).
"""
from __future__ import annotations

import json
from typing import IO, Mapping

import numpy as np
import xarray as xr

from ..errors import ElfcoreError, FormatError
from ..grid import DIMS, case_field, field_atoms, make_case, validate_case
from . import validate

__all__ = ["read_netcdf", "write_netcdf", "read_case", "write_case", "field_to_case", "QUANTIZE_DTYPES"]

QUANTIZE_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32")
_JSON_KEY = "elfcore_json_attrs"
_DEFAULT_FIELDS = ("elf_ref", "elf")
_MAX_ELEMENTS = 2**27  # refuse (corrupt) headers that announce more than this per MiB of file
_MAX_FIELDS = 8  # values of a case beyond this many fields of the voxel limit are refused


def _fields(ds: xr.Dataset) -> list[str]:
    return [str(k) for k, v in ds.data_vars.items() if tuple(v.dims) == DIMS]


def read_case(fileobj: IO[bytes], *, source: str | None = None, max_voxels: int | None = None) -> xr.Dataset:
    """Read a case Dataset from a netCDF stream.

    Parameters
    ----------
    fileobj : binary stream, seekable
        The registry opens (and decompresses) the file.
    source : str, optional
        File name for messages.
    max_voxels : int, optional
        Voxel limit per field (:func:`elfcore.io.validate.max_voxels`), checked
        on the header before any value is decoded.

    Returns
    -------
    xarray.Dataset
        Loaded in memory; quantized fields decoded to floats; JSON attributes
        decoded.

    Raises
    ------
    FormatError
        Not readable as netCDF, or not a case (no cell/positions/numbers, NaN...).
    """
    head = fileobj.read(8)
    fileobj.seek(0, 2)
    size = fileobj.tell()
    fileobj.seek(0)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        engine = "h5netcdf"
    elif head.startswith((b"CDF\x01", b"CDF\x02")):
        engine = "scipy"
    else:
        raise FormatError("not a netCDF file (no HDF5 or classic netCDF signature)", source, 1)
    if engine == "h5netcdf":
        _check_hdf5(fileobj, source)
    try:
        with xr.open_dataset(fileobj, engine=engine) as lazy:
            n_elements = sum(int(np.prod(v.shape, dtype=np.float64)) for v in lazy.variables.values())
            limit = _MAX_ELEMENTS * max(1, size // 2**20)
            if n_elements > limit:
                raise FormatError(f"header announces {n_elements} values in a {size}-byte file (corrupt?)", source)
            voxel_limit = validate.max_voxels(max_voxels)
            for key, var in lazy.variables.items():
                if var.ndim == 3:
                    validate.check_voxels(var.shape, voxel_limit, source, what=f"field {key!r}")
            if n_elements > _MAX_FIELDS * voxel_limit:
                raise FormatError(f"header announces {n_elements} values; at most {_MAX_FIELDS} fields of "
                                  f"{voxel_limit} voxels are read (raise {validate.MAX_VOXELS_ENV})", source)
            ds = lazy.load()
    except ElfcoreError:
        raise
    except Exception as exc:  # h5py/scipy raise many unrelated types on corrupt input
        detail = " ".join(str(exc).split())[:200]
        raise FormatError(f"cannot read as netCDF ({type(exc).__name__}: {detail})", source) from None
    attrs = dict(ds.attrs)
    json_keys = attrs.pop(_JSON_KEY, "")
    for key in [k for k in str(json_keys).split(",") if k]:
        if key in attrs:
            try:
                attrs[key] = json.loads(attrs[key])
            except (TypeError, ValueError):
                raise FormatError(f"attribute {key!r} is not valid JSON", source) from None
    ds.attrs = attrs
    for key in ("cell", "positions", "numbers"):
        if key not in ds:
            raise FormatError(f"not an elfcore case: no {key!r} variable (variables: {list(ds.variables)})", source)
    if not _fields(ds):
        raise FormatError(f"case holds no field with dims {DIMS}", source)
    shape = tuple(int(ds.sizes[d]) for d in DIMS)
    if min(shape) < 1:
        raise FormatError(f"grid of zero size: shape {shape}", source)
    validate.check_case(ds, source, elf_range=None)  # before any conversion; the registry checks the range
    for key in _fields(ds):
        if not np.issubdtype(ds[key].dtype, np.floating):
            ds[key] = ds[key].astype(np.float64)
    ds["numbers"] = ds["numbers"].astype(np.int64)
    return validate_case(ds)


def _check_hdf5(fileobj: IO[bytes], source: str | None) -> None:
    """Open the HDF5 structure with h5py first: a corrupt header is refused here, before
    h5netcdf half-builds a file object that fails again when it is garbage-collected."""
    import h5py

    try:
        with h5py.File(fileobj, "r") as h5:
            dict(h5.attrs)
            for key in h5:
                dict(h5[key].attrs)
    except Exception as exc:  # h5py raises OSError, KeyError, ValueError, RuntimeError... on corrupt input
        detail = " ".join(str(exc).split())[:200]
        raise FormatError(f"cannot read as netCDF ({type(exc).__name__}: {detail})", source) from None
    finally:
        fileobj.seek(0)


def read_netcdf(fileobj: IO[bytes], *, name: str | None = None, source: str | None = None,
                max_voxels: int | None = None) -> xr.DataArray:
    """Read one field of a netCDF case.

    Parameters
    ----------
    name : str, optional
        Field to return; default ``elf_ref`` if present, else ``elf``, else the
        first variable with dims ``(a, b, c)``.
    max_voxels : int, optional
        As :func:`read_case`.

    Returns
    -------
    xarray.DataArray
        The field with the case's cell, atoms and attributes.
    """
    ds = read_case(fileobj, source=source, max_voxels=max_voxels)
    fields = _fields(ds)
    if name is None:
        name = next((f for f in _DEFAULT_FIELDS if f in fields), fields[0])
    elif name not in fields:
        raise FormatError(f"no field {name!r} in the case; fields: {', '.join(fields)}", source)
    return case_field(ds, name)


def field_to_case(field: xr.DataArray) -> xr.Dataset:
    """Wrap one field into a one-field case (its name becomes the variable name)."""
    attrs = {k: v for k, v in field.attrs.items() if k not in ("cell", "positions", "numbers")}
    return make_case(field_atoms(field), {str(field.name or "field"): field.values}, attrs=attrs)


def _encode_attrs(attrs: Mapping) -> dict:
    out: dict = {}
    json_keys = []
    for key, value in attrs.items():
        if isinstance(value, np.ndarray) and value.ndim <= 1 and value.dtype.kind in "iuf" and value.size:
            out[key] = value
        elif isinstance(value, (str, int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
            out[key] = value
        else:
            if isinstance(value, np.ndarray):
                value = value.tolist()
            try:
                out[key] = json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
            except (TypeError, ValueError):
                out[key] = json.dumps(str(value))
            json_keys.append(str(key))
    if json_keys:
        out[_JSON_KEY] = ",".join(json_keys)
    return out


def _quantize_encoding(values: np.ndarray, dtype: str) -> dict:
    info = np.iinfo(np.dtype(dtype))
    levels = int(info.max) - int(info.min) - 1  # top value is the fill value
    lo, hi = float(np.min(values)), float(np.max(values))
    scale = (hi - lo) / levels if hi > lo else 1.0
    return {
        "dtype": dtype,
        "scale_factor": np.float64(scale),
        "add_offset": np.float64(lo - int(info.min) * scale),
        "_FillValue": np.array(info.max, dtype=dtype),
    }


def write_case(
    fileobj: IO[bytes],
    case: xr.Dataset,
    *,
    quantize: Mapping[str, str] | None = None,
    encoding: Mapping[str, Mapping] | None = None,
) -> None:
    """Write a case as netCDF-4 (fields zlib level 4).

    Parameters
    ----------
    fileobj : binary stream
        Destination (the registry opens it).
    case : xarray.Dataset
        A valid case.
    quantize : mapping of str to str, optional
        Field name → integer dtype (one of :data:`QUANTIZE_DTYPES`).
    encoding : mapping, optional
        Per-variable xarray encoding merged over the defaults.

    Raises
    ------
    FormatError
        Unknown field or dtype in ``quantize``.
    """
    validate_case(case)
    fields = _fields(case)
    enc: dict[str, dict] = {f: {"zlib": True, "complevel": 4} for f in fields}
    for key, dtype in dict(quantize or {}).items():
        if key not in fields:
            raise FormatError(f"quantize: no field {key!r}; fields: {', '.join(fields)}")
        if dtype not in QUANTIZE_DTYPES:
            raise FormatError(f"quantize: dtype {dtype!r} for {key!r}; allowed: {', '.join(QUANTIZE_DTYPES)}")
        enc[key].update(_quantize_encoding(np.asarray(case[key].values), dtype))
    for key, extra in dict(encoding or {}).items():
        if key not in case.variables:
            raise FormatError(f"encoding: no variable {key!r}; variables: {', '.join(map(str, case.variables))}")
        enc.setdefault(str(key), {}).update(dict(extra))
    ds = case.copy(deep=False)
    ds.attrs = _encode_attrs(case.attrs)
    for key in ds.variables:
        ds[key].attrs = _encode_attrs(ds[key].attrs)
        ds[key].encoding = {}
    data = ds.to_netcdf(engine="h5netcdf", encoding=enc)
    fileobj.write(bytes(data))


def write_netcdf(fileobj: IO[bytes], field: xr.DataArray) -> None:
    """Write one field as a one-field netCDF case."""
    write_case(fileobj, field_to_case(field))
