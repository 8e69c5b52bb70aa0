"""Persistence-simplified critical points of a periodic field (Morse relation exact).

The Newton-refined points of :func:`~elfcore.topology.critical.critical_points`
follow the interpolant into every shallow wiggle, and on DFT grids they miss or
add a few points, so their counts need not satisfy the Morse relation. This module
counts critical points the topological way instead:

1. The grid values define a periodic cubical complex (grid points, the edges and
   faces between face neighbours, the cubes), each cell entering the superlevel
   filtration at the lowest value of its corners: the same 6-connected superlevel
   sets as the merge tree of :mod:`elfcore.topology.mergetree`.
2. Its persistent homology (computed with GUDHI) pairs every critical cell with
   the one that cancels it: maxima with bond saddles (H₀), bond with ring saddles
   (H₁), ring saddles with cages/minima (H₂). A grid point stands for each cell
   (the corner with the lowest value).
3. Pairs whose persistence (value difference) is at most ``min_persistence`` are
   cancelled together; the 8 essential classes of the 3-torus (1 maximum,
   3 bond and 3 ring saddles, 1 cage) always stay.

Because points only ever disappear in (k, k+1) pairs, n_max − n_bond + n_ring −
n_cage = 0 holds for every threshold, and the counts are invariant under origin
shifts of the grid. The retained points are finally refined by Newton's method on
the periodic tricubic spline (kept at the grid point when Newton leaves the voxel
or finds a point of another kind).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import xarray as xr

from ..grid import validate_field
from .critical import KIND_NAMES, KindCounts, morse_sum
from .mergetree import DEFAULT_CENSUS_MAX_POINTS, DEFAULT_PERSISTENCE
from ..errors import SettingsError

__all__ = ["PersistenceDiagram", "CriticalCensus", "persistence_diagram", "critical_census", "DEFAULT_PERSISTENCE"]

log = logging.getLogger(__name__)

#: kind code of the positive (birth) cell of each homology dimension: H₀ max, H₁ bond, H₂ ring, H₃ cage
_KIND_OF_DIM = (3, 2, 1, 0)


@dataclass(frozen=True)
class PersistenceDiagram:
    """Persistence pairs of the superlevel filtration of a periodic grid field.

    Attributes
    ----------
    shape : tuple of int
        Grid shape.
    values : (N,) float64
        Grid values, C order.
    pairs : tuple of three (n_d, 2) int64 arrays
        For homology dimension d = 0, 1, 2: flat C-order grid indices of the point
        standing for the birth cell (a maximum, bond, ring saddle) and the death
        cell (a bond, ring saddle, cage). Zero-persistence pairs are included.
    essential : tuple of four int64 arrays
        Grid points of the classes that never die (1, 3, 3, 1 on the 3-torus).
    """

    shape: tuple
    values: np.ndarray
    pairs: tuple
    essential: tuple

    def persistence(self, dim: int) -> np.ndarray:
        """Persistence (birth value − death value, ≥ 0) of the pairs of dimension ``dim``."""
        p = self.pairs[dim]
        return self.values[p[:, 0]] - self.values[p[:, 1]]

    def counts(self, min_persistence: float = DEFAULT_PERSISTENCE) -> dict:
        """Critical-point counts after cancelling pairs with persistence ≤ ``min_persistence``.

        Returns ``max``, ``bond``, ``ring``, ``cage`` and ``morse_sum`` (always 0 on the 3-torus).
        """
        kept = [int(np.sum(self.persistence(d) > min_persistence)) for d in range(3)]
        ess = [len(e) for e in self.essential]
        c = {
            "max": ess[0] + kept[0],
            "bond": ess[1] + kept[0] + kept[1],
            "ring": ess[2] + kept[1] + kept[2],
            "cage": ess[3] + kept[2],
        }
        c["morse_sum"] = morse_sum(c)
        return c


@dataclass(frozen=True)
class CriticalCensus(KindCounts):
    """Critical points that survive persistence simplification (``counts``; ``morse_sum`` is 0 by construction).

    Attributes
    ----------
    positions_frac : (m, 3) float64
        Fractional positions in [0, 1) (Newton-refined where ``refined``).
    values : (m,) float64
        Field value (spline value where refined, grid value otherwise).
    kinds : (m,) int64
        3 max, 2 bond, 1 ring, 0 cage (number of descending directions).
    persistence : (m,) float64
        Persistence of the pair the point belongs to (inf: essential class).
    partner : (m,) int64
        Index (into these arrays) of the point it is paired with; -1 when essential.
    grid_index : (m, 3) int64
        Grid point standing for the critical cell.
    refined : (m,) bool
        Newton converged within one voxel to a point of the same kind.
    min_persistence : float
        Cancellation threshold used.
    diagram : PersistenceDiagram
        The full diagram (counts at other thresholds: ``diagram.counts(t)``).
    """

    positions_frac: np.ndarray
    values: np.ndarray
    kinds: np.ndarray
    persistence: np.ndarray
    partner: np.ndarray
    grid_index: np.ndarray
    refined: np.ndarray
    min_persistence: float
    diagram: PersistenceDiagram

    def table(self) -> list[dict]:
        """Points as dicts (kind, value, position_frac, persistence, partner), highest value first."""
        return [
            {
                "kind": KIND_NAMES[int(k)],
                "value": float(v),
                "position_frac": [float(x) for x in p],
                "persistence": None if not np.isfinite(s) else float(s),
                "partner": int(q),
            }
            for k, v, p, s, q in zip(self.kinds, self.values, self.positions_frac, self.persistence, self.partner)
        ]


def persistence_diagram(field: xr.DataArray) -> PersistenceDiagram:
    """Persistent homology of the superlevel sets of a periodic grid field.

    Parameters
    ----------
    field : xarray.DataArray
        Periodic field on a 3D grid (no duplicated boundary plane).

    Returns
    -------
    PersistenceDiagram
    """
    try:
        import gudhi
    except ImportError as exc:  # pragma: no cover - gudhi is a dependency
        raise ImportError("the critical-point census needs GUDHI: pip install gudhi") from exc
    validate_field(field)
    values = np.ascontiguousarray(np.asarray(field.values, dtype=np.float64))
    if values.ndim != 3 or min(values.shape) < 2:
        raise SettingsError(f"need a 3D grid with at least 2 points per axis, got shape {values.shape}")
    shape = tuple(int(n) for n in values.shape)
    if values.size > DEFAULT_CENSUS_MAX_POINTS:
        log.warning("critical-point census of a %s grid: GUDHI stores %.0f M cells, expect minutes and GBs",
                    "×".join(map(str, shape)), 8 * values.size / 1e6)
    # superlevel filtration = sublevel filtration of −f; a cell enters at the max of its corners' −f
    cc = gudhi.PeriodicCubicalComplex(vertices=-values, periodic_dimensions=[True, True, True])
    cc.compute_persistence(homology_coeff_field=2, min_persistence=-1)
    reg, ess = cc.vertices_of_persistence_pairs()

    def to_c(idx) -> np.ndarray:  # GUDHI reports flat Fortran-order indices
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size == 0:
            return idx.reshape(idx.shape)
        return np.ravel_multi_index(np.unravel_index(idx, shape, order="F"), shape).astype(np.int64)

    pairs = tuple(to_c(reg[d]).reshape(-1, 2) if d < len(reg) else np.zeros((0, 2), np.int64) for d in range(3))
    essential = tuple(to_c(ess[d]).reshape(-1) if d < len(ess) else np.zeros(0, np.int64) for d in range(4))
    return PersistenceDiagram(shape=shape, values=values.reshape(-1), pairs=pairs, essential=essential)


def critical_census(
    field: xr.DataArray,
    min_persistence: float = DEFAULT_PERSISTENCE,
    *,
    refine: bool = True,
    diagram: PersistenceDiagram | None = None,
) -> CriticalCensus:
    """Critical points of a periodic field after cancelling low-persistence pairs.

    Parameters
    ----------
    field : xarray.DataArray
        Periodic field (any cell).
    min_persistence : float
        Pairs whose values differ by at most this much (field units) cancel; 0
        keeps every pair of nonzero persistence (every critical cell of the grid).
    refine : bool
        Newton-refine each point on the periodic tricubic spline.
    diagram : PersistenceDiagram, optional
        Reuse a diagram computed before for this field.

    Returns
    -------
    CriticalCensus
        Its counts satisfy n_max − n_bond + n_ring − n_cage = 0.
    """
    if not np.isfinite(min_persistence) or min_persistence < 0:
        raise SettingsError(f"min_persistence={min_persistence}; must be a finite number ≥ 0")
    dg = diagram if diagram is not None else persistence_diagram(field)
    if tuple(dg.shape) != tuple(field.shape):
        raise SettingsError(f"diagram of a {dg.shape} grid given for a {tuple(field.shape)} field")
    flat, kinds, pers, partner = [], [], [], []
    for d in range(3):
        p = dg.pairs[d]
        s = dg.persistence(d)
        keep = s > min_persistence
        p, s = p[keep], s[keep]
        n0 = len(flat)
        k = len(p)
        flat += list(p[:, 0]) + list(p[:, 1])
        kinds += [_KIND_OF_DIM[d]] * k + [_KIND_OF_DIM[d + 1]] * k
        pers += list(s) * 2
        partner += list(range(n0 + k, n0 + 2 * k)) + list(range(n0, n0 + k))
    for d in range(4):
        e = dg.essential[d]
        flat += list(e)
        kinds += [_KIND_OF_DIM[d]] * len(e)
        pers += [np.inf] * len(e)
        partner += [-1] * len(e)
    flat = np.asarray(flat, dtype=np.int64)
    kinds = np.asarray(kinds, dtype=np.int64)
    pers = np.asarray(pers, dtype=np.float64)
    partner = np.asarray(partner, dtype=np.int64)
    shape = np.asarray(dg.shape)
    grid_index = np.stack(np.unravel_index(flat, dg.shape), axis=1).astype(np.int64).reshape(-1, 3)
    pos = grid_index.astype(np.float64)
    vals = dg.values[flat].copy()
    refined = np.zeros(len(flat), dtype=bool)
    if refine and len(flat):
        pos, vals, refined = _refine(dg, pos, vals, kinds)
    order = np.lexsort((-kinds, -vals))
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    partner = np.where(partner >= 0, inverse[np.maximum(partner, 0)], -1)[order]
    frac = np.mod(pos / shape, 1.0)
    frac[frac >= 1.0] = 0.0
    return CriticalCensus(
        positions_frac=frac[order],
        values=vals[order],
        kinds=kinds[order],
        persistence=pers[order],
        partner=partner,
        grid_index=grid_index[order],
        refined=refined[order],
        min_persistence=float(min_persistence),
        diagram=dg,
    )


def _refine(dg: PersistenceDiagram, pos, vals, kinds):
    from . import _kernels as K
    from .critical import _coefficients, _hessian

    coef = _coefficients(dg.values.reshape(dg.shape))
    new, info, ok = K.newton_cp(coef, np.ascontiguousarray(pos), 0.5, 1.0, 1e-9, 60)
    if len(info):
        eig = np.array([np.linalg.eigvalsh(_hessian(r)) for r in info]).reshape(-1, 3)
        same = np.sum(eig < 0, axis=1) == kinds
    else:
        same = np.zeros(0, dtype=bool)
    good = ok & same
    pos = np.where(good[:, None], new, pos)
    vals = np.where(good, info[:, 0], vals)
    return pos, vals, good
