"""Full-grid ELF prediction: structure (+ model) → ELF field (``design.md`` pipeline).

The grid descriptor comes slab by slab from :func:`elfcore.descriptor.iter_grid_descriptor`
(fft path) and goes straight into the model, so only one slab of descriptors is in
memory at a time; the result is assembled into a field with
:func:`elfcore.grid.field_from_atoms`. CPU and CUDA run the same code.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Sequence

import numpy as np
import torch
import xarray as xr

from .descriptor import DescriptorSettings, iter_grid_descriptor
from .device import resolve
from .errors import ElfcoreError, GridError, SettingsMismatchError, StructureError
from .grid import field_from_atoms

__all__ = ["predict_field", "grid_shape_for_spacing", "predict_grid", "estimate_memory_gb"]

log = logging.getLogger(__name__)

#: largest grid (voxels) :func:`predict_field` accepts by default: the float32 result and its
#: working set must fit ``memory_budget_gb``.
DEFAULT_MEMORY_BUDGET_GB = 8.0


def _smooth_size(n: int) -> int:
    """Smallest integer ≥ n whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    n = max(1, int(n))
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def grid_shape_for_spacing(cell, spacing: float = 0.08) -> tuple[int, int, int]:
    """Grid shape with spacing ≤ ``spacing`` Å along each lattice vector.

    Each count is rounded up to a 2·3·5-smooth number (fast FFTs).

    Examples
    --------
    >>> grid_shape_for_spacing(np.eye(3) * 11.05, 0.0576)
    (192, 192, 192)
    """
    if not spacing > 0:
        raise GridError(f"spacing={spacing}; must be > 0 Å")
    lengths = np.linalg.norm(np.asarray(cell, dtype=np.float64), axis=1)
    return tuple(_smooth_size(math.ceil(L / spacing - 1e-9)) for L in lengths)


def estimate_memory_gb(shape: Sequence[int], settings: DescriptorSettings, n_members: int = 1,
                       slab_voxels: int = 200_000) -> float:
    """Rough peak memory in GB of :func:`predict_field` on ``shape`` (output + one slab)."""
    n_vox = int(np.prod(shape))
    out = n_vox * 4 * (2 if n_members > 1 else 1)
    nlm = (settings.l_max + 1) ** 2
    slab = slab_voxels * 4 * (3 * settings.n_radial * nlm + settings.n_features + 2 * 128 * max(1, n_members))
    return (out + slab) / 1e9


def _model_settings(model) -> DescriptorSettings:
    settings = getattr(model, "descriptor_settings", None)
    if settings is None:
        raise SettingsMismatchError("the model carries no descriptor_settings; set model.descriptor_settings")
    return settings


def predict_grid(
    atoms,
    shape: Sequence[int],
    settings: DescriptorSettings,
    evaluate: Callable[[torch.Tensor], torch.Tensor],
    *,
    n_outputs: int = 1,
    device: str | torch.device = "auto",
    slab: int | None = None,
    autocast: torch.dtype | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Evaluate ``evaluate(descriptor_chunk)`` over a whole grid, slab by slab.

    Parameters
    ----------
    atoms : ase.Atoms
    shape : (Na, Nb, Nc)
    settings : DescriptorSettings
    evaluate : callable
        Maps descriptors (n, n_features) float32 on ``device`` to (n,) or
        (n_outputs, n) values.
    n_outputs : int
        Leading size of ``evaluate``'s output (1 for an MLP, n_members for an ensemble).
    device : str or torch.device
    slab : int, optional
        a-planes per chunk (default ~2·10⁵ voxels).
    autocast : torch.dtype, optional
        Run ``evaluate`` under :func:`torch.autocast` with this dtype
        (``torch.bfloat16`` / ``torch.float16``); None = full float32.
    progress : bool
        Show a tqdm bar on stderr.

    Returns
    -------
    torch.Tensor, shape (n_outputs, Na, Nb, Nc), float32 on the CPU.
    """
    dev = resolve(device)
    shape = tuple(int(n) for n in shape)
    n_vox = int(np.prod(shape))
    out = torch.empty((n_outputs, n_vox), dtype=torch.float32)
    chunks = iter_grid_descriptor(atoms, shape, settings, device=dev, dtype=torch.float32, slab=slab)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_vox, unit="voxel", unit_scale=True, desc="predict", leave=False)
    try:
        for start, stop, feats in chunks:
            if autocast is not None:
                with torch.autocast(device_type=dev.type, dtype=autocast):
                    values = evaluate(feats)
            else:
                values = evaluate(feats)
            out[:, start:stop] = values.reshape(n_outputs, stop - start).float().to("cpu")
            if bar is not None:
                bar.update(stop - start)
    finally:
        if bar is not None:
            bar.close()
    return out.reshape((n_outputs,) + shape)


def predict_field(
    atoms,
    model,
    *,
    shape: Sequence[int] | None = None,
    spacing: float = 0.08,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    autocast: torch.dtype | None = None,
    progress: bool = True,
    memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB,
) -> xr.DataArray | tuple[xr.DataArray, xr.DataArray]:
    """Predict the ELF of a periodic hydrogen structure on a full grid.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic hydrogen structure (any triclinic cell).
    model : torch.nn.Module
        An :class:`elfcore.models.MLP` (→ one field) or :class:`elfcore.models.Ensemble`
        (→ mean and standard deviation); must carry ``descriptor_settings``.
    shape : (Na, Nb, Nc), optional
        Grid; default from ``spacing``.
    spacing : float
        Largest grid spacing in Å when ``shape`` is not given (counts rounded up to
        2·3·5-smooth numbers).
    device : str or torch.device
        ``"auto"`` = CUDA when available. The model is moved there.
    batch_size : int, optional
        Voxels per chunk (rounded to whole a-planes); default ~2·10⁵.
    autocast : torch.dtype, optional
        Mixed-precision inference (``torch.bfloat16``); default full float32.
    progress : bool
        tqdm progress bar on stderr.
    memory_budget_gb : float
        Refuse grids whose estimated peak memory exceeds this.

    Returns
    -------
    xarray.DataArray or (xarray.DataArray, xarray.DataArray)
        ``elf`` field (dims a, b, c) carrying the structure; for an ensemble the
        member mean (``elf``) and standard deviation (``elf_std``).

    Raises
    ------
    StructureError
        Empty structure, non-hydrogen atoms, NaN positions.
    GridError
        Grid larger than the memory budget.
    SettingsMismatchError
        The model has no descriptor settings.
    """
    if len(atoms) == 0:
        raise StructureError("the structure has no atoms; nothing to predict")
    settings = _model_settings(model)
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    if shape is None:
        if abs(np.linalg.det(cell)) < 1e-8:
            raise StructureError("the structure needs a periodic cell of non-zero volume")
        shape = grid_shape_for_spacing(cell, spacing)
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise GridError(f"grid shape {shape}; expected three positive integers")
    dev = resolve(device)
    n_members = int(getattr(model, "n_members", 1))
    need = estimate_memory_gb(shape, settings, n_members)
    if need > memory_budget_gb:
        raise GridError(
            f"grid {shape} needs ≈{need:.1f} GB, more than the memory budget of {memory_budget_gb:.1f} GB; "
            "use a coarser spacing or raise memory_budget_gb"
        )
    slab = None
    if batch_size is not None:
        slab = max(1, int(batch_size) // (shape[1] * shape[2]))
    model = model.to(dev).eval()
    log.info("predicting ELF on a %s grid (%d voxels) on %s", shape, int(np.prod(shape)), dev)
    with torch.inference_mode():
        values = predict_grid(
            atoms, shape, settings, model, n_outputs=n_members, device=dev, slab=slab,
            autocast=autocast, progress=progress,
        )
    attrs = {"model_descriptor": str(settings.to_dict()), "method": "elfcore.predict_field"}
    if n_members == 1:
        return field_from_atoms(values[0].numpy(), atoms, name="elf", attrs=attrs)
    mean = values.mean(0)
    std = values.std(0, correction=0)
    attrs["n_members"] = n_members
    return (
        field_from_atoms(mean.numpy(), atoms, name="elf", attrs=attrs),
        field_from_atoms(std.numpy(), atoms, name="elf_std", attrs=attrs),
    )
