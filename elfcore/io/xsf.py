"""XCrySDen XSF files with a ``DATAGRID_3D`` block.

A ``DATAGRID_3D`` is a *general* grid: ``N`` points per axis span the whole
spanning vector, both ends included, so a periodic grid of ``N - 1`` distinct
planes repeats its first plane as the last one. The values are written with
the first index fastest (Fortran order). The reader transposes to the
C-ordered ``(a, b, c)`` field and drops the repeated last plane of every axis;
the writer adds it back (``N + 1`` points per axis). Lengths are Å in XSF;
values are not converted. The grid origin is moved to ``(0, 0, 0)`` by shifting
the atoms (kept in ``attrs["xsf_origin"]`` and restored on write). Only the
first ``DATAGRID_3D`` of the file is read; animated files are not supported.

Why not ``ase.io.xsf``: its reader returns the grid with the duplicated planes
and uses ``assert`` for validation; the values here are parsed in one
:func:`numpy.fromstring` call.
"""
from __future__ import annotations

import math
import re
from typing import IO

import numpy as np
import xarray as xr
from ase.data import atomic_numbers

from ..errors import FormatError
from ..grid import make_field
from ._text import HeaderLines, format_block, parse_numbers

__all__ = ["read_xsf", "write_xsf"]

_FLAGS = ("CRYSTAL", "SLAB", "POLYMER", "MOLECULE", "DIM-GROUP")


def _atomic_number(h: HeaderLines, tok: str, what: str) -> int:
    if re.fullmatch(r"\d+", tok):
        z = int(tok)
        if not 0 <= z <= 118:
            raise h.error(f"{what}: atomic number {z} out of range 0..118")
        return z
    sym = tok[:1].upper() + tok[1:].lower()
    if sym not in atomic_numbers:
        raise h.error(f"{what}: {tok[:20]!r} is not an element")
    return atomic_numbers[sym]


def _atom_line(h: HeaderLines, line: str, what: str) -> tuple[int, list[float]]:
    toks = line.split()
    if len(toks) < 4:
        raise h.error(f"{what}: expected 'Z x y z', found {len(toks)} values")
    z = _atomic_number(h, toks[0], what)
    return z, [h.convert(t, "f", what) for t in toks[1:4]]


def read_xsf(fileobj: IO[str], *, name: str | None = None, source: str | None = None) -> xr.DataArray:
    """Read the first ``DATAGRID_3D`` of an XSF file.

    Parameters
    ----------
    fileobj : text stream
        The registry opens it.
    name : str, optional
        Field name (default: the grid's name after ``DATAGRID_3D_``, e.g.
        ``"elf"``).
    source : str, optional
        File name for messages.

    Returns
    -------
    xarray.DataArray
        Field of shape (N1-1, N2-1, N3-1), cell = the spanning vectors (Å).
        attrs ``duplicate_plane_dropped = "a,b,c"``; ``duplicate_plane_mismatch``
        names the axes whose dropped last plane differed from the first (a grid
        that is not periodic).

    Raises
    ------
    FormatError
        Structure or grid do not follow the format (with line number).
    """
    text = fileobj.read()
    h = HeaderLines(text, source)
    numbers, positions, primvec, grid_name = _read_blocks(h, text)
    values, origin, span, mismatch = _read_datagrid(h, text, source)
    cell = span
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3) - origin
    attrs: dict = {"duplicate_plane_dropped": "a,b,c"}
    if mismatch:
        attrs["duplicate_plane_mismatch"] = ",".join("abc"[ax] for ax in mismatch)
    if np.any(origin != 0):
        attrs["xsf_origin"] = origin
    if primvec is not None and not np.allclose(primvec, span, atol=1e-6):
        attrs["xsf_primvec"] = primvec.reshape(-1)
    return make_field(np.ascontiguousarray(values), cell, pos, np.asarray(numbers, dtype=np.int64),
                      name=name or grid_name, attrs=attrs)


def _read_blocks(h: HeaderLines, text: str) -> tuple[list[int], list[list[float]], np.ndarray | None, str]:
    """Keywords up to the first ``DATAGRID_3D``: atomic numbers, positions, PRIMVEC (or None), grid name."""
    numbers: list[int] = []
    positions: list[list[float]] = []
    primvec = None
    while True:
        line = h.next("a DATAGRID_3D block")
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        key = s.split()[0].upper()
        if key in _FLAGS:
            continue
        if key == "ANIMSTEPS":
            raise h.error("animated XSF files are not supported")
        if key in ("PRIMVEC", "CONVVEC"):
            vecs = [h.tokens(h.next(f"{key} vector {i + 1}"), "fff", f"{key} vector {i + 1}") for i in range(3)]
            if key == "PRIMVEC":
                primvec = np.array(vecs)
        elif key == "PRIMCOORD":
            _read_primcoord(h, numbers, positions)
        elif key == "ATOMS":
            _read_atoms_block(h, text, numbers, positions)
        elif key.startswith("BEGIN_INFO"):
            _skip_to(h, "END_INFO")
        elif key.startswith("BEGIN_BLOCK_DATAGRID_2D") or key.startswith("BEGIN_BLOCK_DATAGRID2D") \
                or key.startswith("BEGIN_BLOCK_BANDGRID"):
            _skip_to(h, "END_BLOCK_")
        elif re.match(r"BEGIN_BLOCK_DATAGRID_?3D", key):
            h.next("the DATAGRID_3D block comment")
        elif key.startswith("BEGIN_DATAGRID_3D") or key.startswith("DATAGRID_3D"):
            grid_name = s.split()[0].split("DATAGRID_3D", 1)[1].lstrip("_") or "field"
            return numbers, positions, primvec, grid_name
        else:
            raise h.error(f"unknown XSF keyword {s.split()[0][:30]!r}")


def _read_primcoord(h: HeaderLines, numbers: list[int], positions: list[list[float]]) -> None:
    """The ``PRIMCOORD`` count line and its atom lines (appended to ``numbers``/``positions``)."""
    count, _ = h.tokens(h.next("the PRIMCOORD count line"), "ii", "PRIMCOORD count")
    if count < 0:
        raise h.error(f"negative atom count {count}")
    for i in range(count):
        z, xyz = _atom_line(h, h.next(f"atom {i + 1}"), f"atom {i + 1}")
        numbers.append(z)
        positions.append(xyz)


def _read_atoms_block(h: HeaderLines, text: str, numbers: list[int], positions: list[list[float]]) -> None:
    """Atom lines after ``ATOMS`` up to the first line that is not one (left unread)."""
    while True:
        pos, lineno = h.pos, h.lineno
        if pos >= len(text):
            break
        nxt = h.next("atoms")
        toks = nxt.split()
        if len(toks) >= 4 and (toks[0].isdigit() or _is_symbol(toks[0])):
            z, xyz = _atom_line(h, nxt, f"atom {len(numbers) + 1}")
            numbers.append(z)
            positions.append(xyz)
        else:
            h.pos, h.lineno = pos, lineno
            break


def _read_datagrid(h: HeaderLines, text: str, source: str | None):
    """Grid size, origin, spanning vectors and values of a DATAGRID_3D.

    Returns ``(values, origin, span, mismatch)``: values without the repeated last
    planes, and the axes whose last plane differed from the first.
    """
    dims = h.tokens(h.next("the grid size line"), "iii", "grid size")
    if min(dims) < 2:
        raise h.error(f"grid size {dims}: a periodic DATAGRID_3D needs ≥ 2 points per axis "
                      "(the last repeats the first)")
    origin = np.array(h.tokens(h.next("the grid origin"), "fff", "grid origin"))
    span = np.array([h.tokens(h.next(f"spanning vector {i + 1}"), "fff", f"spanning vector {i + 1}")
                     for i in range(3)])
    end = text.find("END_DATAGRID", h.pos)
    if end < 0:
        raise FormatError("no END_DATAGRID_3D: truncated file", source, text.count("\n") + 1)
    n = math.prod(dims)
    values = parse_numbers(text[h.pos : end], n, source=source, first_line=h.lineno + 1)
    values = values.reshape(dims[::-1]).transpose(2, 1, 0)
    mismatch = [ax for ax in range(3)
                if not np.allclose(values[(slice(None),) * ax + (0,)], values[(slice(None),) * ax + (-1,)],
                                   rtol=1e-6, atol=1e-12)]
    return values[:-1, :-1, :-1], origin, span, mismatch


def _is_symbol(tok: str) -> bool:
    return (tok[:1].upper() + tok[1:].lower()) in atomic_numbers


def _skip_to(h: HeaderLines, keyword: str) -> None:
    while True:
        if h.next(keyword).strip().upper().startswith(keyword):
            return


def write_xsf(fileobj: IO[str], field: xr.DataArray) -> None:
    """Write a field as an XSF ``CRYSTAL`` with one periodic ``DATAGRID_3D``.

    The grid gets ``N + 1`` points per axis (periodic plane repeated, as the
    format requires), values in Fortran order, 6 per line, 11 significant digits.
    """
    cell = np.asarray(field.attrs["cell"], dtype=np.float64)
    positions = np.asarray(field.attrs.get("positions", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    numbers = np.asarray(field.attrs.get("numbers", np.zeros(0)), dtype=np.int64).reshape(-1)
    origin = np.asarray(field.attrs.get("xsf_origin", np.zeros(3)), dtype=np.float64).reshape(3)
    name = re.sub(r"[^A-Za-z0-9_]", "_", str(field.name or "field"))
    values = np.pad(np.asarray(field.values, dtype=np.float64), ((0, 1), (0, 1), (0, 1)), mode="wrap")
    out = ["CRYSTAL\n", "PRIMVEC\n"]
    out += ["".join(f" {x:21.16f}" for x in row) + "\n" for row in cell]
    out += ["PRIMCOORD\n", f" {len(numbers)} 1\n"]
    out += [f" {int(z):3d}" + "".join(f" {x:21.16f}" for x in p) + "\n" for z, p in zip(numbers, positions + origin)]
    out += ["BEGIN_BLOCK_DATAGRID_3D\n", " elfcore\n", f" BEGIN_DATAGRID_3D_{name}\n"]
    out.append("  " + " ".join(str(n) for n in values.shape) + "\n")
    out.append("".join(f" {x:21.16f}" for x in origin) + "\n")
    out += ["".join(f" {x:21.16f}" for x in row) + "\n" for row in cell]
    fileobj.write("".join(out))
    fileobj.write(format_block(values.transpose(2, 1, 0).reshape(-1), " %.10E", 6))
    fileobj.write(" END_DATAGRID_3D\nEND_BLOCK_DATAGRID_3D\n")
