"""The per-frame task of a screening run: structure → predicted ELF → topology record.

:func:`screen_frame` is what a Dask worker runs; it is a plain function of its
arguments (model, settings and structure come in, a JSON-ready record goes out),
so it can be called directly too.
"""
from __future__ import annotations

import hashlib
import os
import socket
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import ElfcoreError, SettingsError, StructureError
from ..settings import Settings

__all__ = ["ScreenSettings", "screen_frame", "model_identity", "field_path"]


@dataclass(frozen=True)
class ScreenSettings(Settings):
    """Settings of a screening run (the same for every frame).

    Parameters
    ----------
    spacing : float
        Largest grid spacing in Å (counts rounded up to 2·3·5-smooth numbers,
        :func:`elfcore.predict.grid_shape_for_spacing`).
    device : str
        ``"auto"`` (CUDA when the worker has it), ``"cpu"`` or ``"cuda[:N]"``.
    precision : {"float32", "bfloat16", "float16"}
        Precision of the network's matrix products.
    exclude_radius : float
        Å around non-hydrogen nuclei left out of the topology (0).
    molecularity : bool
        Full merge tree (molecularity, φ*); False = percolation thresholds only.
    member_phi : bool
        For an ensemble, also φ of every member's field (its spread is the
        uncertainty of φ).
    torch_threads : int
        torch threads per task (1: one worker process per core); 0 leaves torch's default.
    memory_budget_gb : float
        Frames whose grid needs more memory fail with a reason.
    upsample : int
        Spline refinement of the grid before the topology sweep
        (:class:`~elfcore.topology.TopologySettings`): 0 = automatic (to ≤ 0.05 Å),
        1 = the predicted grid as is (fastest, coarser thresholds).
    """

    settings_name: ClassVar[str] = "screen"

    spacing: float = 0.08
    device: str = "auto"
    precision: str = "float32"
    exclude_radius: float = 0.0
    molecularity: bool = True
    member_phi: bool = True
    torch_threads: int = 1
    memory_budget_gb: float = 8.0
    upsample: int = 0

    def __post_init__(self):
        from ..predict import PRECISIONS

        if not self.spacing > 0:
            raise SettingsError(f"spacing={self.spacing}; must be > 0 Å")
        if self.precision not in PRECISIONS:
            raise SettingsError(f"precision={self.precision!r}; must be one of {sorted(PRECISIONS)}")
        if self.exclude_radius < 0:
            raise SettingsError(f"exclude_radius={self.exclude_radius}; must be ≥ 0 Å")
        if self.torch_threads < 0:
            raise SettingsError(f"torch_threads={self.torch_threads}; must be ≥ 0")
        if self.upsample < 0:
            raise SettingsError(f"upsample={self.upsample}; must be ≥ 0 (0 = automatic)")
        if not self.memory_budget_gb > 0:
            raise SettingsError(f"memory_budget_gb={self.memory_budget_gb}; must be > 0")



def model_identity(model, name: str) -> dict:
    """What identifies a model in a results database.

    Parameters
    ----------
    model : torch.nn.Module
        Loaded elfcore model carrying ``descriptor_settings``.
    name : str
        How the user named it (path or zoo spec).

    Returns
    -------
    dict
        ``model`` (name), ``model_sha256`` (of its parameters and buffers, so the
        same weights give the same hash wherever the file lies), ``members``,
        ``descriptor`` (settings dict).
    """
    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    settings = getattr(model, "descriptor_settings", None)
    return {
        "model": str(name),
        "model_sha256": h.hexdigest(),
        "members": int(getattr(model, "n_members", 1)),
        "descriptor": settings.to_dict() if settings is not None else None,
    }


def field_path(directory: str | os.PathLike, source: str, index: int) -> str:
    """netCDF file of a frame's predicted field: ``<stem>-<hash of source>_<index>.nc``."""
    stem = os.path.splitext(os.path.basename(source))[0] or "frame"
    tag = hashlib.sha1(source.encode()).hexdigest()[:6]
    return os.path.join(os.fspath(directory), f"{stem}-{tag}_{int(index):06d}.nc")


def _local_scheduler():
    """Context in which dask (and xarray's choice of file lock) runs in the calling thread."""
    try:
        import dask
    except ImportError:  # pragma: no cover - dask is a dependency
        from contextlib import nullcontext

        return nullcontext()
    return dask.config.set(scheduler="synchronous")


def _f(x) -> float | None:
    return None if x is None else float(x)


def screen_frame(
    atoms,
    model,
    settings: ScreenSettings,
    *,
    source: str = "",
    index: int = 0,
    save_dir: str | os.PathLike | None = None,
) -> dict:
    """Predict the ELF of one frame and compute its topology.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic structure of the model's elements (checked beforehand by
        :func:`elfcore.screen.inputs.check_frame`).
    model : torch.nn.Module
        elfcore MLP or Ensemble with ``descriptor_settings``.
    settings : ScreenSettings
    source, index : str, int
        Key of the frame (names the saved field).
    save_dir : str or os.PathLike, optional
        Write the predicted field (``elf_pred``, and ``elf_std`` for an ensemble)
        as a netCDF case there (:func:`field_path`).

    Returns
    -------
    dict
        ``status`` ("ok"; "skipped" when the structure is refused, e.g. overlapping
        atoms; "failed" when the computation raised), ``reason`` (not "ok"), and for "ok":
        ``phi`` (networking value, refined), ``phi_grid``, ``threshold_1d``,
        ``threshold_2d``, ``threshold_3d`` (= φ), ``molecularity``, ``phi_star``,
        ``n_molecules``, ``elf_min``, ``elf_max``, ``elf_mean``, ``elf_std``,
        ``n_members``; for an ensemble ``phi_std`` (standard deviation over the
        members' φ), ``phi_members`` and ``elf_spread`` (mean ensemble standard
        deviation of the ELF); ``grid``, ``seconds_predict``, ``seconds_topology``,
        ``worker``; ``field_file`` with ``save_dir``. Threshold values are None where
        the field never percolates in that dimension.
    """
    import torch

    worker = f"{socket.gethostname()}:{os.getpid()}"
    if settings.torch_threads > 0 and torch.get_num_threads() != settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    try:
        values, shape, n_members, t0 = _predict_frame(atoms, model, settings)
        t1 = time.perf_counter()
        record, elf, std = _frame_topology(atoms, values, n_members, settings)
        t2 = time.perf_counter()
        record.update(grid=[int(n) for n in shape], seconds_predict=round(t1 - t0, 4),
                      seconds_topology=round(t2 - t1, 4), worker=worker)
        if save_dir is not None:
            record["field_file"] = _save_frame(atoms, elf, std, save_dir, source, index)
        return record
    except StructureError as exc:  # the frame itself is unusable: a re-run would refuse it again
        return {"status": "skipped", "reason": str(exc), "worker": worker}
    except (ElfcoreError, ValueError) as exc:
        return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}", "worker": worker}


def _predict_frame(atoms, model, settings: ScreenSettings):
    """Check the frame and predict its ELF.

    Returns ``(values, shape, n_members, t0)``: member values (n_members, Na, Nb, Nc),
    the grid, the members and the ``perf_counter`` time the prediction started (after the checks).
    """
    import torch

    from ..device import resolve
    from ..io.validate import check_prediction_structure
    from ..predict import estimate_memory_gb, grid_shape_for_spacing, make_evaluator, predict_grid

    descriptor = getattr(model, "descriptor_settings", None)
    if descriptor is None:
        raise ElfcoreError("the model carries no descriptor_settings")
    # elements outside the descriptor, overlapping atoms, cell shorter than σ...
    check_prediction_structure(atoms, descriptor.sigma, species=getattr(descriptor, "species", None))
    shape = grid_shape_for_spacing(atoms.cell[:], settings.spacing)
    n_members = int(getattr(model, "n_members", 1))
    need = estimate_memory_gb(shape, descriptor, n_members)
    if need > settings.memory_budget_gb:
        raise ElfcoreError(f"grid {shape} needs ≈{need:.1f} GB, more than memory_budget_gb="
                           f"{settings.memory_budget_gb:g}; use a coarser spacing")
    dev = resolve(settings.device)
    t0 = time.perf_counter()
    model = model.to(dev).eval()
    evaluate, n_members = make_evaluator(model, settings.precision)
    with torch.inference_mode():
        values = predict_grid(atoms, shape, descriptor, evaluate, n_outputs=n_members, device=dev).numpy()
    return values, shape, n_members, t0


def _frame_topology(atoms, values: np.ndarray, n_members: int, settings: ScreenSettings):
    """The "ok" record of a frame (φ, thresholds, molecularity, ELF statistics, ensemble spread).

    Returns ``(record, elf, std)``: the mean field ``elf_pred`` and the members'
    standard deviation (None for one model).
    """
    from ..grid import field_from_atoms
    from ..topology import TopologySettings, percolation_thresholds, topology_summary

    mean = values.mean(axis=0)
    elf = field_from_atoms(mean, atoms, name="elf_pred")
    topo = TopologySettings(exclude_radius=settings.exclude_radius, upsample=settings.upsample)
    summary = topology_summary(elf, topo, bcp=False, molecularity=settings.molecularity)
    perc = summary["percolation"]
    record = {
        "status": "ok",
        "phi": summary["networking_value"],
        "phi_grid": summary["networking_value_grid"],
        "threshold_1d": perc["1"],
        "threshold_2d": perc["2"],
        "threshold_3d": perc["3"],
        "molecularity": summary["molecularity"],
        "phi_star": summary["phi_star"],
        "n_molecules": None if summary["molecules"] is None else len(summary["molecules"]),
        "elf_min": float(mean.min()),
        "elf_max": float(mean.max()),
        "elf_mean": float(mean.mean()),
        "elf_std": float(mean.std()),
        "n_members": n_members,
    }
    std = None
    if n_members > 1:
        std = values.std(axis=0)
        record["elf_spread"] = float(std.mean())
        if settings.member_phi:
            members = [_f(percolation_thresholds(field_from_atoms(v, atoms), topo).values[3]) for v in values]
            known = [p for p in members if p is not None]
            record["phi_members"] = members
            record["phi_std"] = float(np.std(known)) if len(known) == len(members) else None
    return record, elf, std


def _save_frame(atoms, elf, std, save_dir, source: str, index: int) -> str:
    """Write the frame's predicted field (and ``elf_std``) as a netCDF case under ``save_dir``; return its path."""
    from ..grid import field_from_atoms, make_case
    from ..io import write_case

    fields_ = {"elf_pred": elf}
    if std is not None:
        fields_["elf_std"] = field_from_atoms(std, atoms, name="elf_std")
    path = field_path(save_dir, source, index)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    case = make_case(atoms, fields_, attrs={"source": source, "frame": int(index)})
    # inside a Dask worker xarray would take a distributed lock for the write, which an
    # in-memory stream cannot use; this write is local to the task
    with _local_scheduler():
        write_case(case, path)
    return path
