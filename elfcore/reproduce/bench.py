"""Timing of full-grid ELF prediction (``elfcore bench``, ``benchmarks/scaling.py``).

:func:`benchmark` times :func:`elfcore.predict.predict_grid` on a random dense-hydrogen
structure (:func:`random_hydrogen`) with a freshly initialised MLP (:func:`timing_model`)
and, in the same run, a naive per-voxel path, so the reported speed-up is measured side
by side on one machine.
"""
from __future__ import annotations

import math
import os
import platform
import time
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ..descriptor import DescriptorSettings
from ..device import resolve
from ..errors import StructureError
from ..predict import PhaseClock, make_evaluator, model_settings, predict_grid

if TYPE_CHECKING:
    from ase import Atoms

    from ..models.mlp import MLP

__all__ = ["random_hydrogen", "timing_model", "benchmark"]

_PHASES = ("descriptor_s", "inference_s", "total_s", "descriptor_cpu_s", "inference_cpu_s", "total_cpu_s")


def random_hydrogen(
    n_atoms: int, *, volume_per_atom: float = 2.7, min_distance: float = 0.8, seed: int = 0
) -> Atoms:
    """Random dense-hydrogen structure in a cubic cell (for benchmarks and tests).

    Atoms are placed by random sequential addition with a minimum periodic
    distance, so no two atoms overlap.

    Parameters
    ----------
    n_atoms : int
        Number of H atoms (≥ 1).
    volume_per_atom : float
        Å³ per atom (2.7 ≈ 100 GPa fluid).
    min_distance : float
        Smallest allowed H–H distance in Å.
    seed : int
        Seed of the numpy Generator.

    Returns
    -------
    ase.Atoms
    """
    from ase import Atoms

    if n_atoms < 1:
        raise StructureError(f"n_atoms={n_atoms}; must be ≥ 1")
    length = (n_atoms * volume_per_atom) ** (1.0 / 3.0)
    rng = np.random.default_rng(seed)
    placed = np.zeros((0, 3))
    tries = 0
    while len(placed) < n_atoms:
        cand = rng.random(3) * length
        tries += 1
        if tries > 1000 * n_atoms:
            raise StructureError(f"could not place {n_atoms} atoms {min_distance} Å apart at {volume_per_atom} Å³/atom")
        if len(placed):
            d = placed - cand
            d -= length * np.round(d / length)
            if np.min(np.einsum("ij,ij->i", d, d)) < min_distance**2:
                continue
        placed = np.vstack([placed, cand])
    return Atoms(f"H{n_atoms}", positions=placed, cell=np.eye(3) * length, pbc=True)


def timing_model(settings: DescriptorSettings, *, width: int = 128, hidden_layers: int = 2, seed: int = 0) -> MLP:
    """Freshly initialised ELF MLP (paper architecture) for timing runs; weights from ``seed``."""
    from ..models.mlp import MLP

    model = MLP(settings.n_features, width=width, hidden_layers=hidden_layers)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            bound = 1.0 / math.sqrt(p.shape[-1])
            p.uniform_(-bound, bound, generator=gen)
    model.descriptor_settings = settings
    return model


def _peak_memory_gb(dev: torch.device) -> float:
    """CUDA: most memory allocated since the last reset; CPU: peak RSS of the process."""
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 1e9
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu ({platform.processor() or platform.machine()})"


def _time_full_grid(atoms, shape, settings, evaluate, n_members, dev, slab, runs: int) -> list[dict]:
    """Wall and CPU seconds of ``runs`` full-grid predictions (the first one is the cold run)."""
    out = []
    for _ in range(runs):
        t: dict = {}
        t0, c0 = time.perf_counter(), time.process_time()
        predict_grid(atoms, shape, settings, evaluate, n_outputs=n_members, device=dev, slab=slab, timings=t)
        t["total_s"] = time.perf_counter() - t0
        t["total_cpu_s"] = time.process_time() - c0
        out.append(t)
    return out


def _time_naive(atoms, shape, settings, model, dev, n_voxels: int, seed: int) -> tuple[float, float]:
    """Wall and CPU seconds per voxel of the direct neighbour sum + model on a random voxel sample."""
    from ..descriptor import compute_descriptor
    from ..grid import grid_points_frac

    if n_voxels <= 0:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).choice(int(np.prod(shape)), size=n_voxels, replace=False)
    pts = grid_points_frac(shape)[idx] @ np.asarray(atoms.cell[:])
    clock = PhaseClock(dev)
    clock.start()
    feats = compute_descriptor(atoms, pts, settings, device=dev, dtype=torch.float32)
    model(feats)
    return clock.stop() / n_voxels, clock.cpu / n_voxels


def benchmark(
    n_atoms: int = 500,
    grid: int | Sequence[int] = 192,
    *,
    device: str | torch.device = "auto",
    repeats: int = 3,
    naive_voxels: int | None = None,
    model: torch.nn.Module | None = None,
    settings: DescriptorSettings | None = None,
    precision: str = "float32",
    slab: int | None = None,
    seed: int = 0,
) -> dict:
    """Time full-grid ELF prediction and a naive per-voxel path side by side.

    Parameters
    ----------
    n_atoms : int
        Size of the random dense-hydrogen structure (:func:`random_hydrogen`, ``seed``).
    grid : int or (Na, Nb, Nc)
        Grid shape (an int means a cube).
    device : str or torch.device
    repeats : int
        Timed repeats after one warm-up run; medians are reported.
    naive_voxels : int, optional
        Voxels timed with the naive path (direct neighbour sum + the same model);
        default 1000 on CPU, 20000 on CUDA; 0 skips it (``speedup`` is then NaN).
    model : torch.nn.Module, optional
        Default: :func:`timing_model` with the baseline descriptor settings.
    settings : DescriptorSettings, optional
        Descriptor settings when no model is given.
    precision : {"float32", "bfloat16", "float16"}
        Precision of the network's matrix products.
    slab : int, optional
        a-planes per chunk.
    seed : int
        Seed of the structure, the naive voxel sample and the timing model.

    Returns
    -------
    dict
        ``descriptor_s, inference_s, total_s`` (medians of wall time),
        ``descriptor_cpu_s, inference_cpu_s, total_cpu_s`` (medians of process CPU
        time, all threads), ``cold_total_s`` (first run), ``peak_mem_gb`` (CUDA: max allocated; CPU: peak RSS of the process),
        ``device, atoms, grid, voxels, naive_s_per_voxel, naive_voxels, speedup``
        (naive time for the whole grid / total_s), ``descriptor_speedup``,
        ``naive_cpu_s_per_voxel, speedup_cpu`` (the same in CPU time),
        ``threads, load_avg`` (1-min load before and after), ``precision, settings, torch``.
    """
    dev = resolve(device)
    shape = (int(grid),) * 3 if np.isscalar(grid) else tuple(int(n) for n in grid)
    n_vox = int(np.prod(shape))
    atoms = random_hydrogen(n_atoms, seed=seed)
    model = timing_model(settings or DescriptorSettings(), seed=seed) if model is None else model
    settings = model_settings(model)
    model = model.to(dev).eval()
    evaluate, n_members = make_evaluator(model, precision)
    load_before = os.getloadavg()[0]
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    n_naive = min(n_vox, (20000 if dev.type == "cuda" else 1000) if naive_voxels is None else int(naive_voxels))
    with torch.inference_mode():
        runs = _time_full_grid(atoms, shape, settings, evaluate, n_members, dev, slab, max(1, int(repeats)) + 1)
        peak = _peak_memory_gb(dev)
        naive_s, naive_cpu = _time_naive(atoms, shape, settings, model, dev, n_naive, seed)
    med = {k: float(np.median([r[k] for r in runs[1:]])) for k in _PHASES}
    return {
        **med,
        "cold_total_s": float(runs[0]["total_s"]),
        "peak_mem_gb": peak,
        "device": _device_name(dev),
        "atoms": int(n_atoms),
        "grid": list(shape),
        "voxels": n_vox,
        **_naive_summary(naive_s, naive_cpu, n_naive, n_vox, med),
        "repeats": len(runs) - 1,
        "threads": torch.get_num_threads(),
        "load_avg": [load_before, os.getloadavg()[0]],
        "precision": precision,
        "settings": settings.to_dict(),
        "torch": torch.__version__,
    }


def _naive_summary(naive_s: float, naive_cpu: float, n_naive: int, n_vox: int, med: dict) -> dict:
    """Naive-path cost per voxel and the speed-ups of the full-grid path (wall and CPU time)."""
    return {
        "naive_s_per_voxel": naive_s,
        "naive_voxels": n_naive,
        "naive_cpu_s_per_voxel": naive_cpu,
        "speedup": naive_s * n_vox / med["total_s"],
        "descriptor_speedup": naive_s * n_vox / max(med["descriptor_s"], 1e-12),
        "speedup_cpu": naive_cpu * n_vox / max(med["total_cpu_s"], 1e-12),
    }
