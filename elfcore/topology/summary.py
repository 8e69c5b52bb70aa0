"""One-call topology summary of a field: what ``elfcore netval`` reports."""
from __future__ import annotations

import logging
import time

import numpy as np
import xarray as xr

from .critical import atom_basins, bond_graph_percolation, critical_points
from .persistence import critical_census
from .mergetree import TopologySettings, merge_tree, percolation_thresholds

__all__ = ["topology_summary"]

log = logging.getLogger(__name__)


def _r(x, nd=None):
    if x is None:
        return None
    return float(x) if nd is None else round(float(x), nd)


def topology_summary(
    field: xr.DataArray,
    settings: TopologySettings | None = None,
    *,
    bcp: bool = True,
    bonds: bool = False,
    molecularity: bool = True,
) -> dict:
    """Networking value, percolation, molecularity and (optionally) the bcp route, as a dict.

    Parameters
    ----------
    field : xarray.DataArray
        Periodic ELF field carrying its atoms.
    settings : TopologySettings, optional
    bcp : bool
        Also count the critical points (persistence census, Morse relation exact)
        and compute φ from the Newton-refined bond critical points (slower:
        seconds on 100³ grids).
    bonds : bool
        Include the list of bond critical points (value, position, attractors,
        translation) and the per-hydrogen basin assignment.
    molecularity : bool
        Run the full merge-tree sweep with hydrogen bookkeeping; False uses the
        fast percolation path only (molecularity, φ* and molecules are then None).

    Returns
    -------
    dict (JSON-ready)
        ``networking_value`` (refined merge-tree φ), ``networking_value_grid``,
        ``phi_2dec``, ``percolation`` {"1","2","3" → value}, ``percolation_grid``,
        ``molecularity`` (intermolecular index), ``phi_star`` (TcESTIME's φ*),
        ``molecules``, ``seconds`` ..., and with ``bcp``: ``phi_bcp``,
        ``phi_bcp_2dec``, ``critical_points`` (counts after cancelling pairs with
        persistence ≤ ``settings.min_persistence``,
        :func:`~elfcore.topology.persistence.critical_census`), ``morse_sum`` (0),
        ``critical_points_all`` (every critical cell of the grid, persistence > 0),
        ``critical_points_spline`` and ``morse_sum_spline`` (the Newton-refined points
        on the spline that feed the bcp route; their sum can miss 0 on plateaus),
        ``quantized`` (few distinct values, e.g. 16-bit storage).
    """
    settings = settings or TopologySettings()
    t0 = time.perf_counter()
    out, mt = _percolation_summary(field, settings, molecularity)
    t1 = time.perf_counter()
    out["seconds_merge_tree"] = round(t1 - t0, 4)
    if bcp:
        _add_bcp_summary(out, field, settings, mt, bonds)
        out["seconds_bcp"] = round(time.perf_counter() - t1, 4)
    out["seconds"] = round(time.perf_counter() - t0, 4)
    return out


def _percolation_summary(field: xr.DataArray, settings: TopologySettings, molecularity: bool) -> tuple[dict, object]:
    """The merge-tree part of :func:`topology_summary` (φ, percolation, molecularity); also the merge tree."""
    if molecularity:
        mt = merge_tree(field, settings)
        perc = mt.percolation
    else:
        mt = None
        perc = percolation_thresholds(field, settings)
    out = {
        "grid": [int(n) for n in field.shape],
        "networking_value": _r(perc.values[3]),
        "networking_value_grid": _r(perc.grid_values[3]),
        "phi_2dec": _r(perc.values[3], 2),
        "percolation": {str(k): _r(perc.values[k]) for k in (1, 2, 3)},
        "percolation_grid": {str(k): _r(perc.grid_values[k]) for k in (1, 2, 3)},
        "refined": {str(k): bool(perc.refined[k]) for k in (1, 2, 3)},
        "upsample": int(perc.upsample),
        "molecularity": _r(mt.molecularity) if mt else None,
        "phi_star": _r(mt.phi_star) if mt else None,
        "n_hydrogens": len(mt.hydrogens) if mt else None,
        "molecules": (
            [{"atoms": [i, j], "translation": list(t), "level": lvl} for i, j, t, lvl in mt.molecules] if mt else None
        ),
        "unpaired": mt.unpaired if mt else None,
        "settings": settings.to_dict(),
    }
    return out, mt


def _add_bcp_summary(out: dict, field: xr.DataArray, settings: TopologySettings, mt, bonds: bool) -> None:
    """The bond-critical-point part of :func:`topology_summary`, added to ``out``."""
    vals = np.asarray(field.values)
    n_unique = int(np.unique(vals).size)
    # 16-bit (or coarser) storage: plateaus become rugged and critical-point counts spurious
    out["quantized"] = bool(n_unique <= 65536 and n_unique < 0.2 * vals.size)
    if out["quantized"]:
        log.warning(
            "field has only %d distinct values (quantized storage or a symmetric cell): the Newton-refined "
            "spline points (critical_points_spline) may form clusters on plateaus; the persistence census "
            "and phi are not affected",
            n_unique,
        )
    cps = critical_points(field, settings)
    bg = bond_graph_percolation(cps)
    out.update(
        phi_bcp=_r(bg.values[3]),
        phi_bcp_2dec=_r(bg.values_2dec[3], 2),
        percolation_bcp={str(k): _r(bg.values[k]) for k in (1, 2, 3)},
        min_persistence=float(settings.min_persistence),
        critical_points_spline=cps.counts,
        morse_sum_spline=int(cps.morse_sum),
    )
    _add_census(out, field, settings, bonds)
    if bonds:
        out["bonds"] = cps.bonds()
        if mt is not None and mt.hydrogens:
            att, tr = atom_basins(field, cps, atoms=mt.hydrogens)
            out["basins"] = [
                {"atom": int(a), "attractor": int(m), "translation": [int(x) for x in t]}
                for a, m, t in zip(mt.hydrogens, att, tr)
            ]


def _add_census(out: dict, field: xr.DataArray, settings: TopologySettings, bonds: bool) -> None:
    """The persistence census of critical points (skipped above ``settings.census_max_points``), added to ``out``."""
    n_points = int(np.prod(field.shape))
    if n_points <= settings.census_max_points:
        census = critical_census(field, settings.min_persistence, refine=bonds)
        out.update(
            critical_points=census.counts,
            morse_sum=int(census.morse_sum),
            morse_ok=bool(census.morse_sum == 0),
            critical_points_all={k: v for k, v in census.diagram.counts(0.0).items() if k != "morse_sum"},
        )
        if bonds:
            out["critical_point_list"] = census.table()
    else:
        msg = (f"critical-point census skipped: {n_points} grid points > census_max_points="
               f"{settings.census_max_points} (memory); raise it or coarsen the grid")
        log.warning(msg)
        out.update(critical_points=None, morse_sum=None, morse_ok=None, critical_points_all=None,
                   census_skipped=msg)
