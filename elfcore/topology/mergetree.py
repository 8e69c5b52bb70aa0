"""Superlevel-set merge tree of a periodic field: percolation, networking value, molecularity.

Method (``docs/science.md`` §7; Belli, Contreras-García, Errea, Nat. Commun. 12, 5381
(2021) for the networking value): sort the voxels by value, largest first, and add
them one by one to a union-find structure whose components are the connected
pieces of the superlevel set ``{f ≥ t}`` on the periodic grid. Each voxel stores
the lattice translation (integer 3-vector) of its copy relative to its
component's root, so that joining a component with itself through a different
translation reveals a *wrap vector*. The rank of a component's wrap vectors is
the number of independent lattice directions in which it is infinite; the
values at which some component first reaches rank 1, 2 and 3 are the 1D, 2D and
3D percolation thresholds, and the 3D one is the networking value φ.

Connectivity
------------
Voxels are joined to their **6 face neighbours** (periodic). 6-connectivity
never joins two regions through a single shared edge or corner, so on a grid it
errs towards *later* (lower) connection; the sub-voxel refinement then moves the
threshold to the saddle of the interpolated field, which removes that bias
(see :func:`refine_saddle`).

Upsampling
----------
On coarse grids (DFT files at ≈ 0.1 Å) two bond points whose values differ by
less than the voxel error can be met in the wrong order. By default grids coarser
than 0.05 Å are therefore swept after sampling their periodic cubic B-spline
interpolant more finely (:func:`upsampled`, at most 4 M voxels); reported voxel
indices refer to the swept grid.

Speed
-----
The full sweep (:func:`merge_tree`) touches every voxel above the lowest event it
reports. :func:`percolation_thresholds` finds a threshold just above the wanted
event by bisection on cheap ``scipy.ndimage.label`` evaluations (periodic faces
matched afterwards), adds the voxels above it in memory order, and sweeps only
the thin band below it in sorted order, so the answer is still the exact
sorted-value threshold.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field as dc_field
from typing import ClassVar, Sequence

import numpy as np
import xarray as xr

from ..errors import GridError, SettingsError
from ..settings import Settings
from ..grid import cart_to_frac, field_cell, make_field, validate_field
from . import _kernels as K

__all__ = [
    "TopologySettings",
    "PercolationResult",
    "MergeTreeResult",
    "percolation_thresholds",
    "networking_value",
    "merge_tree",
    "refine_saddle",
    "exclusion_mask",
    "atom_anchors",
    "upsampled",
    "upsample_factor",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- settings
#: default cancellation threshold of the critical-point census (field units; ELF ∈ [0, 1]): keeps one attractor
#: per H₂ in the dense fluid
DEFAULT_PERSISTENCE = 0.01
#: largest grid the census runs on by default (GUDHI needs about 200 bytes per cell of the (2N)³-cell complex)
DEFAULT_CENSUS_MAX_POINTS = 2_500_000


@dataclass(frozen=True)
class TopologySettings(Settings):
    """Options of the topology analysis.

    Parameters
    ----------
    exclude_radius : float
        Radius in Å of the spheres around non-hydrogen nuclei whose voxels are left
        out of the superlevel sets (and whose attractors and bond critical points
        are left out of the bcp graph). 0 keeps everything.
    hydrogen_number : int
        Atomic number of the atoms whose basins define the molecularity (1).
    refine : bool
        Refine thresholds to the saddle of the tricubic B-spline interpolant.
    band_voxels : int
        Target number of voxels in the sorted band of the fast path (≥ 1).
    upsample : int
        Sweep a grid refined this many times along each axis by the periodic cubic
        B-spline interpolant (1 = the grid as given). 0 = automatic: the smallest
        factor that brings the grid spacing to ≤ ``target_spacing`` while keeping
        the refined grid at ≤ ``max_voxels``. On coarse DFT grids (0.1 Å) two bond
        points whose values differ by less than the grid error can otherwise be
        met in the wrong order.
    target_spacing : float
        Grid spacing in Å that automatic upsampling aims at.
    max_voxels : int
        Largest refined grid automatic upsampling builds.
    min_persistence : float
        Critical-point census (:func:`~elfcore.topology.persistence.critical_census`):
        pairs of critical points whose values differ by at most this much (field
        units) cancel. 0 keeps every critical cell of the grid.
    census_max_points : int
        :func:`~elfcore.topology.topology_summary` skips the census on larger grids
        (GUDHI needs about 200 bytes per cell of the (2N)³-cell complex: 3 GB at 128³).
    """

    settings_name: ClassVar[str] = "topology"

    exclude_radius: float = 0.0
    hydrogen_number: int = 1
    refine: bool = True
    band_voxels: int = 1 << 16
    upsample: int = 0
    target_spacing: float = 0.05
    max_voxels: int = 4_000_000
    min_persistence: float = DEFAULT_PERSISTENCE
    census_max_points: int = DEFAULT_CENSUS_MAX_POINTS

    def __post_init__(self):
        if not np.isfinite(self.exclude_radius) or self.exclude_radius < 0:
            raise SettingsError(f"exclude_radius={self.exclude_radius}; must be a finite number ≥ 0 (Å)")
        if int(self.hydrogen_number) < 1:
            raise SettingsError(f"hydrogen_number={self.hydrogen_number}; must be an atomic number ≥ 1")
        if int(self.band_voxels) < 1:
            raise SettingsError(f"band_voxels={self.band_voxels}; must be ≥ 1")
        if int(self.upsample) < 0 or int(self.upsample) > 8:
            raise SettingsError(f"upsample={self.upsample}; must be 0 (automatic) or 1..8")
        if not self.target_spacing > 0:
            raise SettingsError(f"target_spacing={self.target_spacing}; must be > 0 (Å)")
        if int(self.max_voxels) < 1:
            raise SettingsError(f"max_voxels={self.max_voxels}; must be ≥ 1")
        if not np.isfinite(self.min_persistence) or self.min_persistence < 0:
            raise SettingsError(f"min_persistence={self.min_persistence}; must be a finite number ≥ 0")
        if int(self.census_max_points) < 0:
            raise SettingsError(f"census_max_points={self.census_max_points}; must be ≥ 0")


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class PercolationResult:
    """Percolation thresholds of one field.

    Attributes
    ----------
    values : dict int → float or None
        Refined threshold at which some component of ``{f ≥ t}`` first becomes
        periodic in 1, 2 and 3 dimensions (None: never).
    grid_values : dict int → float or None
        The same at grid resolution: the value of the voxel whose addition made it.
    voxels : dict int → int
        Flat index (C order) of that voxel, -1 if none, on the swept grid (the
        given grid refined ``upsample`` times).
    positions_frac : dict int → (3,) array or None
        Fractional position of the refined saddle (None when not refined).
    refined : dict int → bool
        Whether the refinement converged to a bond critical point near the voxel.
    """

    values: dict
    grid_values: dict
    voxels: dict
    positions_frac: dict
    refined: dict
    upsample: int = 1

    @property
    def phi(self) -> float | None:
        """The networking value φ (3D threshold)."""
        return self.values[3]


@dataclass(frozen=True)
class MergeTreeResult:
    """Merge-tree analysis of one field (see :func:`merge_tree`).

    Attributes
    ----------
    percolation : PercolationResult
    phi_star : float or None
        TcESTIME's molecularity threshold φ*: highest value at which one component
        holds two hydrogen nuclei, or a hydrogen and its own periodic image.
    molecularity : float or None
        Molecularity index: highest value at which hydrogens of *different*
        molecules (molecules = pairs joined at the highest level) are connected;
        a molecule joined to its own periodic image counts.
    molecules : list of (i, j, (3,) int, float)
        Hydrogen pairs ``i``, ``j`` (atom indices of the field) with the lattice
        translation of ``j``'s copy and their join level.
    unpaired : list of int
        Hydrogens left without a partner.
    hydrogens : list of int
        Atom indices that took part (hydrogens outside the exclusion spheres).
    n_voxels_swept : int
    """

    percolation: PercolationResult
    phi_star: float | None
    molecularity: float | None
    molecules: list
    unpaired: list
    hydrogens: list
    n_voxels_swept: int
    phi_star_grid: float | None = None
    molecularity_grid: float | None = None
    extra: dict = dc_field(default_factory=dict)


# --------------------------------------------------------------------------- helpers
def _values(field: xr.DataArray) -> np.ndarray:
    validate_field(field)
    arr = np.asarray(field.values)
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    return np.ascontiguousarray(arr)


def upsample_factor(field: xr.DataArray, settings: TopologySettings) -> int:
    """The refinement factor :func:`upsampled` applies under ``settings``."""
    if settings.upsample >= 1:
        return int(settings.upsample)
    spacing = float(np.max(np.linalg.norm(field_cell(field), axis=1) / np.asarray(field.shape)))
    u = max(1, int(np.ceil(spacing / settings.target_spacing - 1e-9)))
    n = int(np.prod(field.shape))
    while u > 1 and n * u**3 > settings.max_voxels:
        u -= 1
    return u


def upsampled(field: xr.DataArray, factor: int) -> xr.DataArray:
    """The field sampled ``factor`` times more finely along each axis.

    Values come from the periodic cubic B-spline interpolant of the grid (the one
    used for refinement and critical points), so the original grid points keep
    their values. Separable: one 1D prefilter and 4-point evaluation per axis.
    """
    if factor == 1:
        return field
    from scipy import ndimage

    vals = np.asarray(field.values, dtype=np.float64)
    t = np.arange(factor) / factor
    w = np.ascontiguousarray(
        np.stack([(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3]) / 6.0
    )
    for ax in range(3):
        coef = ndimage.spline_filter1d(vals, order=3, axis=ax, mode="grid-wrap")
        shape = list(vals.shape)
        pre, n, post = int(np.prod(shape[:ax])), shape[ax], int(np.prod(shape[ax + 1 :]))
        out = K.upsample_axis(np.ascontiguousarray(coef).reshape(pre, n, post), w)
        shape[ax] = n * factor
        vals = out.reshape(shape)
    attrs = {k: v for k, v in field.attrs.items() if k not in ("cell", "positions", "numbers")}
    attrs["upsample"] = int(factor)
    return make_field(
        vals.astype(field.dtype if field.dtype in (np.float32, np.float64) else np.float64),
        field_cell(field),
        field.attrs.get("positions"),
        field.attrs.get("numbers"),
        name=str(field.name or "elf"),
        attrs=attrs,
    )


def exclusion_mask(field: xr.DataArray, radius: float, *, hydrogen_number: int = 1) -> np.ndarray:
    """Voxels within ``radius`` Å (periodic) of a nucleus that is not hydrogen.

    Parameters
    ----------
    field : xarray.DataArray
        Field carrying its atoms (attrs ``positions``, ``numbers``).
    radius : float
        Sphere radius in Å.

    Returns
    -------
    numpy.ndarray of bool, shape (Na, Nb, Nc)
    """
    shape = np.asarray(field.shape)
    mask = np.zeros(tuple(shape), dtype=bool)
    if radius <= 0:
        return mask
    cell = field_cell(field)
    pos = np.asarray(field.attrs.get("positions", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    num = np.asarray(field.attrs.get("numbers", np.zeros(0, int))).reshape(-1)
    heavy = pos[num != hydrogen_number]
    if len(heavy) == 0:
        return mask
    from ..grid import minimum_image

    recip = np.linalg.inv(cell).T  # rows b_i with a_i·b_j = δ_ij
    half = np.ceil(radius * np.linalg.norm(recip, axis=1) * shape).astype(int) + 1
    for p in heavy:
        g0 = np.rint(cart_to_frac(p, cell) * shape).astype(int)
        rng = [
            np.arange(shape[i]) if 2 * half[i] + 1 >= shape[i] else np.arange(g0[i] - half[i], g0[i] + half[i] + 1)
            for i in range(3)
        ]
        ga, gb, gc = np.meshgrid(*rng, indexing="ij")
        pts = np.stack([ga / shape[0], gb / shape[1], gc / shape[2]], axis=-1) @ cell
        d2 = np.sum(minimum_image(pts.reshape(-1, 3) - p, cell) ** 2, axis=-1).reshape(ga.shape)
        sel = d2 <= radius * radius
        mask[ga[sel] % shape[0], gb[sel] % shape[1], gc[sel] % shape[2]] = True
    return mask


def atom_anchors(field: xr.DataArray, *, hydrogen_number: int = 1):
    """Nearest grid point of every hydrogen nucleus.

    Returns
    -------
    atoms : (m,) int
        Indices of the hydrogens in the field's atom list.
    voxel : (m,) int64
        Flat index of the grid point nearest to each.
    cellshift : (m, 3) int64
        Lattice translation ``k`` such that the nucleus (as stored) sits at the copy
        of ``voxel`` in cell ``k``.
    """
    shape = np.asarray(field.shape)
    pos = np.asarray(field.attrs.get("positions", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    num = np.asarray(field.attrs.get("numbers", np.zeros(0, int))).reshape(-1)
    atoms = np.flatnonzero(num == hydrogen_number)
    if len(atoms) == 0:
        return atoms, np.zeros(0, np.int64), np.zeros((0, 3), np.int64)
    g = np.rint(cart_to_frac(pos[atoms], field_cell(field)) * shape).astype(np.int64)
    shift = np.floor_divide(g, shape)
    idx = g - shift * shape
    voxel = np.ravel_multi_index(tuple(idx.T), tuple(shape))
    return atoms, voxel.astype(np.int64), shift


# --------------------------------------------------------------------------- rank at a threshold
def _max_rank(values: np.ndarray, t: float, excluded: np.ndarray | None) -> int:
    """Largest wrap rank of a component of ``{values ≥ t}`` (6-connected, periodic)."""
    from scipy import ndimage

    mask = values >= t
    if excluded is not None:
        mask &= ~excluded
    labels, nlab = ndimage.label(mask)
    if nlab == 0:
        return 0
    us, vs, ds = [], [], []
    for axis in range(3):
        first = np.take(labels, 0, axis=axis).ravel()
        last = np.take(labels, -1, axis=axis).ravel()
        ok = (first > 0) & (last > 0)
        if not np.any(ok):
            continue
        pair = np.unique(last[ok].astype(np.int64) * (nlab + 1) + first[ok])
        us.append(pair // (nlab + 1))
        vs.append(pair % (nlab + 1))
        d = np.zeros((len(pair), 3), np.int64)
        d[:, axis] = 1
        ds.append(d)
    if not us:
        return 0
    first_edge = K.edge_sweep(
        nlab + 1,
        np.concatenate(us).astype(np.int64),
        np.concatenate(vs).astype(np.int64),
        np.ascontiguousarray(np.concatenate(ds)),
    )
    return int(np.sum(first_edge >= 0))


def _bracket(values: np.ndarray, k: int, excluded, band: int, cache: dict):
    """Values ``t_hi > t_lo`` with rank(t_hi) < k ≤ rank(t_lo) and a thin band between."""
    vmin = float(values.min())
    vmax = float(values.max())

    def rank(t):
        if t not in cache:
            cache[t] = _max_rank(values, t, excluded)
        return cache[t]

    if rank(vmin) < k:
        return None
    # tighten with already known evaluations
    hi, lo = np.inf, vmin
    for t, r in cache.items():
        if r < k and t < hi:
            hi = t
        if r >= k and t > lo:
            lo = t
    if not np.isfinite(hi):
        hi = np.nextafter(vmax, np.inf)
    for _ in range(60):
        n_band = int(np.count_nonzero((values >= lo) & (values < hi)))
        if n_band <= band:
            break
        mid = 0.5 * (lo + hi)
        if not (lo < mid < hi):
            break
        if rank(mid) >= k:
            lo = mid
        else:
            hi = mid
    return hi, lo


def _seeded_sweep(values, shape, excluded, t_hi, t_lo):
    flat = values.ravel()
    ex = excluded.ravel() if excluded is not None else np.zeros(flat.size, dtype=bool)
    seed = np.flatnonzero(flat >= t_hi)
    band = np.flatnonzero((flat >= t_lo) & (flat < t_hi))
    band = band[K.argsort_descending(np.ascontiguousarray(flat[band]))]
    order = np.concatenate([seed, band]).astype(np.int64)
    out = K.sweep(
        order, np.asarray(shape, np.int64), ex,
        np.full(flat.size, -1, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int64), 0, True, len(seed),
    )
    return out


def percolation_thresholds(
    field: xr.DataArray,
    settings: TopologySettings | None = None,
    *,
    dims: Sequence[int] = (1, 2, 3),
) -> PercolationResult:
    """Values at which ``{f ≥ t}`` first percolates in 1, 2 and 3 dimensions (fast path).

    Parameters
    ----------
    field : xarray.DataArray
        Periodic field (dims a, b, c), any cell.
    settings : TopologySettings, optional
    dims : sequence of {1, 2, 3}
        Which thresholds to compute (the others are None).

    Returns
    -------
    PercolationResult
        Exact at grid resolution (the value of the voxel whose addition, in sorted
        order, first makes some component k-periodic), then refined to the saddle of
        the tricubic interpolant when ``settings.refine``.

    Examples
    --------
    Chains along a, layers in ab, then a 3D network (closed form B+C−A, A+C−B, A+B−C):

    >>> import numpy as np
    >>> from elfcore.grid import make_field
    >>> s = np.arange(16) / 16
    >>> a, b, c = np.meshgrid(s, s, s, indexing="ij")
    >>> vals = 0.5 * np.cos(2 * np.pi * a) + np.cos(2 * np.pi * b) + 2 * np.cos(2 * np.pi * c)
    >>> r = percolation_thresholds(make_field(vals, np.eye(3) * 4.0))
    >>> [round(r.values[k], 6) for k in (1, 2, 3)]
    [2.5, 1.5, -0.5]
    """
    settings = settings or TopologySettings()
    for k in dims:
        if k not in (1, 2, 3):
            raise SettingsError(f"dims contains {k}; allowed 1, 2, 3")
    field = upsampled(validate_field(field), upsample_factor(field, settings))
    values = _values(field)
    excluded = None
    if settings.exclude_radius > 0:
        excluded = exclusion_mask(field, settings.exclude_radius, hydrogen_number=settings.hydrogen_number)
    cache: dict = {}
    voxels = {1: -1, 2: -1, 3: -1}
    nbrs = {1: -1, 2: -1, 3: -1}
    for k in sorted(set(dims), reverse=True):
        if voxels[k] >= 0:
            continue
        br = _bracket(values, k, excluded, int(settings.band_voxels), cache)
        if br is None:
            continue
        t_hi, t_lo = br
        out = _seeded_sweep(values, values.shape, excluded, t_hi, t_lo)
        perc_voxel, perc_nbr, seed_rank = out[0], out[1], out[8]
        if seed_rank >= k:  # pragma: no cover - the bracket guarantees rank(t_hi) < k
            raise GridError(f"internal: seed above t={t_hi} already has rank {seed_rank} ≥ {k}")
        for q in range(seed_rank + 1, 4):
            if perc_voxel[q - 1] >= 0 and voxels[q] < 0:
                voxels[q] = int(perc_voxel[q - 1])
                nbrs[q] = int(perc_nbr[q - 1])
    return _finish_percolation(values, voxels, nbrs, dims, settings, int(field.attrs.get("upsample", 1)))


def _finish_percolation(values, voxels, nbrs, dims, settings, factor=1) -> PercolationResult:
    flat = values.ravel()
    vals, grid_vals, pos, refined, vox = {}, {}, {}, {}, {}
    for k in (1, 2, 3):
        v = voxels[k] if k in dims else -1
        vox[k] = int(v)
        if v < 0:
            vals[k] = grid_vals[k] = pos[k] = None
            refined[k] = False
            continue
        grid_vals[k] = float(flat[v])
        vals[k], pos[k], refined[k] = grid_vals[k], None, False
        if settings.refine:
            r = refine_saddle(values, v, nbrs[k])
            if r is not None:
                vals[k], pos[k], refined[k] = r[0], r[1], True
    return PercolationResult(
        values=vals, grid_values=grid_vals, voxels=vox, positions_frac=pos, refined=refined, upsample=factor
    )


def networking_value(field: xr.DataArray, settings: TopologySettings | None = None) -> float | None:
    """Networking value φ: highest value at which ``{f ≥ φ}`` percolates in 3D.

    Fast path of :func:`percolation_thresholds` (only the 3D threshold). Returns
    None when the superlevel sets never become 3-periodic (e.g. everything is
    excluded). ``docs/science.md`` §7.
    """
    return percolation_thresholds(field, settings, dims=(3,)).values[3]


# --------------------------------------------------------------------------- refinement
_SPLINE_RADIUS = 10


def _local_coefficients(values: np.ndarray, center: Sequence[int]):
    """Cubic B-spline coefficients around ``center``; returns (coef, origin) in grid indices."""
    from scipy import ndimage

    shape = np.asarray(values.shape)
    r = _SPLINE_RADIUS
    if np.any(shape <= 2 * r + 4):
        coef = ndimage.spline_filter(np.asarray(values, np.float64), order=3, mode="grid-wrap")
        return coef, np.zeros(3, dtype=np.int64)
    origin = np.asarray(center, dtype=np.int64) - r
    idx = [np.arange(origin[i], origin[i] + 2 * r + 1) % shape[i] for i in range(3)]
    patch = np.asarray(values[np.ix_(*idx)], dtype=np.float64)
    coef = ndimage.spline_filter(patch, order=3, mode="mirror")
    return coef, origin


def _signature(info_row) -> int:
    """Number of negative Hessian eigenvalues (3 = maximum, 2 = bond, 1 = ring, 0 = cage)."""
    h = np.array(
        [
            [info_row[4], info_row[7], info_row[8]],
            [info_row[7], info_row[5], info_row[9]],
            [info_row[8], info_row[9], info_row[6]],
        ]
    )
    return int(np.sum(np.linalg.eigvalsh(h) < 0))


def refine_saddle(values: np.ndarray, voxel: int, neighbour: int = -1):
    """Sub-voxel value of the bond critical point next to a critical voxel.

    A component of a superlevel set joins another one (or itself, through a new
    lattice translation) at a saddle with two negative Hessian eigenvalues — a bond
    critical point. This runs Newton's method on the gradient of the periodic
    tricubic B-spline interpolant from the voxel and from points half a step
    around it, and keeps, among the bond critical points within 1.5 grid steps,
    the one whose value is closest to the voxel's (then the nearest).

    Parameters
    ----------
    values : numpy.ndarray, shape (Na, Nb, Nc)
    voxel : int
        Flat (C order) index of the voxel whose addition completed the event.
    neighbour : int
        Flat index of the voxel it was joined with (adds a start at the midpoint).

    Returns
    -------
    (value, position_frac) or None
        None when no bond critical point was found close by (then the grid value
        stands).
    """
    shape = np.asarray(values.shape)
    c = np.array(np.unravel_index(int(voxel), tuple(shape)), dtype=np.int64)
    coef, origin = _local_coefficients(values, c)
    base = (c - origin).astype(np.float64)
    starts = [base]
    for ax in range(3):
        for s in (-0.5, 0.5):
            p = base.copy()
            p[ax] += s
            starts.append(p)
    if neighbour >= 0:
        u = np.array(np.unravel_index(int(neighbour), tuple(shape)), dtype=np.int64)
        d = u - c
        d = d - shape * np.rint(d / shape).astype(np.int64)
        starts.append(base + 0.5 * d)
    starts = np.ascontiguousarray(np.array(starts))
    pos, info, ok = K.newton_cp(coef, starts, 0.5, 1.5, 1e-7, 50)
    best = None
    flat = values.ravel()
    # plausible range: the values in the 3x3x3 neighbourhood
    nb = [np.arange(c[i] - 1, c[i] + 2) % shape[i] for i in range(3)]
    local = np.asarray(values[np.ix_(*nb)], dtype=np.float64)
    lo, hi = local.min(), local.max()
    tol = 0.25 * (hi - lo) + 1e-12
    for p in range(len(starts)):
        if not ok[p] or _signature(info[p]) != 2:
            continue
        if np.max(np.abs(pos[p] - base)) > 1.5:
            continue
        val = float(info[p, 0])
        if not (lo - tol <= val <= hi + tol):
            continue
        # several bond points can lie within reach on coarse grids: take the one whose
        # value is closest to the voxel's (the grid error is O(h²) curvature), then the nearest
        key = (round(abs(val - float(flat[voxel])), 12), float(np.sum((pos[p] - base) ** 2)))
        if best is None or key < best[0]:
            best = (key, val, pos[p])
    if best is None:
        log.debug("no bond critical point within 1.5 steps of voxel %d (value %.6g)", voxel, flat[voxel])
        return None
    frac = np.mod((best[2] + origin) / shape, 1.0)
    return best[1], frac


# --------------------------------------------------------------------------- full merge tree
def merge_tree(field: xr.DataArray, settings: TopologySettings | None = None) -> MergeTreeResult:
    """Full superlevel-set sweep with hydrogen bookkeeping.

    Gives the percolation thresholds (as :func:`percolation_thresholds`) plus the
    molecularity: molecules are hydrogen pairs joined at the highest level
    (greedy, highest join first, each hydrogen in at most one pair; a hydrogen is
    never paired with its own image); ``molecularity`` is the highest level at which
    hydrogens of different molecules are connected, ``phi_star`` the highest level
    at which a component holds two hydrogen nuclei (TcESTIME's φ*). Nuclei are
    anchored at their nearest grid point.

    Parameters
    ----------
    field : xarray.DataArray
        Periodic field carrying its atoms.
    settings : TopologySettings, optional

    Returns
    -------
    MergeTreeResult
    """
    settings = settings or TopologySettings()
    factor = upsample_factor(validate_field(field), settings)
    field = upsampled(field, factor)
    values = _values(field)
    shape = values.shape
    flat = values.ravel()
    n = flat.size
    excluded = np.zeros(n, dtype=bool)
    if settings.exclude_radius > 0:
        excluded = exclusion_mask(field, settings.exclude_radius, hydrogen_number=settings.hydrogen_number).ravel()
    atoms, voxel, shift = atom_anchors(field, hydrogen_number=settings.hydrogen_number)
    keep = ~excluded[voxel] if len(voxel) else np.zeros(0, bool)
    atoms, voxel, shift = atoms[keep], voxel[keep], shift[keep]
    m = len(atoms)
    atom_at = np.full(n, -1, dtype=np.int32)
    atom_next = np.full(m, -1, dtype=np.int32)
    for i in range(m - 1, -1, -1):
        atom_next[i] = atom_at[voxel[i]]
        atom_at[voxel[i]] = i
    n_atom_voxels = int(len(np.unique(voxel))) if m else 0
    order = K.argsort_descending(flat)
    out = K.sweep(
        order, np.asarray(shape, np.int64), excluded, atom_at, atom_next,
        voxel.astype(np.int64), n_atom_voxels, True, 0,
    )
    perc_voxel, perc_nbr, ev_kind, ev_voxel, ev_a, ev_b, ev_vec, n_done, _ = out
    voxels = {k: int(perc_voxel[k - 1]) for k in (1, 2, 3)}
    nbrs = {k: int(perc_nbr[k - 1]) for k in (1, 2, 3)}
    perc = _finish_percolation(values, voxels, nbrs, (1, 2, 3), settings, factor)
    rep = _replay_atoms(m, shift, ev_kind, ev_voxel, ev_a, ev_b, ev_vec, flat)
    phi_star_grid, mol_grid = rep["phi_star"], rep["molecularity"]
    phi_star = mol = None
    nuclei_idx = cart_to_frac(
        np.asarray(field.attrs["positions"], dtype=np.float64).reshape(-1, 3)[atoms], field_cell(field)
    ) * np.asarray(shape) if m else np.zeros((0, 3))
    if phi_star_grid is not None:
        phi_star = _refined_value(values, rep["phi_star_voxel"], settings, voxel, nuclei_idx)
    if mol_grid is not None:
        mol = _refined_value(values, rep["molecularity_voxel"], settings, voxel, nuclei_idx)
    molecules = [(int(atoms[i]), int(atoms[j]), tuple(int(x) for x in t), float(lvl)) for i, j, t, lvl in rep["pairs"]]
    return MergeTreeResult(
        percolation=perc,
        phi_star=phi_star,
        molecularity=mol,
        molecules=molecules,
        unpaired=[int(atoms[i]) for i in rep["unpaired"]],
        hydrogens=[int(a) for a in atoms],
        n_voxels_swept=int(n_done),
        phi_star_grid=phi_star_grid,
        molecularity_grid=mol_grid,
    )


def _refined_value(values, voxel, settings, anchor_voxels, nuclei_idx):
    """Sub-voxel value of an atom event at ``voxel``.

    When the voxel is the anchor of a nucleus, the event is the nucleus entering
    the superlevel set, so its value is the interpolated field at the nucleus;
    otherwise it is a join at a bond critical point (:func:`refine_saddle`).
    """
    flat = values.ravel()
    if not settings.refine:
        return float(flat[voxel])
    hit = np.flatnonzero(anchor_voxels == voxel)
    if len(hit):
        vals = []
        for pt in np.mod(nuclei_idx[hit], np.asarray(values.shape, dtype=np.float64)):
            coef, origin = _local_coefficients(values, np.rint(pt).astype(np.int64))
            vals.append(K.spline_values(coef, np.ascontiguousarray((pt - origin)[None, :]))[0][0])
        return float(np.min(vals))
    r = refine_saddle(values, int(voxel))
    return float(flat[voxel]) if r is None else float(r[0])


def _replay_atoms(m, shift, ev_kind, ev_voxel, ev_a, ev_b, ev_vec, flat) -> dict:
    """Hydrogen-level merge tree from the sweep's atom events (small, pure Python)."""
    parent = list(range(m))
    off = np.zeros((m, 3), dtype=np.int64)  # copy of atom relative to its root, in cells
    basis = {i: [] for i in range(m)}
    unpaired = {i: i for i in range(m)}  # root -> unpaired atom or None
    n_mol = {i: 1 for i in range(m)}  # root -> molecule instances (pairs + unpaired atoms)
    pairs = []
    paired = np.zeros(m, dtype=bool)
    res = {"phi_star": None, "phi_star_voxel": -1, "molecularity": None, "molecularity_voxel": -1, "pairs": pairs}

    def find(x):
        path = []
        while parent[x] != x:
            path.append(x)
            x = parent[x]
        root = x
        acc = np.zeros(3, np.int64)
        for y in reversed(path):
            acc = acc + off[y]
            off[y] = acc.copy()
            parent[y] = root
        return root

    def rank_add(root, w):
        w = np.asarray(w, dtype=np.int64)
        if not np.any(w) or len(basis[root]) >= 3:
            return False
        mat = np.array(basis[root] + [w], dtype=np.float64)
        if np.linalg.matrix_rank(mat) > len(basis[root]):
            basis[root].append(w)
            return True
        return False

    def mark(key, v):
        if res[key] is None:
            res[key] = float(flat[v])
            res[key + "_voxel"] = int(v)

    for kind, v, a, b, vec in zip(ev_kind, ev_voxel, ev_a, ev_b, ev_vec):
        a = int(a)
        b = int(b)
        if kind == 1:
            r = find(a)
            if rank_add(r, vec):
                mark("phi_star", v)
                mark("molecularity", v)
            continue
        ra, rb = find(a), find(b)
        if ra == rb:  # pragma: no cover - the sweep only reports merges of distinct components
            continue
        ua, ub = unpaired.pop(ra), unpaired.pop(rb)
        pa = off[find(ua)] * 0 + off[ua] if ua is not None else None
        pb = off[find(ub)] * 0 + off[ub] if ub is not None else None
        # off[root] is zero, so off[x] after find(x) is x's copy relative to its root.
        # The copy of b's anchor voxel at cell vec joins a's anchor voxel at cell 0; atoms
        # sit at their anchor copy shifted by -shift, so b's atom copy is at
        # t_ab = vec - shift[b] + shift[a] relative to a.
        t_ab = np.asarray(vec, np.int64) - shift[b] + shift[a]
        off[rb] = off[a] + t_ab - off[b]
        parent[rb] = ra
        for w in basis.pop(rb):
            rank_add(ra, w)
        mark("phi_star", v)
        nm = n_mol.pop(ra) + n_mol.pop(rb)
        if ua is not None and ub is not None:
            tb = pb + off[rb]
            pairs.append((ua, ub, tuple(int(x) for x in (tb - pa)), float(flat[v])))
            paired[ua] = paired[ub] = True
            nm -= 1
            unpaired[ra] = None
        else:
            unpaired[ra] = ua if ua is not None else ub
        n_mol[ra] = nm
        if nm >= 2 or basis[ra]:
            mark("molecularity", v)
    res["unpaired"] = [i for i in range(m) if not paired[i]]
    return res
