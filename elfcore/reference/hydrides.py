"""Starting structures of the metal-hydride reference data (issue #24).

* :func:`prototype` — a known high-pressure hydride (:data:`PROTOTYPES`) built with
  :func:`ase.spacegroup.crystal` from its Wyckoff positions, scaled to roughly a
  target pressure.
* :func:`random_hydride` — a random crystal of the same stoichiometry in a given space
  group (pyxtal, the optional ``reference`` extra), unrelaxed, at the prototype's
  volume per atom.

Neither is relaxed: the pressure of a case is what CP2K's stress tensor says
(``pressure_gpa`` of the case file), the target pressure only picks the volume.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np

from ..errors import StructureError
from .structures import aspect_problem, min_distance, pyxtal_attempt, scale_to_volume

__all__ = ["Prototype", "PROTOTYPES", "prototype", "prototype_volume_factor", "random_hydride", "min_pair_distance"]

# Generic Murnaghan parameters of the volume scaling (K(P) = K0 + K' P); an estimate, not a fit.
_K0_GPA = 100.0
_K_PRIME = 3.5


@dataclass(frozen=True)
class Prototype:
    """A hydride crystal given by its space group, cell and Wyckoff positions.

    Parameters
    ----------
    formula : str
        Formula unit, e.g. ``"LaH10"``.
    metal : str
        The element that is not hydrogen (a metal, or S).
    h_per_metal : int
        H atoms per ``metal`` atom.
    space_group : int
        International space-group number.
    cellpar : tuple of 6 float
        a, b, c (Å), α, β, γ (degrees) at ``pressure_gpa``.
    pressure_gpa : float
        Pressure of ``cellpar``, GPa.
    sites : tuple of (str, (x, y, z))
        Symbol and fractional coordinates of one atom per Wyckoff orbit.
    source : str
        Where the structure comes from.
    """

    formula: str
    metal: str
    h_per_metal: int
    space_group: int
    cellpar: tuple
    pressure_gpa: float
    sites: tuple
    source: str


#: The prototypes, by lower-case formula. Cells are literature values rounded to 0.01 Å.
PROTOTYPES = {
    # clathrate H32 cages around La: La 4a, H 8c and 32f (x = 0.379 gives H-H 1.15/1.22 A, La-H 2.12 A)
    "lah10": Prototype("LaH10", "La", 10, 225, (5.10, 5.10, 5.10, 90, 90, 90), 170.0,
                       (("La", (0.0, 0.0, 0.0)), ("H", (0.25, 0.25, 0.25)), ("H", (0.379, 0.379, 0.379))),
                       "Fm-3m LaH10, a = 5.1 A near 170 GPa (Geballe et al. 2018; Drozdov et al. 2019)"),
    # sodalite-like H24 cages: metal 2a, H 12d
    "cah6": Prototype("CaH6", "Ca", 6, 229, (3.50, 3.50, 3.50, 90, 90, 90), 150.0,
                      (("Ca", (0.0, 0.0, 0.0)), ("H", (0.25, 0.0, 0.5))),
                      "Im-3m CaH6 at 150 GPa (Wang et al., PNAS 109, 6463 (2012))"),
    "yh6": Prototype("YH6", "Y", 6, 229, (3.58, 3.58, 3.58, 90, 90, 90), 165.0,
                     (("Y", (0.0, 0.0, 0.0)), ("H", (0.25, 0.0, 0.5))),
                     "Im-3m YH6 near 165 GPa (Troyan et al. 2021; Kong et al. 2021)"),
    # bcc S with H on the cube edges (6b): S-H 1.55 A
    "h3s": Prototype("H3S", "S", 3, 229, (3.09, 3.09, 3.09, 90, 90, 90), 150.0,
                     (("S", (0.0, 0.0, 0.0)), ("H", (0.0, 0.5, 0.5))),
                     "Im-3m H3S at 150 GPa (Duan et al. 2014; Einaga et al. 2016)"),
}


def prototype_volume_factor(pressure_from: float, pressure_to: float) -> float:
    """Volume ratio V(pressure_to) / V(pressure_from) of a generic compressed hydride.

    Murnaghan's equation of state with K0 = 100 GPa and K' = 3.5 (an estimate for dense
    hydrides, not a fit to any of them): V₂/V₁ = ((K0 + K'P₂)/(K0 + K'P₁))^(-1/K').
    """
    if pressure_from < 0 or pressure_to < 0:
        raise StructureError(f"pressures must be >= 0 GPa, got {pressure_from}, {pressure_to}")
    return ((_K0_GPA + _K_PRIME * pressure_to) / (_K0_GPA + _K_PRIME * pressure_from)) ** (-1.0 / _K_PRIME)


def _get(name: str) -> Prototype:
    key = name.lower()
    if key not in PROTOTYPES:
        raise StructureError(f"unknown hydride prototype {name!r}; known: {sorted(PROTOTYPES)}")
    return PROTOTYPES[key]


def prototype(name: str, pressure_gpa: float | None = None, *, primitive: bool = False):
    """The conventional cell of a hydride prototype, scaled to roughly ``pressure_gpa``.

    Parameters
    ----------
    name : str
        Key of :data:`PROTOTYPES` (case-insensitive), e.g. ``"lah10"``.
    pressure_gpa : float, optional
        Target pressure, GPa; the literature cell is scaled isotropically by
        :func:`prototype_volume_factor` (default: the literature cell as is).
    primitive : bool
        The primitive cell instead of the conventional one (Fm-3m, Im-3m: a quarter,
        a half of the atoms).

    Returns
    -------
    ase.Atoms
        Periodic cell (Å), atoms ordered by Wyckoff orbit; ``info`` holds ``prototype``, ``space_group`` and ``formula``.

    Raises
    ------
    StructureError
        For an unknown name.

    Examples
    --------
    >>> prototype("h3s").get_chemical_formula()
    'H6S2'
    """
    from ase.spacegroup import crystal

    proto = _get(name)
    symbols = [s for s, _ in proto.sites]
    atoms = crystal(symbols, [xyz for _, xyz in proto.sites], spacegroup=proto.space_group,
                    cellpar=list(proto.cellpar), primitive_cell=primitive)
    if pressure_gpa is not None:
        f = prototype_volume_factor(proto.pressure_gpa, pressure_gpa) ** (1.0 / 3.0)
        atoms.set_cell(np.asarray(atoms.cell[:]) * f, scale_atoms=True)
    atoms.info.update(prototype=name.lower(), space_group=proto.space_group, formula=proto.formula)
    return atoms


def min_pair_distance(atoms, a: str, b: str, cutoff: float = 4.0) -> float:
    """Smallest distance between an ``a`` and a ``b`` atom with periodic images, Å (inf if none within ``cutoff``)."""
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", atoms, cutoff)
    symbols = np.asarray(atoms.get_chemical_symbols())
    mask = (symbols[i] == a) & (symbols[j] == b)
    return float(d[mask].min()) if mask.any() else float("inf")


def random_hydride(
    name: str,
    space_group: int,
    formula_units: int,
    volume_per_atom: float,
    *,
    seed: int,
    min_hh: float = 0.8,
    min_metal_h: float = 1.3,
    max_aspect: float | None = 2.0,
    max_tries: int = 50,
):
    """A random crystal with the stoichiometry of a prototype, from pyxtal (unrelaxed).

    Parameters
    ----------
    name : str
        Key of :data:`PROTOTYPES`; gives the elements and the H : metal ratio.
    space_group : int
        International space-group number.
    formula_units : int
        Formula units in the conventional cell (``formula_units × (1 + h_per_metal)`` atoms).
    volume_per_atom : float
        Target volume per atom, Å³ (the cell is scaled to it).
    seed : int
        Seed of pyxtal's random generator (and the retries).
    min_hh, min_metal_h : float
        Smallest H–H and metal–H distances accepted, Å, after scaling.
    max_aspect : float, optional
        Largest ratio of the widest to the narrowest cell width (None: no limit).
    max_tries : int
        Attempts before giving up.

    Returns
    -------
    ase.Atoms
        ``info`` holds ``prototype``, ``space_group``, ``formula``, ``min_hh`` and ``attempt``.

    Raises
    ------
    StructureError
        If pyxtal is not installed, or finds no valid structure within ``max_tries``.
    """
    proto = _get(name)
    if importlib.util.find_spec("pyxtal") is None:
        raise StructureError("random hydride structures need the optional package pyxtal "
                             "(pip install 'elfcore[reference]')")
    n_metal, n_h = formula_units, formula_units * proto.h_per_metal
    rng = np.random.default_rng(seed)
    last = "no attempt"
    for attempt in range(max_tries):
        sub_seed = int(rng.integers(0, 2**31 - 1))
        atoms, problem = pyxtal_attempt(space_group, [proto.metal, "H"], [n_metal, n_h], sub_seed)
        if atoms is None:
            last = problem
            continue
        dmin, problem = _scale_and_check(atoms, volume_per_atom, proto.metal, min_hh=min_hh,
                                         min_metal_h=min_metal_h, max_aspect=max_aspect)
        if problem:
            last = problem
            continue
        atoms.info.update(prototype=name.lower(), space_group=space_group, formula=proto.formula, attempt=attempt,
                          min_hh=dmin)
        return atoms
    raise StructureError(f"no valid random {proto.formula} crystal ({formula_units} formula units) in space group "
                         f"{space_group} after {max_tries} tries ({last})")


def _scale_and_check(atoms, volume_per_atom: float, metal: str, *, min_hh: float, min_metal_h: float,
                     max_aspect: float | None) -> tuple[float, str]:
    """Scale ``atoms`` in place to ``volume_per_atom`` and wrap it; return its smallest H–H distance (Å) and why
    it fails the checks (``""``: passes)."""
    scale_to_volume(atoms, volume_per_atom)
    dmin = min_pair_distance(atoms, "H", "H")
    if dmin < min_hh:
        return dmin, f"min H-H {dmin:.2f} A < {min_hh} A"
    dmh = min_pair_distance(atoms, metal, "H")
    if dmh < min_metal_h:
        return dmin, f"min {metal}-H {dmh:.2f} A < {min_metal_h} A"
    if min_distance(atoms) < min(min_hh, min_metal_h):  # metal-metal
        return dmin, "metal atoms too close"
    return dmin, aspect_problem(atoms, max_aspect)
