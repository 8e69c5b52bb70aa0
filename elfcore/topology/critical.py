"""Critical points of a periodic field and the bond-critical-point route to φ.

Critical points are the zeros of the gradient of the periodic tricubic B-spline
interpolant of the grid values. Candidates are the grid cells over whose 8
corners every component of the interpolant's gradient changes sign; Newton's
method on the spline gradient from the centres of these cells and of their face
neighbours refines them, duplicates (closer than 0.05 grid steps) are merged, and the signature of the Hessian classifies them
(``(3,-3)`` maximum/attractor, ``(3,-1)`` bond, ``(3,+1)`` ring, ``(3,+3)``
cage/minimum). On a 3-torus their numbers obey the Morse relation
``n_max - n_bond + n_ring - n_cage = 0`` (Euler characteristic 0); a violation
means missed or spurious points: nearly flat regions (the ELF plateau close to 1
in H₂ bonds, flat low-ELF voids) hold clusters of nearly degenerate points whose
count the interpolant does not pin down, and real DFT grids can miss the
relation by one or two. φ is not affected (it depends on the bcp that completes
the network, not on the count).

Each bond critical point is linked to the two attractors reached by steepest
ascent (Cartesian metric) from either side along its unstable direction, with
the lattice translation between them, as critic2 reports it. The bcp route to the
networking value (TcESTIME-like, ``docs/science.md`` §7): sort bcps by value, add them
as edges of the attractor graph, φ_bcp = value of the bcp after which the graph
is 3-periodic; TcESTIME rounds the bcp values to 2 decimals first (``phi_2dec``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import xarray as xr

from ..grid import cart_to_frac, field_cell, validate_field
from . import _kernels as K
from .mergetree import TopologySettings

__all__ = [
    "CriticalPoints",
    "BondGraphResult",
    "KIND_NAMES",
    "critical_points",
    "pl_critical_counts",
    "bond_graph_percolation",
    "networking_value_bcp",
    "atom_basins",
]

log = logging.getLogger(__name__)

#: kind code (number of negative Hessian eigenvalues) → name
KIND_NAMES = {3: "max", 2: "bond", 1: "ring", 0: "cage"}
#: Å: an ascent path that stalls short of a listed maximum is assigned the nearest one within this distance
FALLBACK_RADIUS = 0.5
#: Å: maxima closer than this whose straight connection stays within CLUSTER_DROP (relative to the
#: field's range) of the lower one are one attractor in the bcp graph
CLUSTER_RADIUS = 1.0
CLUSTER_DROP = 0.02


def kind_counts(kinds: np.ndarray) -> dict:
    """Number of critical points per kind name (``max``, ``bond``, ``ring``, ``cage``)."""
    kinds = np.asarray(kinds)
    return {name: int(np.sum(kinds == k)) for k, name in KIND_NAMES.items()}


def morse_sum(counts: dict) -> int:
    """n_max − n_bond + n_ring − n_cage of a count dict (0 for a complete set on a 3-torus)."""
    return counts["max"] - counts["bond"] + counts["ring"] - counts["cage"]


class KindCounts:
    """``counts`` and ``morse_sum`` of a set of critical points with a ``kinds`` array."""

    kinds: np.ndarray

    @property
    def counts(self) -> dict:
        """Number of points per kind name."""
        return kind_counts(self.kinds)

    @property
    def morse_sum(self) -> int:
        """n_max − n_bond + n_ring − n_cage (0 for a complete set on a 3-torus)."""
        return morse_sum(self.counts)


@dataclass(frozen=True)
class CriticalPoints(KindCounts):
    """Critical points of one periodic field.

    Attributes
    ----------
    positions_frac : (m, 3) float64
        Fractional positions in [0, 1).
    values : (m,) float64
        Interpolated field value.
    kinds : (m,) int64
        Number of negative Hessian eigenvalues: 3 max, 2 bond, 1 ring, 0 cage.
    bond_attractors : (n_bond, 2) int64
        For each bond point (in the order of ``bond_index``), indices into
        ``maxima`` of the attractors it joins (-1 when an ascent was lost).
    bond_translations : (n_bond, 3) int64
        Lattice translation of the second attractor's copy.
    bond_index : (n_bond,) int64
        Indices of the bond points in the full list.
    maxima : (n_max,) int64
        Indices of the maxima in the full list.
    cell : (3, 3) float64 or None
        Lattice vectors (rows, Å) of the field.
    cluster_edges : (k, 5) int64 or None
        Maxima ``i, j`` (indices into ``maxima``) and the translation of ``j``'s copy
        that form one attractor: closer than :data:`CLUSTER_RADIUS` and joined by a
        straight segment on which the field stays within :data:`CLUSTER_DROP` (×
        range) of the lower maximum. Plateaus (ELF ≈ 1 in H₂, made rugged by
        quantized storage) otherwise split one attractor into many.
    """

    positions_frac: np.ndarray
    values: np.ndarray
    kinds: np.ndarray
    maxima: np.ndarray
    bond_index: np.ndarray
    bond_attractors: np.ndarray
    bond_translations: np.ndarray
    cell: np.ndarray | None = None
    cluster_edges: np.ndarray | None = None

    def bonds(self) -> list[dict]:
        """Bond critical points as dicts (value, position_frac, attractors, translation)."""
        out = []
        for b, (i, j), t in zip(self.bond_index, self.bond_attractors, self.bond_translations):
            out.append(
                {
                    "value": float(self.values[b]),
                    "position_frac": [float(x) for x in self.positions_frac[b]],
                    "attractors": [int(i), int(j)],
                    "translation": [int(x) for x in t],
                }
            )
        return out


@dataclass(frozen=True)
class BondGraphResult:
    """Percolation of the attractor graph built from bond critical points.

    ``values[k]`` is the value of the bcp after which the graph first has a
    k-periodic component (None: never); ``values_2dec`` the same with bcp values
    rounded to 2 decimals first (TcESTIME's convention). ``n_cluster_edges``
    counts the links between maxima merged into one attractor (see
    :data:`CLUSTER_RADIUS`).
    """

    values: dict
    values_2dec: dict
    n_edges: int
    n_cluster_edges: int = 0

    @property
    def phi(self) -> float | None:
        return self.values[3]


# --------------------------------------------------------------------------- helpers
def _index_map(field: xr.DataArray) -> np.ndarray:
    """``A`` with ``idx = x_cart @ A`` (grid indices from Cartesian Å)."""
    return np.linalg.inv(field_cell(field)) * np.asarray(field.shape, dtype=np.float64)[None, :]


def _coefficients(values: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.spline_filter(np.asarray(values, np.float64), order=3, mode="grid-wrap")


def _node_gradients(coef: np.ndarray) -> list[np.ndarray]:
    """Exact gradient of the B-spline interpolant at the grid points, per grid step."""
    from scipy import ndimage

    w = np.array([1.0, 4.0, 1.0]) / 6.0
    d = np.array([-0.5, 0.0, 0.5])
    out = []
    for ax in range(3):
        g = coef
        for ax2 in range(3):
            g = ndimage.correlate1d(g, d if ax2 == ax else w, axis=ax2, mode="wrap")
        out.append(np.ascontiguousarray(g))
    return out


def _hessian(row) -> np.ndarray:
    return np.array(
        [[row[4], row[7], row[8]], [row[7], row[5], row[9]], [row[8], row[9], row[6]]], dtype=np.float64
    )


def _nearest_maximum(ends_idx, max_idx, shape, spacing_limit_idx2, metric):
    """Nearest maximum (periodic) of each end point; returns (index, translation)."""
    from scipy.spatial import cKDTree

    shape = np.asarray(shape, dtype=np.float64)
    m = len(ends_idx)
    if len(max_idx) == 0 or m == 0:
        return np.full(m, -1, np.int64), np.zeros((m, 3), np.int64)
    tree = cKDTree(np.mod(max_idx, shape), boxsize=shape)
    k = min(8, len(max_idx))
    _, cand = tree.query(np.mod(ends_idx, shape), k=k)
    cand = np.asarray(cand).reshape(m, k)
    best = np.full(m, -1, np.int64)
    trans = np.zeros((m, 3), np.int64)
    bestd = np.full(m, np.inf)
    for c in range(k):
        q = cand[:, c]
        t = np.rint((ends_idx - max_idx[q]) / shape).astype(np.int64)
        d = ends_idx - max_idx[q] - t * shape
        d2 = np.einsum("ij,jk,ik->i", d, metric, d)
        better = d2 < bestd
        best[better], trans[better], bestd[better] = q[better], t[better], d2[better]
    best[bestd > spacing_limit_idx2] = -1
    return best, trans


# --------------------------------------------------------------------------- critical points
def pl_critical_counts(field: xr.DataArray) -> dict:
    """Critical-point census of the piecewise-linear interpolant of a periodic field.

    The grid is triangulated (Freudenthal: 6 tetrahedra per cube) and every grid
    point is classified by the connected components of its lower and upper links
    (ties broken by grid index). Unlike the refined points of :func:`critical_points`
    this census is exact for the triangulated field, so it always satisfies the Morse
    relation n_max − n_bond + n_ring − n_cage = 0 on the 3-torus; it counts every
    small wiggle (no persistence filtering) and gives no sub-voxel positions.

    Returns
    -------
    dict
        ``max``, ``bond``, ``ring``, ``cage`` counts (degenerate saddles counted
        with their multiplicity) and ``morse_sum``.
    """
    validate_field(field)
    values = np.ascontiguousarray(np.asarray(field.values, dtype=np.float64))
    counts, _ = K.pl_critical_census(values, K._FREUD, K._LINK_EDGES)
    out = {"max": int(counts[3]), "bond": int(counts[2]), "ring": int(counts[1]), "cage": int(counts[0])}
    out["morse_sum"] = out["max"] - out["bond"] + out["ring"] - out["cage"]
    return out


def critical_points(
    field: xr.DataArray,
    settings: TopologySettings | None = None,
    *,
    link_bonds: bool = True,
) -> CriticalPoints:
    """Find, refine and classify the critical points of a periodic field.

    Parameters
    ----------
    field : xarray.DataArray
        Periodic field (any cell).
    settings : TopologySettings, optional
        ``exclude_radius`` drops points within that distance (Å) of non-hydrogen
        nuclei.
    link_bonds : bool
        Trace the two ascent paths of every bond point to its attractors.

    Returns
    -------
    CriticalPoints
    """
    from scipy.spatial import cKDTree

    settings = settings or TopologySettings()
    validate_field(field)
    values = np.asarray(field.values, dtype=np.float64)
    shape = np.asarray(values.shape)
    coef = _coefficients(values)
    cells = K.candidate_cells(*_node_gradients(coef))
    # also start from the face neighbours of every candidate cell: clusters of nearly
    # degenerate points (ELF plateaus) are otherwise easily missed
    mask = np.zeros(values.shape, dtype=bool)
    mask[tuple(cells.T)] = True
    grown = mask.copy()
    for ax in range(3):
        for step in (-1, 1):
            grown |= np.roll(mask, step, axis=ax)
    starts = np.ascontiguousarray(np.argwhere(grown).astype(np.float64) + 0.5)
    pos, info, ok = K.newton_cp(coef, starts, 0.5, 1.5, 1e-9, 60)
    pos, info = pos[ok], info[ok]
    pos = np.mod(pos, shape)
    pos = np.where(pos >= shape, pos - shape, pos)
    # merge duplicates (periodic)
    keep = np.ones(len(pos), dtype=bool)
    if len(pos):
        tree = cKDTree(pos, boxsize=shape.astype(np.float64) + 1e-12)
        for i, j in sorted(tree.query_pairs(0.05)):
            if keep[i] and keep[j]:
                keep[j] = False
    pos, info = pos[keep], info[keep]
    # drop degenerate points (a Hessian eigenvalue ~0: flat field, plateaus at round-off level)
    scale = float(values.max() - values.min())
    eig = np.array([np.linalg.eigvalsh(_hessian(r)) for r in info]).reshape(-1, 3)
    good = np.min(np.abs(eig), axis=1) > 1e-10 * scale if scale > 0 else np.zeros(len(eig), bool)
    pos, info, eig = pos[good], info[good], eig[good]
    kinds = np.sum(eig < 0, axis=1).astype(np.int64)
    values_cp = info[:, 0].copy() if len(info) else np.zeros(0)
    frac = pos / shape
    if settings.exclude_radius > 0:
        frac, values_cp, kinds, info, pos = _drop_excluded(field, settings, frac, values_cp, kinds, info, pos)
    order = np.lexsort((kinds, -values_cp))
    frac, values_cp, kinds, info, pos = frac[order], values_cp[order], kinds[order], info[order], pos[order]
    maxima = np.flatnonzero(kinds == 3)
    bonds = np.flatnonzero(kinds == 2)
    att = np.full((len(bonds), 2), -1, np.int64)
    trans = np.zeros((len(bonds), 3), np.int64)
    if link_bonds and len(bonds) and len(maxima):
        att, trans = _link_bonds(field, coef, pos, info, maxima, bonds)
    return CriticalPoints(
        positions_frac=frac,
        values=values_cp,
        kinds=kinds,
        maxima=maxima,
        bond_index=bonds,
        bond_attractors=att,
        bond_translations=trans,
        cell=field_cell(field),
        cluster_edges=_attractor_clusters(field, coef, frac[maxima], values_cp[maxima]),
    )


def _drop_excluded(field, settings, frac, values_cp, kinds, info, pos):
    from ..grid import minimum_image

    cell = field_cell(field)
    p = np.asarray(field.attrs.get("positions", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    num = np.asarray(field.attrs.get("numbers", np.zeros(0, int))).reshape(-1)
    heavy = p[num != settings.hydrogen_number]
    if len(heavy) == 0 or len(frac) == 0:
        return frac, values_cp, kinds, info, pos
    cart = frac @ cell
    keep = np.ones(len(frac), dtype=bool)
    for h in heavy:
        d = np.linalg.norm(minimum_image(cart - h, cell), axis=1)
        keep &= d > settings.exclude_radius
    return frac[keep], values_cp[keep], kinds[keep], info[keep], pos[keep]


def _link_bonds(field, coef, pos, info, maxima, bonds):
    a = _index_map(field)
    h_min = float(np.min(np.linalg.norm(field_cell(field), axis=1) / np.asarray(field.shape)))
    starts = []
    for b in bonds:
        h_cart = a @ _hessian(info[b]) @ a.T
        w, vec = np.linalg.eigh(h_cart)
        e = vec[:, np.argmax(w)]  # unstable direction of the ascent (positive curvature)
        d_idx = (0.3 * h_min) * (e @ a)
        starts.append(pos[b] + d_idx)
        starts.append(pos[b] - d_idx)
    starts = np.ascontiguousarray(np.array(starts))
    idx, trans = _ascend_to_maxima(field, coef, starts, pos[maxima])
    i0, i1 = idx[0::2], idx[1::2]
    t = trans[1::2] - trans[0::2]
    att = np.stack([i0, i1], axis=1)
    lost = np.any(att < 0, axis=1)
    if np.any(lost):
        log.warning("%d of %d bond paths did not reach an attractor", int(lost.sum()), len(bonds))
    return att, t


def _ascend_to_maxima(field, coef, starts, max_idx, retries: int = 4):
    """Steepest ascent from ``starts`` (grid indices) to the nearest listed maximum.

    A path that runs exactly along a symmetry element ends at a saddle (gradient
    zero, not a maximum); it is pushed off along the Hessian's most positive
    direction there and continued, up to ``retries`` times.

    Returns (index into ``max_idx`` or -1, lattice translation).
    """
    a = _index_map(field)
    metric_inv = a.T @ a
    metric = np.linalg.inv(metric_inv)
    shape = np.asarray(field.shape, dtype=np.float64)
    h_min = float(np.min(np.linalg.norm(field_cell(field), axis=1) / shape))
    n_steps = 20 * int(shape.max())
    ends = K.ascend(coef, np.ascontiguousarray(starts, dtype=np.float64), metric_inv, 0.25 * h_min, 1e-4 * h_min,
                    n_steps)
    idx, trans = _nearest_maximum(ends, max_idx, shape, (1.5 * h_min) ** 2, metric)
    for _ in range(retries):
        lost = np.flatnonzero(idx < 0)
        if len(lost) == 0:
            break
        info = K.spline_info(coef, np.ascontiguousarray(ends[lost]))
        pushed = []
        for row, e in zip(info, ends[lost]):
            w, vec = np.linalg.eigh(a @ _hessian(row) @ a.T)
            pushed.append(e + (0.5 * h_min) * (vec[:, np.argmax(w)] @ a))
        ends[lost] = K.ascend(coef, np.ascontiguousarray(np.array(pushed)), metric_inv, 0.25 * h_min,
                              1e-4 * h_min, n_steps)
        idx[lost], trans[lost] = _nearest_maximum(ends[lost], max_idx, shape, (1.5 * h_min) ** 2, metric)
    lost = np.flatnonzero(idx < 0)
    if len(lost):
        # paths that stall on a plateau (e.g. quantized ELF ≈ 1 near H₂ bonds): nearest maximum within 0.5 Å
        idx[lost], trans[lost] = _nearest_maximum(ends[lost], max_idx, shape, FALLBACK_RADIUS**2, metric)
    return idx, trans


# --------------------------------------------------------------------------- bcp graph
def bond_graph_percolation(cps: CriticalPoints) -> BondGraphResult:
    """Percolation of the attractor graph whose edges are the bond critical points.

    Edges are added by decreasing bcp value (TcESTIME counts every bcp, whatever it
    joins). Returns the value after which some component is first 1-, 2- and
    3-periodic, exactly and with bcp values rounded to 2 decimals.
    """
    good = np.all(cps.bond_attractors >= 0, axis=1)
    vals = cps.values[cps.bond_index][good]
    att = cps.bond_attractors[good]
    tr = cps.bond_translations[good]
    n_nodes = max(len(cps.maxima), 1)
    ce = cps.cluster_edges if cps.cluster_edges is not None else np.zeros((0, 5), np.int64)
    cu, cv, ct = ce[:, 0], ce[:, 1], ce[:, 2:]
    out, out2 = {}, {}
    for key, target in (("exact", out), ("2dec", out2)):
        v = vals if key == "exact" else np.round(vals, 2)
        order = np.lexsort((-vals, -v))
        first = K.edge_sweep(
            n_nodes,
            np.ascontiguousarray(np.concatenate([cu, att[order, 0]])),
            np.ascontiguousarray(np.concatenate([cv, att[order, 1]])),
            np.ascontiguousarray(np.concatenate([ct, tr[order]])),
        )
        for k in (1, 2, 3):
            e = int(first[k - 1]) - len(cu)
            target[k] = None if e < 0 else float(v[order][e])
    return BondGraphResult(values=out, values_2dec=out2, n_edges=int(good.sum()), n_cluster_edges=len(cu))


def _attractor_clusters(field, coef, max_frac, max_val) -> np.ndarray:
    """Cluster edges between maxima (see :attr:`CriticalPoints.cluster_edges`)."""
    from ..grid import minimum_image

    out = np.zeros((0, 5), np.int64)
    if len(max_frac) < 2:
        return out
    cell = field_cell(field)
    shape = np.asarray(field.shape, dtype=np.float64)
    scale = float(np.max(field.values) - np.min(field.values))
    d_frac = max_frac[None, :, :] - max_frac[:, None, :]
    vec = minimum_image(d_frac @ cell, cell)
    t = np.rint(cart_to_frac(vec, cell) - d_frac).astype(np.int64)  # copy of j nearest to i
    dist = np.linalg.norm(vec, axis=-1)
    iu, ju = np.nonzero(np.triu(dist <= CLUSTER_RADIUS, 1))
    if len(iu) == 0:
        return out
    s = np.linspace(0.0, 1.0, 24)
    p0 = max_frac[iu] * shape
    p1 = (max_frac[ju] + t[iu, ju]) * shape
    pts = p0[:, None, :] + s[None, :, None] * (p1 - p0)[:, None, :]
    vals, _ = K.spline_values(coef, np.ascontiguousarray(pts.reshape(-1, 3)))
    low = np.minimum(max_val[iu], max_val[ju])
    keep = vals.reshape(len(iu), len(s)).min(axis=1) >= low - CLUSTER_DROP * scale
    return np.column_stack([iu[keep], ju[keep], t[iu, ju][keep]]).astype(np.int64)


def networking_value_bcp(field: xr.DataArray, settings: TopologySettings | None = None) -> float | None:
    """φ the bcp way: critical points, attractor graph, highest 3-periodic bcp value."""
    return bond_graph_percolation(critical_points(field, settings)).values[3]


def atom_basins(field: xr.DataArray, cps: CriticalPoints, *, atoms=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-atom basin assignment: the attractor reached by steepest ascent from each nucleus.

    Parameters
    ----------
    field : xarray.DataArray
        The field the critical points were computed from (carrying its atoms).
    cps : CriticalPoints
    atoms : sequence of int, optional
        Atom indices (default: all).

    Returns
    -------
    attractor : (n,) int64
        Index into ``cps.maxima`` (-1: lost).
    translation : (n, 3) int64
        Lattice translation of the attractor copy reached from the atom as stored.
    """
    pos = np.asarray(field.attrs.get("positions", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    if atoms is not None:
        pos = pos[np.asarray(atoms, dtype=int)]
    if len(pos) == 0 or len(cps.maxima) == 0:
        return np.full(len(pos), -1, np.int64), np.zeros((len(pos), 3), np.int64)
    coef = _coefficients(np.asarray(field.values, dtype=np.float64))
    shape = np.asarray(field.shape, dtype=np.float64)
    starts = cart_to_frac(pos, field_cell(field)) * shape
    return _ascend_to_maxima(field, coef, starts, cps.positions_frac[cps.maxima] * shape)
