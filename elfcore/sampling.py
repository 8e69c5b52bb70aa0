"""Reference fields and random voxel samples of them, with a disk cache of descriptors.

The training protocol (``docs/science.md`` §2 and §4) draws random voxels of each
reference snapshot with a fixed seed (:func:`sample_voxels`) and describes them
(:func:`voxel_samples`). Randomness comes only from explicit ``seed`` arguments
turned into :class:`torch.Generator` objects; nothing is seeded globally.

Descriptors of sampled voxels can be cached on disk (``cache_dir``): the key is a
hash of the descriptor settings, the descriptor implementation, the structure,
the grid, the reference values, the number of voxels and the sampling seed, so a
cached file can never be reused for other inputs.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import xarray as xr

from .errors import GridError, SettingsError
from .grid import case_field, field_atoms, field_cell, validate_field
from .io.validate import check_atoms

__all__ = [
    "MAX_DESCRIPTOR_BYTES",
    "STORAGE_DTYPES",
    "check_structure",
    "reference_field",
    "load_reference",
    "sample_voxels",
    "voxel_points_cart",
    "voxel_samples",
]

log = logging.getLogger(__name__)

#: Memory budget for one block of descriptors held in memory (bytes). Requests
#: that would need more (e.g. evaluating every voxel of a huge grid at once)
#: raise :class:`~elfcore.errors.GridError`.
MAX_DESCRIPTOR_BYTES = 4 * 1024**3

#: Precisions in which sampled descriptors may be stored (and cached).
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


# --------------------------------------------------------------------------- inputs
def check_structure(atoms, *, where: str = "structure", species: Sequence[str] | None = ("H",)) -> None:
    """Refuse structures a model of ``species`` cannot describe.

    :func:`elfcore.io.validate.check_atoms` with at least one atom, finite
    positions and only the elements of ``species`` (hydrogen by default; None: any
    element). The cell is not checked here.

    Raises
    ------
    StructureError
        If the structure has no atoms, non-finite positions, or elements outside
        ``species``.
    """
    species = None if species is None else tuple(species)
    check_atoms(atoms, species=species, require_atoms=True, require_cell=False, where=where,
                species_of="elfcore models'" if species == ("H",) else "descriptor's")


def reference_field(data: xr.Dataset | xr.DataArray, *, name: str = "elf_ref",
                    species: Sequence[str] | None = ("H",)) -> xr.DataArray:
    """The reference ELF field of a case Dataset (``elf_ref``) or a field itself.

    ``species`` are the elements its structure may hold (:func:`check_structure`;
    hydrogen by default, None: any element, e.g. hydride data before the
    descriptor's species are chosen).

    Raises
    ------
    GridError
        If a case has no ``elf_ref`` field.
    StructureError
        If the field carries no usable structure of ``species``.
    """
    field = case_field(data, name) if isinstance(data, xr.Dataset) else validate_field(data)
    check_structure(field_atoms(field), where=str(field.attrs.get("name", "field")), species=species)
    return field


def load_reference(path: str | os.PathLike, *,
                   species: Sequence[str] | None = ("H",)) -> tuple[str, xr.DataArray]:
    """Read a reference ELF from a netCDF case or any field file that carries atoms.

    ``species``: the elements its structure may hold (:func:`reference_field`).

    Returns
    -------
    name : str
        The file stem (used as the case name in reports).
    field : xarray.DataArray
        The reference ELF with the case attrs (pressure_gpa, role, ...).
    """
    from . import io as eio

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(str(path))
    fmt = eio.sniff_format(path)
    if eio.FORMATS[fmt].case:
        data = eio.read_case(path, format=fmt)
    else:
        data = eio.read_field(path, format=fmt)
    field = reference_field(data, species=species)
    field.attrs.setdefault("name", path.stem)
    return path.stem, field


# --------------------------------------------------------------------------- voxels
def sample_voxels(shape: Sequence[int], n_voxels: int | None, *, seed: int) -> torch.Tensor:
    """Random distinct voxels of a grid.

    Parameters
    ----------
    shape : (Na, Nb, Nc)
        Grid shape.
    n_voxels : int or None
        How many; ``None`` or more than the grid holds → every voxel (in C order).
    seed : int
        Seed of the :class:`torch.Generator` used.

    Returns
    -------
    torch.Tensor, shape (n,), int64
        Flat C-order indices into the grid (``c`` fastest).

    Raises
    ------
    SettingsError
        If ``n_voxels`` < 1.
    """
    total = int(np.prod(shape))
    if n_voxels is None or n_voxels >= total:
        return torch.arange(total)
    if n_voxels < 1:
        raise SettingsError(f"n_voxels={n_voxels}; must be ≥ 1")
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(total, generator=gen)[:n_voxels]


def voxel_points_cart(shape: Sequence[int], index: torch.Tensor | np.ndarray, cell) -> np.ndarray:
    """Cartesian positions (n, 3) in Å of flat C-order voxel ``index`` on a grid of ``shape``."""
    ijk = np.stack(np.unravel_index(np.asarray(index, dtype=np.int64), tuple(shape)), axis=1)
    return (ijk / np.asarray(shape, dtype=np.float64)) @ np.asarray(cell, dtype=np.float64)


def check_storage_dtype(storage_dtype: str) -> torch.dtype:
    """The torch dtype of a descriptor storage name; unknown names raise :class:`SettingsError`."""
    if storage_dtype not in STORAGE_DTYPES:
        raise SettingsError(f"storage_dtype={storage_dtype!r}; must be one of {sorted(STORAGE_DTYPES)}")
    return STORAGE_DTYPES[storage_dtype]


# --------------------------------------------------------------------------- descriptor samples
def voxel_samples(
    field: xr.DataArray,
    settings,
    n_voxels: int | None,
    *,
    seed: int,
    storage_dtype: str = "float32",
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    method: str = "fft",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Descriptors and reference values of random voxels of a field.

    Parameters
    ----------
    field : xarray.DataArray
        Reference ELF field carrying a structure of the descriptor's species.
    settings : DescriptorSettings
        Descriptor hyperparameters (its ``species`` and ``compression`` are part of
        the cache key, through ``settings.to_dict()``).
    n_voxels : int or None
        Number of random voxels (``None``: all).
    seed : int
        Sampling seed (see :func:`sample_voxels`).
    storage_dtype : {"float32", "float16"}
        Precision of the returned (and cached) descriptors.
    cache_dir : path-like, optional
        Directory of the descriptor cache; ``None`` disables caching.
    device : str or torch.device
        Where descriptors are computed (``"auto"``: CUDA if available).
    method : {"fft", "direct"}
        ``"fft"`` computes the descriptor on the whole grid slab by slab
        (:func:`elfcore.descriptor.iter_grid_descriptor`, fast, memory bounded by
        the slab) and keeps the sampled voxels; ``"direct"`` evaluates only the
        sampled points (:func:`elfcore.descriptor.compute_descriptor`). They agree
        to ~1e-6 relative.

    Returns
    -------
    X : torch.Tensor, shape (n, n_features), ``storage_dtype``, CPU
    y : torch.Tensor, shape (n,), float32, CPU
        Reference ELF at the voxels.
    index : torch.Tensor, shape (n,), int64
        Flat C-order voxel indices.
    """
    if method not in ("fft", "direct"):
        raise SettingsError(f"method={method!r}; must be 'fft' or 'direct'")
    dtype = check_storage_dtype(storage_dtype)
    field = validate_field(field)
    check_structure(field_atoms(field), species=getattr(settings, "species", ("H",)))
    total = int(np.prod(field.shape))
    _check_budget(total if n_voxels is None else min(int(n_voxels), total), settings.n_features, 4)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / _cache_name(field, settings, n_voxels, seed, storage_dtype, method)
        hit = _read_cache(path)
        if hit is None:
            hit = _superset_from_cache(field, settings, n_voxels, seed, storage_dtype, method, Path(cache_dir))
        if hit is not None:
            return hit
    index = sample_voxels(field.shape, n_voxels, seed=seed)
    t0 = time.perf_counter()
    X = _describe_voxels(field, settings, index, dtype, device, method)
    y = torch.as_tensor(np.asarray(field.values, dtype=np.float32).reshape(-1)[index.numpy()])
    log.info("descriptors of %d voxels (%d features) in %.1f s", len(index), X.shape[1], time.perf_counter() - t0)
    if path is not None:
        _write_cache(path, X, y, index)
    return X, y, index


def _describe_voxels(field: xr.DataArray, settings, index: torch.Tensor, dtype: torch.dtype,
                     device, method: str) -> torch.Tensor:
    """Descriptors (n, n_features) of the voxels ``index`` of ``field``, on the CPU in ``dtype``."""
    from . import descriptor

    atoms = field_atoms(field)
    if method == "direct":
        pts = voxel_points_cart(field.shape, index, field_cell(field))
        X = descriptor.compute_descriptor(atoms, pts, settings, device=device, dtype=torch.float32)
        return X.detach().to("cpu", dtype).contiguous()
    X = torch.empty((len(index), settings.n_features), dtype=dtype)
    order = torch.argsort(index)
    sorted_idx = index[order]
    for start, stop, feats in descriptor.iter_grid_descriptor(atoms, field.shape, settings, device=device,
                                                              dtype=torch.float32):
        lo = int(torch.searchsorted(sorted_idx, start))
        hi = int(torch.searchsorted(sorted_idx, stop))
        if hi > lo:
            rows = (sorted_idx[lo:hi] - start).to(feats.device)
            X[order[lo:hi]] = feats[rows].to("cpu", dtype)
    return X


def _check_budget(n_points: int, n_features: int, bytes_per_value: int) -> None:
    need = n_points * n_features * bytes_per_value
    if need > MAX_DESCRIPTOR_BYTES:
        raise GridError(
            f"{n_points} voxels × {n_features} features need {need / 1024**3:.1f} GiB of descriptors, "
            f"above the budget of {MAX_DESCRIPTOR_BYTES / 1024**3:.1f} GiB; sample fewer voxels"
        )


# --------------------------------------------------------------------------- disk cache
def _descriptor_revision() -> str:
    from . import descriptor

    try:
        src = inspect.getsource(descriptor)
    except (OSError, TypeError):
        from . import __version__

        src = __version__
    return hashlib.sha256(src.encode()).hexdigest()[:16]


def _cache_key(field: xr.DataArray, settings, n_voxels, seed: int, storage: str, method: str = "fft") -> str:
    h = hashlib.sha256()
    h.update(method.encode())
    h.update(json.dumps(settings.to_dict(), sort_keys=True).encode())
    h.update(_descriptor_revision().encode())
    h.update(json.dumps([list(field.shape), n_voxels, int(seed), storage]).encode())
    h.update(np.ascontiguousarray(field_cell(field), dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(field.attrs["positions"], dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(field.attrs["numbers"], dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(field.values, dtype=np.float32).tobytes())
    return h.hexdigest()[:24]


def _cache_name(field: xr.DataArray, settings, n_voxels, seed: int, storage: str, method: str) -> str:
    return f"desc-{_cache_key(field, settings, n_voxels, seed, storage, method)}.safetensors"


def _read_cache(path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(X, y, index)`` of a cache file, or ``None`` when it is missing or unreadable."""
    if not path.exists():
        return None
    from safetensors.torch import load_file

    try:
        t = load_file(str(path))
    except Exception as exc:  # corrupt/partial cache file: recompute
        log.warning("ignoring unreadable cache file %s (%s)", path, exc)
        return None
    log.debug("descriptor cache hit %s", path.name)
    return t["X"], t["y"], t["index"]


def _write_cache(path: Path, X: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> None:
    """Write a cache file atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"X": X, "y": y.contiguous(), "index": index.contiguous()}, str(tmp))
    os.replace(tmp, path)


def _superset_from_cache(field, settings, n_voxels, seed, storage_dtype, method, cache_dir: Path):
    """Cached descriptors of the same voxels with a larger l_max, cut down to ``settings``.

    Valid because feature ``(n, n', l)`` does not depend on l_max (the radial basis
    of each l is built from r_cut, n_radial and l only; ``feature_labels`` gives the
    columns). ``tests/test_train.py`` checks the equality against a direct computation.
    """
    from dataclasses import replace

    from safetensors.torch import load_file

    from .descriptor import feature_labels

    for l_big in range(settings.l_max + 1, 9):
        big = replace(settings, l_max=l_big)
        path = cache_dir / _cache_name(field, big, n_voxels, seed, storage_dtype, method)
        if not path.exists():
            continue
        try:
            t = load_file(str(path))
        except Exception:  # unreadable cache file: ignore
            continue
        pos = {lab: i for i, lab in enumerate(feature_labels(big))}
        cols = torch.tensor([pos[lab] for lab in feature_labels(settings)])
        log.debug("descriptor cache hit %s (l_max %d → %d)", path.name, l_big, settings.l_max)
        return t["X"][:, cols].contiguous(), t["y"], t["index"]
    return None
