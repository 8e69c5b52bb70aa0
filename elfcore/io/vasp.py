"""VASP volumetric files: ELFCAR and CHGCAR (also CHG, AECCAR*, PARCHG*).

Layout: a POSCAR header (comment, scale, lattice, [symbols], counts,
[Selective dynamics], Direct/Cartesian, positions), a blank line, the grid
line ``NGX NGY NGZ`` and ``NGX*NGY*NGZ`` values with x fastest (Fortran order;
transposed here to the C-ordered ``(a, b, c)`` field). A CHGCAR then has
``augmentation occupancies`` sections (skipped). Spin-polarized files repeat
the grid line and a second block (CHGCAR: ρ↑−ρ↓; ELFCAR: spin-down ELF);
non-collinear CHGCARs have four blocks. :func:`read_elfcar` /
:func:`read_chgcar` return block 0 by default (``block=`` selects another);
``attrs["vasp_blocks"]`` counts the blocks found.

Units: a CHGCAR stores ρ·V (V = cell volume in Å³); the reader divides by V
and returns ρ in e/Å³, the writer multiplies back. An ELFCAR is dimensionless
and kept as is.

Why not ase: ``ase.calculators.vasp.VaspChargeDensity`` divides every file by
V, ELFCAR included (wrong for ELF), and reads the grid with one
``np.fromfile`` call per grid row (slow for 192³). Here the block is located
from the regular line layout (one regular-expression scan only as a fallback)
and parsed in one :func:`numpy.fromstring` call. ase is used for element data.
"""
from __future__ import annotations

import logging
import math
import re
from typing import IO

import numpy as np
import xarray as xr
from ase.data import atomic_numbers, chemical_symbols

from ..errors import FormatError
from ..grid import make_field
from ._text import HeaderLines, format_block, parse_numbers

__all__ = ["read_elfcar", "read_chgcar", "write_elfcar", "write_chgcar", "guess_format"]

log = logging.getLogger(__name__)


def _symbol(tok: str) -> str | None:
    sym = re.split(r"[_/.:]", tok)[0]
    sym = sym[:1].upper() + sym[1:].lower()
    return sym if sym in atomic_numbers else None


def _read_header(h: HeaderLines):
    """Parse the POSCAR part; return (comment, cell, positions_cart, numbers, dims)."""
    comment = h.next("the comment line")
    scale_toks = h.next("the scale line").split()
    if len(scale_toks) not in (1, 3):
        raise h.error(f"scale line: expected 1 or 3 values, found {len(scale_toks)}")
    scale = np.array([h.convert(t, "f", "scale") for t in scale_toks])
    lattice = np.array([h.tokens(h.next(f"lattice vector {i + 1}"), "fff", f"lattice vector {i + 1}", extra=True)
                        for i in range(3)])
    line = h.next("the element symbols or counts")
    toks = line.split()
    if not toks:
        raise h.error("expected element symbols or atom counts, found an empty line")
    if re.fullmatch(r"[+-]?\d+", toks[0]):
        counts_line = line
        symbols = [_symbol(t) for t in comment.split()]
        counts_toks = counts_line.split()
        if len(symbols) < len(counts_toks) or None in symbols[: len(counts_toks)]:
            raise h.error("VASP 4 header without element symbols (and the comment line does not name them)")
        symbols = symbols[: len(counts_toks)]
    else:
        symbols = []
        for t in toks:
            s = _symbol(t)
            if s is None:
                raise h.error(f"{t[:20]!r} is not an element symbol")
            symbols.append(s)
        counts_line = h.next("the atom counts")
    counts = h.tokens(counts_line, "i" * len(symbols), "atom counts")
    if any(c < 0 for c in counts):
        raise h.error(f"negative atom count in {counts}")
    mode = h.next("the coordinate mode line").strip()
    if mode[:1] in ("s", "S"):
        mode = h.next("the coordinate mode line").strip()
    if not mode or mode[0] not in "dDcCkK":
        raise h.error(f"coordinate mode {mode[:20]!r}; expected Direct or Cartesian")
    cartesian = mode[0] in "cCkK"

    if scale.size == 1 and scale[0] < 0:
        vol0 = abs(np.linalg.det(lattice))
        if vol0 < 1e-12:
            raise h.error("cell has zero volume")
        factor = np.full(3, (abs(scale[0]) / vol0) ** (1.0 / 3.0))
    else:
        factor = np.broadcast_to(scale, (3,)).astype(np.float64)
    cell = lattice * factor[None, :]
    volume = abs(float(np.linalg.det(cell)))
    if not volume > 1e-8:
        raise FormatError(f"cell has zero volume (det = {volume:.3g} Å³)", h.source, 5)
    natoms = int(sum(counts))
    pos = np.array([h.tokens(h.next(f"position of atom {i + 1}"), "fff", f"position of atom {i + 1}", extra=True)
                    for i in range(natoms)]).reshape(-1, 3)
    if cartesian:
        positions = pos * factor[None, :]
    else:
        positions = pos @ cell
    numbers = np.repeat([atomic_numbers[s] for s in symbols], counts).astype(np.int64)
    grid_line = h.next_nonblank("the grid line NGX NGY NGZ")
    dims = h.tokens(grid_line, "iii", "grid line")
    if min(dims) <= 0:
        raise h.error(f"grid of zero size: {dims}")
    return comment.strip(), cell, positions, numbers, tuple(dims)


def _next_line(text: str, pos: int) -> str:
    end = text.find("\n", pos)
    return text[pos : (len(text) if end < 0 else end)]


def _is_terminator(line: str, dims: tuple[int, int, int]) -> bool:
    s = line.strip()
    if not s or s.startswith("augmentation"):
        return True
    toks = s.split()
    return len(toks) == 3 and all(t.isdigit() for t in toks) and tuple(map(int, toks)) == dims


def _block_end(text: str, start: int, n: int, dims: tuple[int, int, int]) -> int:
    """End offset of the numeric block starting at ``start`` (exclusive)."""
    first_nl = text.find("\n", start)
    if first_nl > start:
        line_len = first_nl - start + 1
        per_line = len(text[start:first_nl].split())
        if per_line > 0:
            nlines = -(-n // per_line)
            last_start = start + (nlines - 1) * line_len
            if last_start == start or (last_start <= len(text) and text[last_start - 1] == "\n"):
                nl = text.find("\n", last_start)
                end = len(text) if nl < 0 else nl + 1
                last_tokens = len(text[last_start:end].split())
                if last_tokens == n - (nlines - 1) * per_line and (end >= len(text) or _is_terminator(_next_line(text, end), dims)):
                    return end
    pattern = re.compile(r"\n[ \t]*(?:augmentation|%d[ \t]+%d[ \t]+%d[ \t]*\r?(?:\n|$)|\r?\n)" % dims)
    m = pattern.search(text, max(start - 1, 0))
    return len(text) if m is None else m.start() + 1


def _blocks(text: str, start: int, n: int, dims, max_blocks: int = 4) -> list[tuple[int, int]]:
    """(start, end) offsets of the data blocks, the first starting at ``start``."""
    grid_re = re.compile(r"\n[ \t]*%d[ \t]+%d[ \t]+%d[ \t]*\r?(?:\n|$)" % dims)
    out = []
    pos = start
    while len(out) < max_blocks:
        end = _block_end(text, pos, n, dims)
        out.append((pos, end))
        m = grid_re.search(text, max(end - 1, 0))
        if m is None:
            break
        pos = m.end()
    return out


def _read(fileobj: IO[str], kind: str, name: str | None, source: str | None, block: int) -> xr.DataArray:
    text = fileobj.read()
    h = HeaderLines(text, source)
    comment, cell, positions, numbers, dims = _read_header(h)
    n = math.prod(dims)
    blocks = _blocks(text, h.pos, n, dims)
    if not 0 <= block < len(blocks):
        raise FormatError(f"block {block} requested; the file has {len(blocks)} data block(s)", source)
    start, end = blocks[block]
    first_line = h.lineno + 1 if block == 0 else text.count("\n", 0, start) + 1
    values = parse_numbers(text[start:end], n, source=source, first_line=first_line)
    values = np.ascontiguousarray(values.reshape(dims[::-1]).transpose(2, 1, 0))
    volume = abs(float(np.linalg.det(cell)))
    if kind == "chgcar":
        values = values / volume
    attrs = {"vasp_comment": comment, "vasp_blocks": len(blocks), "vasp_block": block}
    default = "elf" if kind == "elfcar" else "rho"
    return make_field(values, cell, positions, numbers, name=name or default, attrs=attrs)


def read_elfcar(fileobj: IO[str], *, name: str | None = None, source: str | None = None, block: int = 0) -> xr.DataArray:
    """Read an ELFCAR (values kept as is: ELF is dimensionless).

    Parameters
    ----------
    fileobj : text stream
        The registry opens it.
    name : str, optional
        Field name (default ``"elf"``).
    source : str, optional
        File name for messages.
    block : int
        Data block (0; 1 = spin-down ELF of a spin-polarized run).

    Returns
    -------
    xarray.DataArray
        Field of shape (NGX, NGY, NGZ), float64; attrs ``vasp_comment``,
        ``vasp_blocks``, ``vasp_block``.

    Raises
    ------
    FormatError
        The file does not follow the format (path and line in the message).
    """
    return _read(fileobj, "elfcar", name, source, block)


def read_chgcar(fileobj: IO[str], *, name: str | None = None, source: str | None = None, block: int = 0) -> xr.DataArray:
    """Read a CHGCAR: ρ·V in the file, returned as ρ in e/Å³.

    ``block`` 0 is the total density, 1 the magnetization density (spin) or
    m_x (non-collinear). Other parameters as :func:`read_elfcar`; default name
    ``"rho"``.
    """
    return _read(fileobj, "chgcar", name, source, block)


def _write(fileobj: IO[str], field: xr.DataArray, kind: str) -> None:
    cell = np.asarray(field.attrs["cell"], dtype=np.float64)
    positions = np.asarray(field.attrs.get("positions", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    numbers = np.asarray(field.attrs.get("numbers", np.zeros(0)), dtype=np.int64).reshape(-1)
    values = np.asarray(field.values, dtype=np.float64)
    if kind == "chgcar":
        values = values * abs(float(np.linalg.det(cell)))
    # consecutive runs of one species (keeps the atom order)
    runs: list[list[int]] = []
    for z in numbers:
        if runs and runs[-1][0] == z:
            runs[-1][1] += 1
        else:
            runs.append([int(z), 1])
    if not runs:
        runs = [[1, 0]]
    frac = positions @ np.linalg.inv(cell)
    out = [f"elfcore {kind}: {field.name or kind}\n", "   1.00000000000000\n"]
    out += ["".join(f" {x:21.16f}" for x in row) + "\n" for row in cell]
    out.append("".join(f" {chemical_symbols[z]:>4s}" for z, _ in runs) + "\n")
    out.append("".join(f" {c:5d}" for _, c in runs) + "\n")
    out.append("Direct\n")
    out += ["".join(f" {x:19.16f}" for x in row) + "\n" for row in frac]
    na, nb, nc = values.shape
    out.append(f"\n {na:4d} {nb:4d} {nc:4d}\n")
    fileobj.write("".join(out))
    fileobj.write(format_block(values.transpose(2, 1, 0).reshape(-1), " %17.11E", 5))


def write_elfcar(fileobj: IO[str], field: xr.DataArray) -> None:
    """Write a field as an ELFCAR (values as is, 5 per line, 12 significant digits)."""
    _write(fileobj, field, "elfcar")


def write_chgcar(fileobj: IO[str], field: xr.DataArray) -> None:
    """Write a density field (e/Å³) as a CHGCAR (ρ·V, no augmentation section)."""
    _write(fileobj, field, "chgcar")


def guess_format(head: str) -> str:
    """Tell ELFCAR from CHGCAR by content: ``"elfcar"`` if the first values lie in [0, 1].

    ρ·V values of a density average to the electron count (≫ 1 for any cell
    holding electrons); ELF is bounded by 1. Used only when the file name does
    not tell.
    """
    h = HeaderLines(head)
    try:
        _read_header(h)
    except FormatError:
        return "chgcar"
    if "augmentation" in head:
        return "chgcar"
    body = head[h.pos :]
    cut = body.rfind("\n")
    toks = body[: max(cut, 0)].split()[:500]
    try:
        vals = np.array([float(t) for t in toks])
    except ValueError:
        return "chgcar"
    if vals.size and np.all((vals >= 0) & (vals <= 1)):
        log.debug("VASP volumetric file with values in [0, 1]: taken as an ELFCAR")
        return "elfcar"
    return "chgcar"
