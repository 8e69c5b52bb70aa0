"""Reading and writing fields, cases and structures.

Formats (see :data:`elfcore.io.formats.FORMATS`): VASP ELFCAR and CHGCAR,
Gaussian cube (CP2K, Quantum ESPRESSO), XSF ``DATAGRID_3D``, netCDF cases.
Everything returned follows ``docs/datamodel.md``: dims ``(a, b, c)``, Å, no
duplicated periodic plane, densities in e/Å³.

Examples
--------
>>> import io, numpy as np
>>> from elfcore.grid import make_field
>>> f = make_field(np.full((2, 2, 3), 0.5), np.eye(3) * 2.0, name="elf")
>>> buf = io.StringIO()
>>> write_field(f, buf, format="cube")
>>> _ = buf.seek(0)
>>> float(read_field(buf, format="cube").mean())
0.5
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import FormatError
from .validate import check_structure
from .formats import (
    FORMATS,
    known_formats,
    read_case,
    read_field,
    sniff_format,
    write_case,
    write_field,
)

__all__ = [
    "read_field",
    "write_field",
    "read_case",
    "write_case",
    "read_structure",
    "sniff_format",
    "known_formats",
    "FORMATS",
]


#: numeric attributes of a field file that :func:`read_structure` copies into ``atoms.info``
_STRUCTURE_ATTRS = ("pressure_gpa", "temperature_k", "time_fs", "md_step")


def read_structure(path: str | os.PathLike, format: str | None = None, index=-1):
    """Read an atomic structure with :func:`ase.io.read` (any format ase knows).

    Field files of elfcore's formats are read with :func:`read_field` and their
    atoms returned, so ``read_structure("ELFCAR")`` works too; the file's
    ``pressure_gpa``, ``temperature_k``, ``time_fs`` and ``md_step`` (netCDF cases)
    go into ``atoms.info``.

    Parameters
    ----------
    path : str or os.PathLike
        Structure file (POSCAR, xyz, extxyz, cif, CP2K/QE outputs...).
    format : str, optional
        ase format name, or an elfcore field format.
    index : int
        Frame of a trajectory (default: the last).

    Returns
    -------
    ase.Atoms

    Raises
    ------
    FormatError
        ase cannot read the file, or the structure fails
        :func:`elfcore.io.validate.check_structure` (cell, positions, species).
    FileNotFoundError
        The path does not exist.
    """
    from ..grid import field_atoms

    if format in FORMATS or (format is None and _field_format_from_name(path)):
        fld = read_field(path, format=format)
        atoms = field_atoms(fld)
        for key in _STRUCTURE_ATTRS:  # what a DFT case knows about its structure (pressure, MD time...)
            value = fld.attrs.get(key)
            if isinstance(value, (int, float, np.integer, np.floating)) and np.isfinite(value):
                atoms.info[key] = value.item() if hasattr(value, "item") else value
        return atoms
    import ase.io

    if not os.path.exists(os.fspath(path)):
        raise FileNotFoundError(2, "No such file or directory", os.fspath(path))
    try:
        atoms = ase.io.read(os.fspath(path), index=index, format=format)
    except Exception as exc:  # ase raises many types for unreadable files
        detail = " ".join(str(exc).split())[:200]
        raise FormatError(f"ase cannot read the structure ({type(exc).__name__}: {detail})",
                          os.fspath(path)) from None
    if isinstance(atoms, list):
        atoms = atoms[-1] if atoms else None
    if atoms is None:
        raise FormatError("the file holds no structure", os.fspath(path))
    check_structure(atoms.cell[:], atoms.positions, atoms.numbers, os.fspath(path), require_cell=False)
    return atoms


def _field_format_from_name(path) -> bool:
    from .formats import _format_from_name

    return _format_from_name(os.fspath(path)) is not None
