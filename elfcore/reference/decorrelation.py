"""Structural checks of large cells built by replicating a small one.

A 2×2×2 replica of a 64-atom fluid snapshot is periodic with the small cell until
its copies have moved apart. Two checks tell when that has happened:

* :func:`replica_decorrelation` — the static structure factor
  ``S(k) = |Σ_j exp(-i k·r_j)|² / N`` at the small cell's reciprocal-lattice vectors,
  compared with S(k) at the other vectors of the large cell with the same |k|. A
  perfect replica has all its density at the small cell's vectors (ratio → ∞, the
  others are exactly zero); a fluid without the period has ratio ≈ 1.
* :func:`rdf_difference` — the pair distribution g(r) of the large cell against that
  of the small-cell MD at the same state point (local structure unchanged).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from ..errors import SettingsError

__all__ = [
    "structure_factor",
    "replica_decorrelation",
    "radial_distribution",
    "rdf_difference",
    "REPLICA_RATIO_MAX",
    "RDF_RMS_MAX",
]

#: Largest S(k) ratio (small-cell vectors / other vectors of the same |k|) accepted as
#: "the replica period has gone". For a fluid each S(k) scatters exponentially about
#: its mean, so with ~30 small-cell vectors the ratio scatters by ~±0.2 about 1; a
#: perfect replica gives ∞.
REPLICA_RATIO_MAX = 1.6
#: Largest RMS difference of g(r) (0.5 Å ≤ r ≤ r_max) accepted between a large cell and
#: the small-cell MD at the same state point.
RDF_RMS_MAX = 0.10


def _cell_and_positions(atoms) -> tuple[np.ndarray, np.ndarray]:
    cell = np.asarray(atoms.cell[:], dtype=float)
    if abs(np.linalg.det(cell)) < 1e-9:
        raise SettingsError("the structure has no periodic cell")
    return cell, np.asarray(atoms.get_positions(), dtype=float)


def structure_factor(atoms, kvectors: np.ndarray) -> np.ndarray:
    """Static structure factor ``|Σ_j exp(-i k·r_j)|² / N`` at the given k vectors (Å⁻¹).

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic structure.
    kvectors : ndarray, shape (m, 3)
        Wave vectors in Å⁻¹ (with the 2π), normally reciprocal-lattice vectors of the cell.

    Returns
    -------
    ndarray, shape (m,)
    """
    _, pos = _cell_and_positions(atoms)
    k = np.asarray(kvectors, dtype=float).reshape(-1, 3)
    phase = pos @ k.T  # (n, m)
    rho = np.exp(-1j * phase).sum(axis=0)
    return (np.abs(rho) ** 2) / len(pos)


def _reciprocal_vectors(cell: np.ndarray, k_max: float) -> np.ndarray:
    """Integer triples (h, k, l) ≠ 0 of the reciprocal lattice of ``cell`` with |G| ≤ k_max (one of ±G)."""
    recip = 2.0 * np.pi * np.linalg.inv(cell).T  # rows b_i, a_i·b_j = 2π δ_ij
    widths = 1.0 / np.linalg.norm(np.linalg.inv(cell).T, axis=1)
    n = [int(np.ceil(k_max * w / (2 * np.pi))) + 1 for w in widths]
    hkl = np.array(np.meshgrid(*[np.arange(-m, m + 1) for m in n], indexing="ij")).reshape(3, -1).T
    g = hkl @ recip
    norm = np.linalg.norm(g, axis=1)
    keep = (norm > 1e-9) & (norm <= k_max + 1e-9)
    hkl, g = hkl[keep], g[keep]
    # one of each ±G pair (S(k) = S(-k) for real densities)
    first = np.array([next(x for x in t if x != 0) > 0 for t in hkl])
    return hkl[first]


def replica_decorrelation(atoms, replicas: int | Sequence[int] = 2, k_max: float = 2.5,
                          n_neighbours: int = 24) -> dict:
    """How much of a replica's period is left in a supercell.

    Parameters
    ----------
    atoms : ase.Atoms
        The large cell (``replicas`` copies of a small cell along each cell vector).
    replicas : int or 3 ints
        Copies per cell vector.
    k_max : float
        Largest |k| of the small cell's reciprocal vectors used, Å⁻¹.
    n_neighbours : int
        The fluid's level at a small-cell vector's |k| is the mean S over this many
        other vectors of the large cell nearest to it in |k|.

    Returns
    -------
    dict
        ``s_replica`` (mean S at the small cell's reciprocal vectors), ``s_fluid`` (mean
        of the fluid's level at the same |k|), ``ratio`` (their quotient; ∞ for a
        perfect replica, ≈ 1 for a decorrelated fluid), ``n_replica`` (vectors used),
        ``k_min`` (smallest small-cell |G|, Å⁻¹) and ``decorrelated`` (ratio ≤
        :data:`REPLICA_RATIO_MAX`).
    """
    cell, _ = _cell_and_positions(atoms)
    reps = np.broadcast_to(np.asarray(replicas, dtype=int), (3,))
    if np.any(reps < 1):
        raise SettingsError(f"replicas must be >= 1, got {replicas}")
    recip = 2.0 * np.pi * np.linalg.inv(cell).T
    # candidates somewhat beyond k_max, so the shells near k_max have neighbours on both sides
    hkl = _reciprocal_vectors(cell, 1.5 * k_max)
    on_small = np.all(hkl % reps == 0, axis=1)
    g = hkl @ recip
    norm = np.linalg.norm(g, axis=1)
    used = on_small & (norm <= k_max + 1e-9)
    if not used.any():
        raise SettingsError(f"no reciprocal vector of the small cell below k_max = {k_max} Å⁻¹")
    s = structure_factor(atoms, g)
    other_norm, other_s = norm[~on_small], s[~on_small]
    if len(other_s) < n_neighbours:
        raise SettingsError("too few reciprocal vectors besides the small cell's; raise k_max")
    level = np.array([other_s[np.argsort(np.abs(other_norm - gn))[:n_neighbours]].mean() for gn in norm[used]])
    s_rep = float(s[used].mean())
    s_flu = float(level.mean())
    ratio = s_rep / s_flu if s_flu > 0 else float("inf")
    return {
        "s_replica": s_rep,
        "s_fluid": s_flu,
        "ratio": float(ratio),
        "n_replica": int(used.sum()),
        "k_min": float(norm[used].min()),
        "decorrelated": bool(np.isfinite(ratio) and ratio <= REPLICA_RATIO_MAX),
    }


def radial_distribution(frames: Iterable, r_max: float, bins: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Pair distribution function g(r) averaged over periodic frames.

    Parameters
    ----------
    frames : iterable of ase.Atoms
        Periodic structures of one state point (same number of atoms not required).
    r_max : float
        Largest distance, Å; must not exceed half the narrowest cell width of any frame.
    bins : int
        Histogram bins on [0, r_max].

    Returns
    -------
    r : ndarray, shape (bins,)
        Bin centres, Å.
    g : ndarray, shape (bins,)
    """
    from ase.neighborlist import neighbor_list

    edges = np.linspace(0.0, r_max, bins + 1)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    total = np.zeros(bins)
    n_frames = 0
    for atoms in frames:
        cell, pos = _cell_and_positions(atoms)
        vol = abs(np.linalg.det(cell))
        widths = vol / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
        if r_max > widths.min() / 2 + 1e-9:
            raise SettingsError(f"r_max = {r_max} Å exceeds half the narrowest cell width ({widths.min() / 2:.3f} Å)")
        d = neighbor_list("d", atoms, r_max)
        hist, _ = np.histogram(d, bins=edges)
        n = len(pos)
        total += hist / (n * (n / vol) * shell)  # each pair counted twice, per atom
        n_frames += 1
    if n_frames == 0:
        raise SettingsError("no frames")
    return 0.5 * (edges[1:] + edges[:-1]), total / n_frames


def rdf_difference(frames_a: Iterable, frames_b: Iterable, r_max: float, r_min: float = 0.5,
                   bins: int = 50) -> dict:
    """RMS and largest difference of g(r) between two sets of frames on ``[r_min, r_max]``.

    Returns
    -------
    dict
        ``rms``, ``max_abs``, ``r_max``, ``matches`` (rms ≤ :data:`RDF_RMS_MAX`), and the
        two curves (``r``, ``g_a``, ``g_b``) as lists.
    """
    r, ga = radial_distribution(frames_a, r_max, bins)
    _, gb = radial_distribution(frames_b, r_max, bins)
    sel = r >= r_min
    d = ga[sel] - gb[sel]
    rms = float(np.sqrt(np.mean(d**2)))
    return {"rms": rms, "max_abs": float(np.abs(d).max()), "r_max": float(r_max),
            "matches": bool(rms <= RDF_RMS_MAX), "r": r.tolist(), "g_a": ga.tolist(), "g_b": gb.tolist()}
