"""Topology of periodic ELF fields: percolation, networking value, molecularity, critical points.

``docs/science.md`` §7. The superlevel-set merge tree lives in
:mod:`elfcore.topology.mergetree`, critical points and the bond-critical-point
route to φ in :mod:`elfcore.topology.critical`, the persistence-simplified
critical-point census (Morse relation exact) in :mod:`elfcore.topology.persistence`.
"""
from __future__ import annotations

from .accuracy import case_networking_errors, networking_value_errors, phi_metrics
from .critical import (
    KIND_NAMES,
    BondGraphResult,
    CriticalPoints,
    atom_basins,
    bond_graph_percolation,
    critical_points,
    networking_value_bcp,
    pl_critical_counts,
)
from .mergetree import (
    MergeTreeResult,
    PercolationResult,
    TopologySettings,
    atom_anchors,
    exclusion_mask,
    merge_tree,
    networking_value,
    percolation_thresholds,
    refine_saddle,
    upsample_factor,
    upsampled,
)
from .persistence import (
    DEFAULT_PERSISTENCE,
    CriticalCensus,
    PersistenceDiagram,
    critical_census,
    persistence_diagram,
)
from .summary import topology_summary

__all__ = [
    "topology_summary",
    "phi_metrics",
    "networking_value_errors",
    "case_networking_errors",
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
    "KIND_NAMES",
    "CriticalPoints",
    "BondGraphResult",
    "critical_points",
    "pl_critical_counts",
    "bond_graph_percolation",
    "networking_value_bcp",
    "atom_basins",
    "DEFAULT_PERSISTENCE",
    "PersistenceDiagram",
    "CriticalCensus",
    "persistence_diagram",
    "critical_census",
]
