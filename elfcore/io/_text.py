"""Shared helpers of the text readers: header tokens, the numeric block, periodic planes.

The numeric block of a volumetric file (millions of numbers) is parsed by a C
tokenizer (pandas' ``read_csv``, falling back to :func:`numpy.fromstring` in
text mode), never with a Python loop per line; the slow token-by-token scan
runs only after a failure, to report the line of the first bad token.
"""
from __future__ import annotations

import csv
import math
import re

import numpy as np

from ..errors import FormatError

__all__ = [
    "HeaderLines",
    "parse_numbers",
    "format_block",
    "duplicate_plane_axes",
]

_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eEdD][+-]?\d+)?$")  # header tokens (Fortran D ok)
_BLOCK_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")  # what numpy parses in a block


class HeaderLines:
    """Line-by-line access to the header of a text file with 1-based line numbers.

    Parameters
    ----------
    text : str
        Whole file contents.
    source : str, optional
        File name used in error messages.
    """

    def __init__(self, text: str, source: str | None = None):
        self.text = text
        self.source = source
        self.pos = 0  # character offset of the next unread line
        self.lineno = 0  # number of lines consumed

    def next(self, what: str) -> str:
        """Return the next line (without newline); raise ``FormatError`` at end of file."""
        if self.pos >= len(self.text):
            raise FormatError(f"file ends before {what} (truncated header)", self.source, self.lineno + 1)
        end = self.text.find("\n", self.pos)
        if end < 0:
            end = len(self.text)
        line = self.text[self.pos : end]
        self.pos = end + 1
        self.lineno += 1
        return line.rstrip("\r")

    def next_nonblank(self, what: str) -> str:
        """Return the next line that is not empty."""
        while True:
            line = self.next(what)
            if line.strip():
                return line

    def error(self, message: str) -> FormatError:
        """A ``FormatError`` pointing at the last line read."""
        return FormatError(message, self.source, max(self.lineno, 1))

    def tokens(self, line: str, spec: str, what: str, *, extra: bool = False) -> list:
        """Parse the leading tokens of ``line`` by ``spec`` (``"i"`` int, ``"f"`` float, ``"s"`` str).

        ``extra=True`` allows more tokens after the parsed ones.
        """
        toks = line.split()
        if len(toks) < len(spec) or (not extra and len(toks) > len(spec)):
            raise self.error(f"{what}: expected {len(spec)} values, found {len(toks)} ({line.strip()[:60]!r})")
        out = []
        for tok, kind in zip(toks, spec):
            out.append(self.convert(tok, kind, what))
        return out

    def convert(self, tok: str, kind: str, what: str):
        """Convert one token, raising ``FormatError`` with the line number."""
        if kind == "s":
            return tok
        if kind == "i":
            try:
                return int(tok)
            except ValueError:
                raise self.error(f"{what}: {tok[:30]!r} is not an integer") from None
        if not _FLOAT_RE.match(tok):
            if tok.lower().lstrip("+-") in ("nan", "inf", "infinity"):
                raise self.error(f"{what}: value {tok!r} is not finite")
            raise self.error(f"{what}: {tok[:30]!r} is not a number")
        value = float(tok.replace("d", "e").replace("D", "e"))
        if not math.isfinite(value):
            raise self.error(f"{what}: value {tok[:30]!r} overflows")
        return value


def _locate_bad_token(text: str, first_line: int, source: str | None, limit: int) -> FormatError:
    """Slow path: find the first token of ``text`` that is not a finite number."""
    count = 0
    for offset, line in enumerate(text.split("\n")):
        for tok in line.split():
            count += 1
            if count > limit:
                return FormatError(f"more values than the {limit} expected (extra token {tok[:30]!r})",
                                   source, first_line + offset)
            if not _BLOCK_RE.match(tok):
                if tok.lower().lstrip("+-") in ("nan", "inf", "infinity"):
                    return FormatError(f"value {tok!r} is not finite", source, first_line + offset)
                return FormatError(f"{tok[:30]!r} is not a number", source, first_line + offset)
    return FormatError("cannot parse the numeric block", source, first_line)


class _Chunks:
    """Minimal file object handing a string to pandas in slices (no full copy)."""

    def __init__(self, text: str):
        self._text = text
        self._pos = 0

    def read(self, size: int = -1) -> str:
        start = self._pos
        stop = len(self._text) if size is None or size < 0 else min(len(self._text), start + size)
        self._pos = stop
        return self._text[start:stop]

    def __iter__(self):  # pandas checks for file-likes by read/__iter__
        return iter(self._text.splitlines(True))


def _fast_parse(text: str) -> np.ndarray | None:
    """Parse a block with pandas' C tokenizer (about 2x faster than numpy here).

    Lines may hold different numbers of values as long as the first line is
    the longest (true of every writer handled here); missing fields come back
    as NaN and are dropped. A literal ``nan`` or any other junk makes pandas
    fail, and ``None`` sends the caller to the exact (slower) path that reports
    the line.
    """
    import pandas as pd

    try:
        frame = pd.read_csv(
            _Chunks(text), sep=r"\s+", header=None, engine="c", dtype=np.float64,
            quoting=csv.QUOTE_NONE, keep_default_na=False, na_values=[""], skip_blank_lines=True,
        )
    except Exception:  # any tokenizer/conversion failure: use the exact path
        return None
    table = frame.to_numpy(dtype=np.float64)
    values = table.reshape(-1)
    pad = np.isnan(table[:-1])
    if pad.any():  # short lines inside the block (e.g. cube rows): drop their padding
        return values[~np.isnan(values)]
    last = table[-1]
    n_last = int(np.count_nonzero(~np.isnan(last)))
    if np.isnan(last[:n_last]).any():
        return values[~np.isnan(values)]
    return values[: values.size - (last.size - n_last)]


def parse_numbers(
    text: str,
    expected: int,
    *,
    source: str | None = None,
    first_line: int = 1,
    what: str = "grid values",
) -> np.ndarray:
    """Parse exactly ``expected`` whitespace-separated finite floats from ``text``.

    Parameters
    ----------
    text : str
        The numeric block (nothing else in it).
    expected : int
        Number of values required.
    source : str, optional
        File name for messages.
    first_line : int
        1-based line number of the first line of ``text`` in the file.

    Returns
    -------
    numpy.ndarray, shape (expected,), float64

    Raises
    ------
    FormatError
        Too few or too many values, a non-numeric token, NaN or inf.
    """
    values = None if not text or text.isspace() else _fast_parse(text)
    if values is None or values.size != expected:
        if not text or text.isspace():
            values = np.zeros(0)
        else:
            try:
                values = np.fromstring(text, dtype=np.float64, sep=" ")
            except ValueError:
                raise _locate_bad_token(text, first_line, source, expected) from None
    if values.size != expected:
        nlines = text.count("\n")
        if values.size < expected:
            raise FormatError(
                f"{what}: expected {expected} values, found {values.size} (truncated data or wrong grid counts)",
                source, first_line + nlines)
        raise _locate_bad_token(text, first_line, source, expected)
    if not np.all(np.isfinite(values)):
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        # find its line: count tokens line by line (error path only)
        seen = 0
        for offset, line in enumerate(text.split("\n")):
            n = len(line.split())
            if seen + n > bad:
                raise FormatError(f"{what}: value {values[bad]} is not finite", source, first_line + offset)
            seen += n
    return values


def format_block(values: np.ndarray, fmt: str, per_line: int, *, row: int | None = None) -> str:
    """Format a flat array as text, ``per_line`` values per line.

    Parameters
    ----------
    values : numpy.ndarray, shape (n,)
        Values in file order.
    fmt : str
        printf format of one value, e.g. ``" %17.11E"``.
    per_line : int
        Values per line.
    row : int, optional
        Restart a new line every ``row`` values (the cube convention: each
        innermost-axis run starts on a new line). ``n`` must be a multiple of it.

    Returns
    -------
    str
        The text, each line ending in a newline.
    """
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    unit = row if row is not None else per_line
    full, rest = divmod(unit, per_line)
    unit_fmt = (fmt * per_line + "\n") * full + ((fmt * rest + "\n") if rest else "")
    n_units, tail = divmod(flat.size, unit)
    chunks = []
    step = max(1, 200_000 // unit)
    for start in range(0, n_units, step):
        stop = min(n_units, start + step)
        chunks.append((unit_fmt * (stop - start)) % tuple(flat[start * unit : stop * unit].tolist()))
    if tail:
        full_t, rest_t = divmod(tail, per_line)
        tail_fmt = (fmt * per_line + "\n") * full_t + ((fmt * rest_t + "\n") if rest_t else "")
        chunks.append(tail_fmt % tuple(flat[n_units * unit :].tolist()))
    return "".join(chunks)


def duplicate_plane_axes(values: np.ndarray) -> list[int]:
    """Axes whose last plane repeats the first one (a duplicated periodic boundary).

    Planes are compared to the precision of text files (relative 1e-5,
    absolute 1e-8 of the largest value). An axis counts only if it has ≥ 3 planes, the first plane is not uniform
    (vacuum planes of zeros are not taken for duplicates) and the field is not
    constant along the axis.

    Parameters
    ----------
    values : numpy.ndarray, shape (Na, Nb, Nc)

    Returns
    -------
    list of int
        Axis indices (0, 1, 2).
    """
    out = []
    atol = 1e-8 * float(np.max(np.abs(values))) if values.size else 0.0
    for axis in range(3):
        n = values.shape[axis]
        if n < 3:
            continue
        first, second, last = (values[(slice(None),) * axis + (i,)] for i in (0, 1, n - 1))
        same = np.allclose(first, last, rtol=1e-5, atol=atol)
        if same and np.ptp(first) > atol and not np.allclose(first, second, rtol=1e-5, atol=atol):
            out.append(axis)
    return out
