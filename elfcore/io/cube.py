"""Gaussian cube files (as written by CP2K, Quantum ESPRESSO's ``pp.x`` and Gaussian).

Layout: two comment lines; ``natoms ox oy oz [nval]``; three lines
``N_i v_i`` (voxel vectors; N > 0 means Bohr, N < 0 means Å); ``|natoms|`` atom
lines ``Z charge x y z`` (CP2K writes 0 in the charge column, QE the valence
charge; the column is ignored); for ``natoms < 0`` one line of orbital ids; then
``N1*N2*N3`` values, the third axis fastest, each run of ``N3`` values starting
on a new line, 6 per line. Lines may wrap differently: the values are read as
one whitespace-separated stream.

Conventions at the edge (``docs/datamodel.md``): lengths are converted from
Bohr to Å; a field whose name starts with ``rho`` is a density and is converted
from e/Bohr³ to e/Å³ (and back on write); the grid point ``(0, 0, 0)`` sits at
the cube origin, so atoms are shifted by ``-origin`` (kept in
``attrs["cube_origin"]`` in Å and restored on write). A file that repeats the
first plane as its last one (a duplicated periodic plane, as some tools write)
is detected per axis and the copy dropped (:func:`read_cube` ``periodic_plane``).

Why not ``ase.io.cube``: it reads the values with a Python loop per line (too
slow for 192³ grids), does not know about duplicated planes or density units,
and validates with ``assert``. ase is still used for element symbols.
"""
from __future__ import annotations

import logging
import math
import re
from typing import IO

import numpy as np
import xarray as xr
from ase.units import Bohr

from ..grid import make_field
from ._text import HeaderLines, duplicate_plane_axes, format_block, parse_numbers
from ..errors import SettingsError

__all__ = ["read_cube", "write_cube", "is_density_name"]

log = logging.getLogger(__name__)

_TITLE_RE = re.compile(r"elfcore cube:\s*(\S+)")
_ELF_RE = re.compile(r"\bELF\b|LOCALI[SZ]ATION", re.I)
_RHO_RE = re.compile(r"DENSITY|CHARGE", re.I)
_AXES = "abc"


def is_density_name(name: str | None) -> bool:
    """True for field names that denote an electron density (``rho``, ``rho_ref``...)."""
    return bool(name) and str(name).lower().startswith("rho")


def _guess_name(title: str, comment: str) -> str:
    m = _TITLE_RE.search(title)
    if m:
        return m.group(1)
    both = f"{title} {comment}"
    if _ELF_RE.search(both):
        return "elf"
    if _RHO_RE.search(both):
        return "rho"
    return "field"


def read_cube(
    fileobj: IO[str],
    *,
    name: str | None = None,
    source: str | None = None,
    periodic_plane: str = "auto",
) -> xr.DataArray:
    """Read a Gaussian cube file into a field.

    Parameters
    ----------
    fileobj : text stream
        Open file (the registry opens it).
    name : str, optional
        Field name; default from the title (``elfcore cube: NAME``, ``ELF`` →
        ``"elf"``, ``DENSITY`` → ``"rho"``, else ``"field"``). ``rho*`` names
        are converted from e/Bohr³ to e/Å³.
    source : str, optional
        File name for error messages.
    periodic_plane : {"auto", "keep", "drop"}
        ``"auto"``: drop the last plane along every axis where it repeats the
        first exactly (see :func:`elfcore.io._text.duplicate_plane_axes`);
        ``"drop"``: drop it along all axes; ``"keep"``: never.

    Returns
    -------
    xarray.DataArray
        Field of shape (N1, N2, N3) (minus dropped planes), float64, cell in Å.
        attrs: ``cube_title``, ``cube_comment``, ``cube_origin`` (Å, when
        non-zero), ``duplicate_plane_dropped`` (e.g. ``"a,b,c"``, when any).

    Raises
    ------
    FormatError
        Header or data do not follow the format (with line number).
    """
    if periodic_plane not in ("auto", "keep", "drop"):
        raise SettingsError(f"periodic_plane={periodic_plane!r}; must be 'auto', 'keep' or 'drop'")
    text = fileobj.read()
    h = HeaderLines(text, source)
    title = h.next("the title line")
    comment = h.next("the second comment line")
    natoms, origin = _read_count_origin(h)
    shape, vectors, unit = _read_grid_lines(h)
    numbers, positions = _read_atoms(h, natoms)
    values = parse_numbers(text[h.pos :], math.prod(shape), source=source, first_line=h.lineno + 1)
    values = values.reshape(shape)

    cell = vectors * unit * np.asarray(shape, dtype=np.float64)[:, None]
    origin = origin * unit
    positions = positions * unit - origin
    values, cell, dropped = _drop_planes(values, cell, periodic_plane)

    if name is None:
        name = _guess_name(title, comment)
    if is_density_name(name) and unit == Bohr:
        values = values / Bohr**3
    attrs = {"cube_title": title.strip(), "cube_comment": comment.strip()}
    if np.any(origin != 0):
        attrs["cube_origin"] = origin
    if dropped:
        attrs["duplicate_plane_dropped"] = ",".join(_AXES[ax] for ax in dropped)
        log.info("%s: dropped the duplicated periodic plane along %s", source or "cube", attrs["duplicate_plane_dropped"])
    return make_field(np.ascontiguousarray(values), cell, positions, numbers, name=name, attrs=attrs)


def _read_count_origin(h: HeaderLines) -> tuple[int, np.ndarray]:
    """The ``natoms ox oy oz [nval]`` line: signed atom count and origin (file units)."""
    line = h.next("the atom count and origin")
    toks = line.split()
    if len(toks) not in (4, 5):
        raise h.error(f"atom count and origin: expected 4 or 5 values, found {len(toks)}")
    natoms = h.convert(toks[0], "i", "atom count")
    origin = np.array([h.convert(t, "f", "origin") for t in toks[1:4]])
    nval = h.convert(toks[4], "i", "values per voxel") if len(toks) == 5 else 1
    if nval != 1:
        raise h.error(f"{nval} values per voxel; only cube files with one value per voxel are supported")
    return natoms, origin


def _read_grid_lines(h: HeaderLines) -> tuple[tuple[int, int, int], np.ndarray, float]:
    """The three ``N v`` lines: grid shape, voxel vectors (file units) and the unit (Bohr or 1 Å)."""
    counts = []
    vectors = []
    for axis in range(3):
        n, vx, vy, vz = h.tokens(h.next(f"grid line {axis + 1}"), "ifff", f"grid line {axis + 1}")
        if n == 0:
            raise h.error(f"grid of zero size: {n} points along axis {_AXES[axis]}")
        counts.append(n)
        vectors.append([vx, vy, vz])
    if len({c > 0 for c in counts}) != 1:
        raise h.error(f"grid counts {counts} mix Bohr (>0) and Å (<0) units")
    unit = Bohr if counts[0] > 0 else 1.0
    return tuple(abs(c) for c in counts), np.asarray(vectors), unit


def _read_atoms(h: HeaderLines, natoms: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``|natoms|`` atom lines (and, for ``natoms < 0``, the orbital id line): numbers, positions."""
    numbers_list: list[int] = []
    positions_list: list[tuple[float, float, float]] = []
    for i in range(abs(natoms)):
        z, _charge, x, y, zz = h.tokens(h.next(f"atom {i + 1}"), "sffff", f"atom {i + 1}")
        try:
            znum = float(z)
        except ValueError:
            raise h.error(f"atom {i + 1}: atomic number {z!r} is not a number") from None
        if not znum.is_integer() or not 0 <= znum <= 118:
            raise h.error(f"atom {i + 1}: atomic number {z!r}; expected an integer 0..118")
        numbers_list.append(int(znum))
        positions_list.append((x, y, zz))
    if natoms < 0:
        ids = h.tokens(h.next("the orbital id line"), "i", "orbital ids", extra=True)
        if ids[0] != 1:
            raise h.error(f"{ids[0]} orbitals per voxel; only one value per voxel is supported")
    return np.asarray(numbers_list, dtype=np.int64), np.asarray(positions_list, dtype=np.float64).reshape(-1, 3)


def _drop_planes(values: np.ndarray, cell: np.ndarray, periodic_plane: str) -> tuple[np.ndarray, np.ndarray, list]:
    """Drop the duplicated last plane per ``periodic_plane``; return values, cell and the axes dropped."""
    shape = values.shape
    if periodic_plane == "auto":
        dropped = duplicate_plane_axes(values)
    elif periodic_plane == "drop":
        dropped = [ax for ax in range(3) if values.shape[ax] > 1]
    else:
        dropped = []
    for ax in dropped:
        values = np.delete(values, -1, axis=ax)
        cell[ax] *= (shape[ax] - 1) / shape[ax]
    return values, cell, dropped


def write_cube(fileobj: IO[str], field: xr.DataArray, *, precision: int = 5) -> None:
    """Write a field as a Gaussian cube file (Bohr, 6 values per line).

    Parameters
    ----------
    fileobj : text stream
        Destination (the registry opens it).
    field : xarray.DataArray
        Field; ``rho*`` fields are written in e/Bohr³.
    precision : int
        Digits after the decimal point of the values (Gaussian uses 5, i.e. a
        relative precision of 5e-6). Header lengths use 8 decimals (Bohr).
    """
    if not 1 <= precision <= 17:
        raise SettingsError(f"precision={precision}; must be 1..17")
    name = re.sub(r"[^A-Za-z0-9_.+-]", "_", str(field.name or "field"))
    cell = np.asarray(field.attrs["cell"], dtype=np.float64)
    shape = field.shape
    positions = np.asarray(field.attrs.get("positions", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    numbers = np.asarray(field.attrs.get("numbers", np.zeros(0)), dtype=np.int64).reshape(-1)
    origin = np.asarray(field.attrs.get("cube_origin", np.zeros(3)), dtype=np.float64).reshape(3)
    values = np.asarray(field.values, dtype=np.float64)
    unit_note = ""
    if is_density_name(name):
        values = values * Bohr**3
        unit_note = " (e/Bohr^3)"
    out = [f"elfcore cube: {name}{unit_note}\n", "OUTER LOOP: X, MIDDLE LOOP: Y, INNER LOOP: Z\n"]
    o = origin / Bohr
    out.append(f"{len(numbers):5d}{o[0]:14.8f}{o[1]:14.8f}{o[2]:14.8f}\n")
    for ax in range(3):
        v = cell[ax] / shape[ax] / Bohr
        out.append(f"{shape[ax]:5d}{v[0]:14.8f}{v[1]:14.8f}{v[2]:14.8f}\n")
    for z, p in zip(numbers, (positions + origin) / Bohr):
        out.append(f"{int(z):5d}{float(z):14.8f}{p[0]:14.8f}{p[1]:14.8f}{p[2]:14.8f}\n")
    fileobj.write("".join(out))
    fileobj.write(format_block(values.reshape(-1), f" %{precision + 7}.{precision}E", 6, row=shape[2]))
