"""Starting structures for the reference data.

* :func:`fluid_start` — a cubic cell of randomly oriented H₂ molecules on an fcc
  lattice (no voids, no overlapping molecules), the start of the fluid MD.
* :func:`random_crystal` — a random hydrogen crystal in a given space group (pyxtal),
  unrelaxed, rescaled to a target volume per atom and checked for a minimum H–H distance.
"""
from __future__ import annotations

import logging

import numpy as np

from ..errors import StructureError

__all__ = [
    "H2_BOND",
    "fluid_start",
    "min_distance",
    "random_crystal",
    "intermolecular_distance",
    "gamma_supercell",
    "CUBIC_GROUPS",
    "HEXAGONAL_GROUPS",
]

log = logging.getLogger(__name__)

H2_BOND = 0.74  # Å

# space groups used for the transfer set (pyxtal numbering)
CUBIC_GROUPS = (195, 198, 200, 205, 207, 212, 215, 218, 221, 223, 225, 227, 229)
HEXAGONAL_GROUPS = (168, 173, 174, 175, 176, 177, 182, 187, 189, 191, 193, 194)


def _random_unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def min_distance(atoms) -> float:
    """Smallest interatomic distance with periodic images, Å (inf for one atom without images)."""
    from ase.neighborlist import neighbor_list

    cutoff = 3.0
    d = neighbor_list("d", atoms, cutoff, self_interaction=False)
    return float(d.min()) if len(d) else float("inf")


def fluid_start(volume_per_atom: float, *, repeat: int = 2, bond: float = H2_BOND, seed: int = 0):
    """Cubic cell of randomly oriented H₂ molecules centred on an fcc lattice.

    Parameters
    ----------
    volume_per_atom : float
        Target volume per H atom, Å³.
    repeat : int
        fcc conventional cells per edge; ``8 * repeat**3`` atoms (2 → 64 atoms).
    bond : float
        H–H bond length, Å.
    seed : int
        Seed of the molecular orientations.

    Returns
    -------
    ase.Atoms
        Periodic cubic cell, ``8 * repeat**3`` H atoms.

    Raises
    ------
    StructureError
        If the molecules would overlap (closest intermolecular H–H < ``bond``).
    """
    from ase import Atoms

    if volume_per_atom <= 0 or repeat < 1:
        raise StructureError(f"need volume_per_atom > 0 and repeat >= 1, got {volume_per_atom}, {repeat}")
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.array([[i, j, k] for i in range(repeat) for j in range(repeat) for k in range(repeat)])
    centres_frac = ((grid[:, None, :] + basis[None, :, :]).reshape(-1, 3) + 0.25) / repeat
    natoms = 2 * len(centres_frac)
    length = (natoms * volume_per_atom) ** (1.0 / 3.0)
    centres = centres_frac * length
    rng = np.random.default_rng(seed)
    axes = _random_unit_vectors(rng, len(centres))
    pos = np.concatenate([centres + 0.5 * bond * axes, centres - 0.5 * bond * axes])
    atoms = Atoms("H" * natoms, positions=pos, cell=np.eye(3) * length, pbc=True)
    atoms.wrap()
    dmin = min_distance(atoms)
    if dmin < bond - 1e-6:
        raise StructureError(
            f"fcc H2 cell at {volume_per_atom} Å³/atom has H–H contacts of {dmin:.2f} Å < bond {bond} Å"
        )
    return atoms


def gamma_supercell(atoms, min_length: float = 5.0):
    """Repeat a cell until every perpendicular width is ≥ ``min_length`` Å.

    Returns the supercell and the repetition tuple (na, nb, nc).
    """
    cell = np.asarray(atoms.cell[:])
    vol = abs(np.linalg.det(cell))
    reps = []
    for i in range(3):
        j, k = (i + 1) % 3, (i + 2) % 3
        width = vol / np.linalg.norm(np.cross(cell[j], cell[k]))
        reps.append(int(np.ceil(min_length / width - 1e-9)))
    return atoms.repeat(reps), tuple(reps)


def pyxtal_attempt(space_group: int, species: list, counts: list[int], seed: int, *, molecular: bool = False):
    """One seeded ``pyxtal.from_random`` in 3D: ``(ase.Atoms, "")``, or ``(None, reason)`` when it fails."""
    from pyxtal import pyxtal

    xtal = pyxtal(molecular=molecular, random_state=seed)
    try:
        xtal.from_random(3, space_group, species, counts, factor=1.0, random_state=seed)
    except Exception as exc:  # pyxtal raises plain exceptions for impossible Wyckoff combos
        return None, f"pyxtal: {exc}"
    if not xtal.valid:
        return None, "pyxtal returned an invalid structure"
    return xtal.to_ase(), ""


def scale_to_volume(atoms, volume_per_atom: float) -> None:
    """Scale ``atoms`` isotropically, in place, to ``volume_per_atom`` (Å³) and wrap it into the cell."""
    scale = (volume_per_atom * len(atoms) / atoms.get_volume()) ** (1.0 / 3.0)
    atoms.set_cell(np.asarray(atoms.cell[:]) * scale, scale_atoms=True)
    atoms.wrap()


def aspect_problem(atoms, max_aspect: float | None) -> str:
    """Why the cell is too flat: widest over narrowest width (distance between opposite faces) above
    ``max_aspect``; ``""`` when it is not (or ``max_aspect`` is None)."""
    widths = atoms.get_volume() / np.linalg.norm(np.cross(atoms.cell[[1, 2, 0]], atoms.cell[[2, 0, 1]]), axis=1)
    if max_aspect is not None and widths.max() / widths.min() > max_aspect:
        return f"cell widths {widths.min():.2f}–{widths.max():.2f} Å exceed the aspect ratio {max_aspect}"
    return ""


def random_crystal(
    space_group: int,
    n_atoms: int,
    volume_per_atom: float,
    *,
    molecular: bool,
    seed: int,
    min_hh: float = 0.6,
    max_aspect: float | None = None,
    max_tries: int = 50,
    min_contact: float | None = None,
):
    """A random hydrogen crystal in ``space_group`` from pyxtal (unrelaxed).

    Parameters
    ----------
    space_group : int
        International space-group number (cubic: 195–230, hexagonal: 168–194).
    n_atoms : int
        H atoms in the conventional cell (for ``molecular``: 2 × number of H₂).
    volume_per_atom : float
        Target volume per atom, Å³ (the cell is scaled to it).
    molecular : bool
        Place H₂ molecules (pyxtal molecular crystal) instead of H atoms.
    seed : int
        Seed of pyxtal's random generator (and the retries).
    min_hh : float
        Minimum H–H distance, Å, after scaling.
    max_aspect : float, optional
        Largest allowed ratio of the widest to the narrowest cell width (distance
        between opposite faces). Very flat cells (e.g. a 1.8 Å hexagonal c axis)
        make the overlap matrix of a k-point calculation with diffuse basis sets
        singular; default: no limit.
    max_tries : int
        Attempts before giving up.
    min_contact : float, optional
        Only with ``molecular``: smallest allowed distance, Å, between atoms of
        different molecules (default: only ``min_hh`` applies).

    Returns
    -------
    ase.Atoms

    Raises
    ------
    StructureError
        If pyxtal cannot make a valid structure within ``max_tries``.
    """
    rng = np.random.default_rng(seed)
    last = "no attempt"
    for attempt in range(max_tries):
        sub_seed = int(rng.integers(0, 2**31 - 1))
        # the molecule object carries its own generator (orientations): seed it too
        species = [_h2_molecule(sub_seed)] if molecular else ["H"]
        count = n_atoms // 2 if molecular else n_atoms
        atoms, problem = pyxtal_attempt(space_group, species, [count], sub_seed, molecular=molecular)
        if atoms is None:
            last = problem
            continue
        if len(atoms) != n_atoms:
            last = f"got {len(atoms)} atoms"
            continue
        atoms, dmin, problem = _scaled_and_checked(atoms, volume_per_atom, molecular=molecular, min_hh=min_hh,
                                                   min_contact=min_contact, max_aspect=max_aspect)
        if problem:
            last = problem
            continue
        atoms.info.update(space_group=space_group, attempt=attempt, min_hh=dmin)
        return atoms
    raise StructureError(f"no valid H{n_atoms} crystal in space group {space_group} after {max_tries} tries ({last})")


def _scaled_and_checked(atoms, volume_per_atom: float, *, molecular: bool, min_hh: float,
                        min_contact: float | None, max_aspect: float | None):
    """``atoms`` scaled to ``volume_per_atom`` and wrapped, its smallest H–H distance (Å), and why it fails the
    checks (``""`` when it passes)."""
    scale_to_volume(atoms, volume_per_atom)
    if molecular:
        # keep the molecular bond length after the isotropic scaling
        atoms = _reset_bonds(atoms)
    dmin = min_distance(atoms)
    if dmin < min_hh:
        return atoms, dmin, f"min H–H {dmin:.2f} Å < {min_hh} Å"
    if molecular and min_contact is not None:
        contact = intermolecular_distance(atoms)
        if contact < min_contact:
            return atoms, dmin, f"intermolecular H–H {contact:.2f} Å < {min_contact} Å"
    return atoms, dmin, aspect_problem(atoms, max_aspect)


def _h2_molecule(seed: int):
    """pyxtal's molecule object for H₂ (its built-in table has no H₂), with a seeded generator."""
    from pymatgen.core import Molecule
    from pyxtal.molecule import pyxtal_molecule

    return pyxtal_molecule(Molecule(["H", "H"], [[0.0, 0.0, 0.0], [0.0, 0.0, H2_BOND]]), random_state=seed)


def intermolecular_distance(atoms, bond: float = H2_BOND, tol: float = 1e-3) -> float:
    """Shortest H–H distance between different molecules, Å (pairs at ``bond`` ± ``tol`` are molecules; inf when
    no other pair is within 3 Å)."""
    from ase.neighborlist import neighbor_list

    d = neighbor_list("d", atoms, 3.0)
    other = np.abs(d - bond) > tol
    return float(d[other].min()) if np.any(other) else float("inf")


def _reset_bonds(atoms, bond: float = H2_BOND):
    """Restore H₂ bond lengths after scaling: pair each atom with its nearest neighbour."""
    from ase.neighborlist import neighbor_list

    i, j, D = neighbor_list("ijD", atoms, 1.5)
    pos = atoms.get_positions()
    done = set()
    order = np.argsort(np.linalg.norm(D, axis=1))
    for idx in order:
        a, b = int(i[idx]), int(j[idx])
        if a in done or b in done or a == b:
            continue
        vec = D[idx]
        mid = pos[a] + 0.5 * vec
        u = vec / np.linalg.norm(vec)
        pos[a] = mid - 0.5 * bond * u
        pos[b] = mid + 0.5 * bond * u
        done.update((a, b))
    atoms = atoms.copy()
    atoms.set_positions(pos)
    atoms.wrap()
    return atoms
