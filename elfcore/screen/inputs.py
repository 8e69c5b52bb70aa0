"""Inputs of a screening run: file specs → frames, each usable or with the reason it is not.

An input is a structure file ase reads (extxyz, ASE ``.traj``, VASP XDATCAR or
vasprun.xml, LAMMPS dump, CP2K xyz, POSCAR, CIF ...) or a field file of elfcore's
formats, optionally with a frame selection in ase's index syntax
(``traj.xyz@0:100:5``, ``traj.xyz@-1``); a directory (its files, sorted, not
recursive); or a glob (``runs/*.xyz``, selection allowed: ``runs/*.xyz@::10``).
Every frame is keyed by the absolute path of its file and its index in that file.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np

__all__ = ["Frame", "parse_input", "expand_inputs", "check_frame", "frame_metadata", "WHOLE_FILE"]

#: frame index of a row that stands for a whole file (unreadable file, no match)
WHOLE_FILE = -1

#: eV/Å³ → GPa
_EV_A3_GPA = 160.21766208


@dataclass(frozen=True)
class Frame:
    """One frame of a screening run.

    Parameters
    ----------
    source : str
        Absolute path of the file (or the input spec when nothing matched it).
    index : int
        Index of the frame in its file (0-based); :data:`WHOLE_FILE` for a row that
        stands for a whole file that gave no frames.
    atoms : ase.Atoms or None
        The structure (None when the file could not be read).
    reason : str or None
        Why the frame is not screened (elements the model does not know,
        non-periodic, unreadable...); None for a frame to screen.
    meta : dict
        ``pressure_gpa``, ``time_fs``, ``md_step`` when the file gives them.
    """

    source: str
    index: int
    atoms: object = None
    reason: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int]:
        """(source, index): the database key of the frame."""
        return (self.source, int(self.index))


def parse_input(spec: str) -> tuple[str, int | slice]:
    """Split ``"file@start:stop:step"`` into the path and an ase index.

    No ``@`` (or a path that exists with its ``@``) selects every frame.

    Examples
    --------
    >>> parse_input("traj.xyz@10:20:2")
    ('traj.xyz', slice(10, 20, 2))
    >>> parse_input("traj.xyz@-1")
    ('traj.xyz', -1)
    >>> parse_input("POSCAR")
    ('POSCAR', slice(None, None, None))
    """
    from ase.io.formats import string2index

    from ..errors import ElfcoreError

    spec = os.fspath(spec)
    if "@" not in spec or os.path.exists(spec):
        return spec, slice(None)
    path, _, index = spec.rpartition("@")
    try:
        return path, string2index(index)
    except ValueError:
        raise ElfcoreError(f"{spec!r}: frame selection {index!r} is not an index or start:stop:step") from None


def _files(path: str) -> list[str]:
    """Files a path, directory or glob stands for (sorted); [] when none."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if not n.startswith("."))
        return [p for p in (os.path.join(path, n) for n in names) if os.path.isfile(p)]
    if os.path.exists(path):
        return [path]
    if glob.has_magic(path):
        return sorted(p for p in glob.glob(path) if os.path.isfile(p))
    return []


def _read_frames(path: str, format: str | None) -> list:
    """All frames of a file (elfcore field files give their one structure)."""
    from ..io import read_structure
    from ..io.formats import _format_from_name

    if format is None and _format_from_name(path) is not None:
        return [read_structure(path)]
    import ase.io

    frames = ase.io.read(path, index=":", format=format)
    return list(frames) if isinstance(frames, list) else [frames]


def _selected(index: int | slice, n: int) -> list[int] | str:
    """Indices an ase index selects in a file of ``n`` frames, or why none."""
    if isinstance(index, slice):
        return list(range(*index.indices(n)))
    i = index + n if index < 0 else index
    if not 0 <= i < n:
        return f"frame index {index} out of range: the file has {n} frame(s)"
    return [i]


def check_frame(atoms, species: Sequence[int] | None = (1,)) -> str | None:
    """Why a structure cannot be screened, or None when it can.

    Parameters
    ----------
    atoms : ase.Atoms
    species : sequence of int or None
        Atomic numbers the model knows (hydrogen only for the hydrogen models); None
        skips the element check (the model is chosen afterwards, from the frames).

    Returns
    -------
    str or None
        e.g. ``"not periodic: pbc=[True, True, False]"`` or
        ``"non-hydrogen atoms (C2O); the model knows H only"``.

    Examples
    --------
    >>> from ase import Atoms
    >>> check_frame(Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]]))
    'not periodic: pbc=[False, False, False] and no cell (give the cell with --cell)'
    >>> check_frame(Atoms("H2O", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0]], cell=[3, 3, 3], pbc=True))
    'non-hydrogen atoms (O); the model knows H only'
    """
    from ase import Atoms
    from ase.data import chemical_symbols

    if len(atoms) == 0:
        return "no atoms"
    volume = abs(float(np.linalg.det(np.asarray(atoms.cell[:], dtype=float))))
    pbc = [bool(p) for p in atoms.pbc]
    if not all(pbc):
        msg = f"not periodic: pbc={pbc}"
        return msg + (" and no cell (give the cell with --cell)" if volume < 1e-8 else "")
    if volume < 1e-8:
        return "periodic but the cell has zero volume"
    if not np.all(np.isfinite(atoms.positions)):
        return "positions contain NaN or inf"
    if species is None:
        return None
    numbers = atoms.get_atomic_numbers()
    foreign = numbers[~np.isin(numbers, np.asarray(species, dtype=int))]
    if foreign.size:
        known = ", ".join(chemical_symbols[z] for z in sorted(species))
        what = "non-hydrogen atoms" if tuple(species) == (1,) else "atoms of elements the model does not know"
        return f"{what} ({Atoms(numbers=foreign).get_chemical_formula()}); the model knows {known} only"
    return None


def frame_metadata(atoms) -> dict:
    """Pressure (GPa), time (fs) and MD step of a frame when its file gives them.

    The pressure comes from ``atoms.info["pressure_gpa"]`` or from a stored stress
    (−trace/3, eV/Å³ → GPa); the time from ``info["time_fs"]``; the step from
    ``info["md_step"]`` or ``info["step"]``.
    """
    meta: dict = {}
    info = getattr(atoms, "info", {}) or {}
    p = info.get("pressure_gpa")
    if p is None and atoms.calc is not None and "stress" in getattr(atoms.calc, "results", {}):
        stress = np.asarray(atoms.calc.results["stress"], dtype=float).ravel()
        diag = stress[:3] if stress.size == 6 else stress.reshape(3, 3).diagonal()
        p = -float(np.mean(diag)) * _EV_A3_GPA
    if p is not None and np.isfinite(float(p)):
        meta["pressure_gpa"] = float(p)
    if info.get("time_fs") is not None:
        meta["time_fs"] = float(info["time_fs"])
    step = info.get("md_step", info.get("step"))
    if step is not None:
        meta["md_step"] = int(step)
    return meta


def _with_cell(atoms, cell):
    if cell is not None and abs(float(np.linalg.det(np.asarray(atoms.cell[:], dtype=float)))) < 1e-8:
        atoms = atoms.copy()
        atoms.set_cell(cell)
        atoms.pbc = True
    return atoms


def expand_inputs(
    inputs: Iterable[str | os.PathLike],
    *,
    format: str | None = None,
    cell: Sequence[float] | np.ndarray | None = None,
    species: Sequence[int] | None = (1,),
    relative_to: str | os.PathLike | None = None,
) -> Iterator[Frame]:
    """Every frame the inputs select, in order, each with the reason it cannot be screened (if any).

    Nothing is dropped: a file ase cannot read, a spec that matches no file and a
    selection out of range each give one :class:`Frame` with ``atoms=None`` and a
    reason; non-periodic and non-hydrogen frames keep their atoms and get a reason.

    Parameters
    ----------
    inputs : iterable of str or os.PathLike
        Files, directories or globs, each optionally with ``@index`` or
        ``@start:stop:step`` (:func:`parse_input`).
    format : str, optional
        ase format name for every file (default: guessed by ase from name and content).
    cell : array_like, shape (3,) or (3, 3), optional
        Cell in Å given to frames that have none (CP2K or plain xyz trajectories);
        such frames become periodic.
    species : sequence of int or None
        Atomic numbers the model knows (:func:`check_frame`); None: no element check.
    relative_to : str or os.PathLike, optional
        Record each file's path relative to this folder (a database that travels
        with its inputs, e.g. shipped data); default the absolute path.

    Yields
    ------
    Frame
    """
    def key(name: str) -> str:
        full = os.path.abspath(name)
        return full if relative_to is None else os.path.relpath(full, os.path.abspath(os.fspath(relative_to)))

    for spec in inputs:
        path, index = parse_input(os.fspath(spec))
        files = _files(path)
        if not files:
            yield Frame(key(path), WHOLE_FILE, None, "no such file, or no file matches")
            continue
        for name in files:
            source = key(name)
            try:
                frames = _read_frames(name, format)
            except Exception as exc:  # ase raises many types for unreadable files
                text = str(exc).splitlines()[0][:200] if str(exc) else ""
                yield Frame(source, WHOLE_FILE, None, f"unreadable: {type(exc).__name__}: {text}".rstrip(": "))
                continue
            selected = _selected(index, len(frames))
            if isinstance(selected, str):
                yield Frame(source, index if isinstance(index, int) else WHOLE_FILE, None, selected)
                continue
            for i in selected:
                atoms = _with_cell(frames[i], cell)
                yield Frame(source, i, atoms, check_frame(atoms, species), frame_metadata(atoms))
