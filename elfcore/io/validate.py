"""The one validation layer between untrusted input and the rest of elfcore.

Every reader of :mod:`elfcore.io.formats` (``read_field``, ``read_case``,
``read_structure``), the model loader (:mod:`elfcore.models.io`) and the app's
upload path go through these checks, so bad input ends as a one-line
:class:`~elfcore.errors.ElfcoreError` instead of a traceback, a nonsense answer
or a memory blow-up:

* **size before decoding** — the grid a file declares is read from its first
  bytes (:func:`declared_shape`) and refused above :func:`max_voxels` before the
  numeric block is parsed; decompression (``.gz/.bz2/.xz``) stops at a byte
  budget derived from that declaration (:func:`decompressed_budget`), so a
  compression bomb costs at most the budget;
* **content after decoding** — :func:`check_structure` (finite cell of sensible
  size, positions of shape (n, 3) and finite, species 1..118 matching the
  positions in number), :func:`check_values` (a real numeric grid, finite, ELF
  fields in [0, 1]);
* **model files** — :func:`check_safetensors` parses a safetensors header
  (dtypes, shapes, offsets) against the file size before any tensor exists;
* **outputs** — :func:`check_output_path` refuses a missing or read-only
  output directory before any work starts;
* **structures** — :func:`check_atoms`, the one check of an ``ase.Atoms`` for the
  engine (descriptor, training samples, CP2K inputs, prediction, screening): atoms
  present, finite positions, allowed species, a periodic cell, optionally the
  reader's bounds, a cell period ≥ σ and no overlapping atoms, each refusal a
  :class:`~elfcore.errors.StructureError`;
* **prediction input** — :func:`check_prediction_structure` (:func:`check_atoms`
  with overlapping atoms and cells shorter than the descriptor's σ) and
  :func:`check_spacing` (no ``inf``, ``nan`` or spacings coarser than 1 Å, which
  give degenerate grids).

Settings: the voxel limit is :data:`DEFAULT_MAX_VOXELS`, raised (or lowered)
by the environment variable ``ELFCORE_MAX_VOXELS`` or the ``max_voxels=``
keyword of the readers.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
import tempfile

import numpy as np

from ..errors import FormatError, GridError, OutputError, SettingsError, StructureError

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "MAX_VOXELS_ENV",
    "MAX_CELL_LENGTH",
    "MIN_CELL_LENGTH",
    "ELF_TOLERANCE",
    "max_voxels",
    "check_voxels",
    "declared_shape",
    "decompressed_budget",
    "check_structure",
    "check_values",
    "check_field",
    "check_case",
    "is_elf_name",
    "check_safetensors",
    "check_output_path",
    "check_spacing",
    "check_prediction_structure",
    "check_atoms",
    "MIN_CELL_VOLUME",
    "WARN_ATOM_DISTANCE",
    "MIN_ATOM_DISTANCE",
    "MAX_SPACING",
]

log = logging.getLogger(__name__)

#: Largest grid (voxels per field) a reader decodes unless told otherwise: 2**26 ≈ 406³ voxels,
#: 512 MiB as float64. Raise it with ``ELFCORE_MAX_VOXELS`` or ``max_voxels=``.
DEFAULT_MAX_VOXELS = 2**26
#: Environment variable overriding :data:`DEFAULT_MAX_VOXELS` (an integer, ``1e8`` notation allowed).
MAX_VOXELS_ENV = "ELFCORE_MAX_VOXELS"
#: Lattice vectors longer than this (Å) are refused: no electronic-structure cell is 10 µm long.
MAX_CELL_LENGTH = 1.0e4
#: Lattice vectors shorter than this (Å) are refused.
MIN_CELL_LENGTH = 1.0e-2
#: |Cartesian coordinate| above this (Å) is refused (a corrupt number, not an atom).
MAX_COORDINATE = 1.0e6
#: An ELF outside [−tol, 1 + tol] is refused (quantized or text files stay well inside).
ELF_TOLERANCE = 1.0e-3
#: Bytes of text one grid value may take in a volumetric file (" -0.12345678901E+00" and generous slack).
_BYTES_PER_VALUE = 40
#: Data blocks a text file may hold beyond the first (VASP spin / non-collinear blocks).
_MAX_BLOCKS = 4
#: Bytes allowed on top of the grid values (header, atoms, CHGCAR augmentation sections).
_SLACK_BYTES = 32 * 2**20
#: Prefix of a text file searched for the declared grid.
HEAD_BYTES = 4 * 2**20


# --------------------------------------------------------------------------- voxel limit
def max_voxels(value: int | float | None = None) -> int:
    """The voxel limit in force: ``value`` if given, else ``$ELFCORE_MAX_VOXELS``, else the default.

    Raises
    ------
    GridError
        The value (or the environment variable) is not a positive integer.

    Examples
    --------
    >>> max_voxels(1000)
    1000
    """
    source = "max_voxels"
    if value is None:
        env = os.environ.get(MAX_VOXELS_ENV, "").strip()
        if not env:
            return DEFAULT_MAX_VOXELS
        source, value = MAX_VOXELS_ENV, env
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise GridError(f"{source}={value!r}; must be a positive integer (voxels)") from None
    if not math.isfinite(number) or number < 1:
        raise GridError(f"{source}={value!r}; must be a positive integer (voxels)")
    return int(number)


def check_voxels(shape, limit: int, source: str | None = None, what: str = "grid") -> int:
    """Refuse a grid of more than ``limit`` voxels; return its voxel count."""
    dims = [int(n) for n in shape]
    n = math.prod(dims)
    if n > limit:
        raise FormatError(
            f"{what} {'x'.join(map(str, dims))} = {n} voxels is above the limit of {limit} "
            f"(raise it with {MAX_VOXELS_ENV} or max_voxels=)", source)
    return n


def _ints(line: str, count: int, absolute: bool = False) -> tuple[int, ...] | None:
    toks = line.split()
    if len(toks) < count:
        return None
    try:
        vals = [int(t) for t in toks[:count]]
    except ValueError:
        return None
    return tuple(abs(v) for v in vals) if absolute else tuple(vals)


def _cube_shape(text: str):
    lines = text.split("\n", 6)
    if len(lines) < 7:
        return None
    shape = [_ints(lines[i], 1, absolute=True) for i in (3, 4, 5)]
    return None if None in shape else tuple(s[0] for s in shape)


def _xsf_shape(text: str):
    m = re.search(r"^[ \t]*(?:BEGIN_)?DATAGRID_3D\w*[^\n]*\n([^\n]*)", text, re.M | re.I)
    return None if m is None else _ints(m.group(1), 3)


def _vasp_shape(text: str):
    from ._text import HeaderLines
    from .vasp import _read_header

    try:
        return tuple(_read_header(HeaderLines(text))[4])
    except Exception:  # any header problem is reported by the reader itself
        return None


_SHAPE_PARSERS = {"cube": _cube_shape, "xsf": _xsf_shape, "elfcar": _vasp_shape, "chgcar": _vasp_shape}


def declared_shape(format: str, head: bytes) -> tuple[int, ...] | None:
    """Grid shape that the first bytes of a text file declare, or ``None`` when they do not tell.

    Parameters
    ----------
    format : str
        Registered format name (``cube``, ``xsf``, ``elfcar``, ``chgcar``; others give ``None``).
    head : bytes
        The first bytes of the (decompressed) content.
    """
    parser = _SHAPE_PARSERS.get(format)
    if parser is None:
        return None
    return parser(head.decode("latin-1"))


def decompressed_budget(format: str | None, shape, limit: int) -> int:
    """Most bytes a file of ``format`` declaring ``shape`` may take once decompressed.

    Text formats: grid values at :data:`_BYTES_PER_VALUE` bytes each, up to
    :data:`_MAX_BLOCKS` blocks, plus header slack. Binary formats (netCDF,
    whose HDF5 header is read lazily by the reader) and undeclared grids: eight
    bytes per voxel of the limit, times the blocks, plus slack.
    """
    if shape is not None:
        n = max(1, math.prod(int(d) for d in shape))
        return n * _BYTES_PER_VALUE * _MAX_BLOCKS + _SLACK_BYTES
    return limit * 8 * 2 + _SLACK_BYTES


# --------------------------------------------------------------------------- content
def is_elf_name(name) -> bool:
    """True for the names of ELF fields (``elf``, ``elf_ref``, ``elf_pred``, ``elf_corr``, ``elf_std``)."""
    text = str(name or "").lower()
    return text == "elf" or text.startswith("elf_")


def check_structure(cell, positions, numbers, source: str | None = None, *, require_cell: bool = True):
    """Validate a structure read from a file; return ``(cell, positions, numbers)`` as float64/int64 arrays.

    Parameters
    ----------
    cell : array_like, shape (3, 3)
        Lattice vectors (rows), Å; each must be finite and between
        :data:`MIN_CELL_LENGTH` and :data:`MAX_CELL_LENGTH` long, the volume non-zero.
    positions : array_like, shape (n, 3)
        Cartesian positions, Å, finite.
    numbers : array_like, shape (n,)
        Atomic numbers, integers 1..118.
    source : str, optional
        File name for messages.
    require_cell : bool
        ``False`` accepts a zero cell (a molecule file without a cell).

    Raises
    ------
    FormatError
        With the value received and the values allowed.
    """
    cell_arr = _real_array(cell, "cell", source)
    if cell_arr.shape != (3, 3):
        raise FormatError(f"cell has shape {cell_arr.shape}; expected (3, 3) lattice vectors in Å", source)
    if not np.all(np.isfinite(cell_arr)):
        raise FormatError("cell contains NaN or inf", source)
    if np.abs(cell_arr).max() > MAX_CELL_LENGTH:
        raise FormatError(f"cell component of {np.abs(cell_arr).max():.3g} Å; at most {MAX_CELL_LENGTH:g} Å "
                          "allowed", source)
    lengths = np.linalg.norm(cell_arr, axis=1)
    if require_cell or np.any(lengths > 0):
        if lengths.max() > MAX_CELL_LENGTH:
            raise FormatError(f"cell vector of {lengths.max():.3g} Å; at most {MAX_CELL_LENGTH:g} Å allowed", source)
        if lengths.min() < MIN_CELL_LENGTH:
            raise FormatError(f"cell vector of {lengths.min():.3g} Å; at least {MIN_CELL_LENGTH:g} Å needed", source)
        volume = abs(float(np.linalg.det(cell_arr)))
        if not volume > 1e-9 * float(np.prod(lengths)):
            raise FormatError(f"cell has (near) zero volume ({volume:.3g} Å³); its vectors are coplanar", source)
    pos = _real_array(positions, "positions", source)
    if pos.size == 0:
        pos = pos.reshape(0, 3)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise FormatError(f"positions have shape {pos.shape}; expected (n_atoms, 3) in Å", source)
    if not np.all(np.isfinite(pos)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(pos), axis=1))[0])
        raise FormatError(f"position of atom {bad + 1} is not finite ({pos[bad].tolist()})", source)
    if pos.size and np.abs(pos).max() > MAX_COORDINATE:
        raise FormatError(f"atom coordinate {np.abs(pos).max():.3g} Å; at most {MAX_COORDINATE:g} Å allowed", source)
    num = _real_array(numbers, "atomic numbers", source).reshape(-1)
    if num.size and (not np.all(np.isfinite(num)) or np.any(num != np.round(num))):
        raise FormatError("atomic numbers are not integers", source)
    num = num.astype(np.int64) if num.size else np.zeros(0, np.int64)
    bad = (num < 1) | (num > 118)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise FormatError(f"atom {i + 1} has atomic number {int(num[i])}; known elements are 1..118", source)
    if len(num) != len(pos):
        raise FormatError(f"{len(num)} atomic numbers for {len(pos)} positions", source)
    return cell_arr.astype(np.float64), pos.astype(np.float64), num


def _real_array(values, what: str, source: str | None) -> np.ndarray:
    arr = np.asarray(values)
    kind = arr.dtype.kind
    if kind == "c":
        raise FormatError(f"{what} are complex ({arr.dtype}); expected real numbers", source)
    if kind not in "iuf":
        raise FormatError(f"{what} have dtype {arr.dtype}; expected real numbers", source)
    return arr


def check_values(values, name, source: str | None = None, *, elf_range: str = "warn",
                 elf_tolerance: float = ELF_TOLERANCE) -> np.ndarray:
    """Validate the grid values of field ``name``: real numeric dtype, 3 dims, finite; an ELF in [0, 1].

    Parameters
    ----------
    elf_range : {"warn", "error"} or None
        What an ELF outside ``[-elf_tolerance, 1 + elf_tolerance]`` gives (None: not checked): a
        :class:`FormatError`, or a logged warning (the readers' default; the
        app's uploads refuse it, ``elfcore info`` reports it).

    Returns the values (unchanged array).

    Raises
    ------
    FormatError
        Strings, booleans or complex numbers; NaN/inf; an ELF out of range
        (``elf_range="error"``).
    """
    arr = _real_array(values, f"values of field {name!r}", source)
    if arr.ndim != 3:
        raise FormatError(f"field {name!r} has {arr.ndim} dimensions; expected 3 (a, b, c)", source)
    if arr.size == 0:
        raise FormatError(f"field {name!r} has a grid of zero size {arr.shape}", source)
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            raise FormatError(f"field {name!r} has {int(arr.size - finite.sum())} NaN or inf values", source)
    if is_elf_name(name) and elf_range is not None:
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -elf_tolerance or hi > 1.0 + elf_tolerance:
            message = (f"field {name!r} spans {lo:.4g} … {hi:.4g}; an ELF lies in [0, 1] (a density file? "
                       "read it as CHGCAR or name the field rho)")
            if elf_range not in ("warn", "error"):
                raise SettingsError(f"elf_range={elf_range!r}; must be 'warn' or 'error'")
            if elf_range == "error":
                raise FormatError(message, source)
            log.warning("%s: warning: %s", source or "<field>", message)
    return arr


def check_field(field, source: str | None = None, *, elf_range: str = "warn"):
    """Run :func:`check_structure` and :func:`check_values` on a field read from a file; return it."""
    attrs = field.attrs
    check_structure(attrs.get("cell"), attrs.get("positions", np.zeros((0, 3))), attrs.get("numbers", np.zeros(0)),
                    source)
    check_values(field.values, field.name, source, elf_range=elf_range)
    return field


def check_case(ds, source: str | None = None, *, elf_range: str = "warn"):
    """Run :func:`check_structure` and :func:`check_values` on every field of a case; return it."""
    for key in ("cell", "positions", "numbers"):
        if key not in ds:
            raise FormatError(f"not an elfcore case: no {key!r} variable", source)
    check_structure(ds["cell"].values, ds["positions"].values, ds["numbers"].values, source)
    for key, var in ds.data_vars.items():
        if tuple(var.dims) == ("a", "b", "c"):
            check_values(var.values, key, source, elf_range=elf_range)
    return ds


# --------------------------------------------------------------------------- structures (ase.Atoms)
#: Atoms closer than this (Å, periodic images included) overlap: prediction refuses the structure.
MIN_ATOM_DISTANCE = 0.1
#: Atoms closer than this (Å) are far outside the training data (H–H ≥ ≈0.65 Å up to 500 GPa): a warning.
WARN_ATOM_DISTANCE = 0.5
#: A cell whose |det| is below this (Å³) has no volume: not a periodic cell.
MIN_CELL_VOLUME = 1.0e-6
#: Coarsest grid spacing (Å) a prediction accepts from ``spacing=`` (H–H bonds are ≈0.7 Å long).
MAX_SPACING = 1.0


def check_atoms(atoms, *, species=None, require_atoms: bool = False, require_cell: bool = True,
                bounds: bool = False, sigma: float | None = None, min_distance: float | None = None,
                where: str = "the structure", species_of: str = "supported"):
    """Validate an :class:`ase.Atoms` structure for the engine; return ``(cell, positions, numbers)``.

    The one structure check of elfcore: the descriptor, the sampling of training
    voxels, the CP2K input writer, prediction and screening all call it (with the
    options they need), so a structure is refused the same way, with the same
    :class:`~elfcore.errors.StructureError` messages, wherever it enters. Checks,
    in this order (each only when its option asks for it):

    1. it is an ase.Atoms (anything without ``cell``/``get_positions`` is refused);
    2. ``require_atoms``: at least one atom;
    3. positions are finite (always);
    4. ``species``: every element is one of them;
    5. ``require_cell``: a finite cell of |det| ≥ :data:`MIN_CELL_VOLUME`;
    6. ``bounds``: the reader's checks (:func:`check_structure`: cell lengths between
       :data:`MIN_CELL_LENGTH` and :data:`MAX_CELL_LENGTH`, coordinates, Z in 1..118);
    7. ``sigma``: the cell does not repeat with a period shorter than σ;
    8. ``min_distance``: no two atoms (periodic images included) closer than it; pairs
       closer than :data:`WARN_ATOM_DISTANCE` are logged as a warning.

    Parameters
    ----------
    atoms : ase.Atoms
        The structure (its cell is taken as periodic for checks 7 and 8).
    species : sequence of str, optional
        Chemical symbols allowed (e.g. ``("H",)``); None: any element.
    require_atoms : bool
        Refuse a structure without atoms.
    require_cell : bool
        Refuse a structure without a periodic cell of non-zero volume.
    bounds : bool
        Also run :func:`check_structure` on the arrays (for structures from files and users).
    sigma : float, optional
        Gaussian width (Å) of the descriptor's atomic densities (check 7).
    min_distance : float, optional
        Smallest interatomic distance accepted, Å (check 8).
    where, species_of : str
        How messages name the structure (``"the structure"``, a file or field name) and
        whose species they cite (``"descriptor's"``: "not among the descriptor's species").

    Returns
    -------
    (cell (3, 3) float64, positions (n, 3) float64, numbers (n,) int64)

    Raises
    ------
    StructureError
        Naming the structure, the first problem found and what is needed.

    Examples
    --------
    >>> from ase import Atoms
    >>> check_atoms(Atoms("H", cell=[3, 3, 3]))[2]
    array([1])
    >>> check_atoms(Atoms("HO", cell=[3, 3, 3]), species=("H",))
    Traceback (most recent call last):
    ...
    elfcore.errors.StructureError: the structure contains O (Z=8), not among the supported species ['H'] (hydrogen only); 1 of 2 atoms
    """
    cell, positions, numbers = _atoms_arrays(atoms)
    if require_atoms and len(numbers) == 0:
        raise StructureError(f"{where} has no atoms")
    _check_positions_finite(positions, where)
    if species is not None:
        _check_species(numbers, tuple(species), where, species_of)
    if require_cell:
        _check_cell_volume(cell, where)
    if bounds:
        try:
            cell, positions, numbers = check_structure(cell, positions, numbers, require_cell=require_cell)
        except FormatError as exc:
            raise StructureError(f"{where}: {exc}") from None
    if sigma is not None:
        _check_period(cell, sigma)
    if min_distance is not None:
        _check_distances(cell, positions, numbers, min_distance)
    return cell, positions, numbers


def _atoms_arrays(atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cell (3, 3), positions (n, 3), numbers (n,)) of an ase.Atoms; anything else is a StructureError."""
    try:
        cell = np.asarray(atoms.cell[:], dtype=np.float64)
        positions = np.asarray(atoms.get_positions(), dtype=np.float64).reshape(-1, 3)
        numbers = np.asarray(atoms.get_atomic_numbers()).reshape(-1).astype(np.int64)
    except AttributeError as exc:
        raise StructureError(f"expected an ase.Atoms structure, got {type(atoms).__name__}") from exc
    return cell, positions, numbers


def _check_positions_finite(positions: np.ndarray, where: str) -> None:
    bad = ~np.all(np.isfinite(positions), axis=1)
    if bad.any():
        first = (np.flatnonzero(bad)[:10] + 1).tolist()
        raise StructureError(f"{where}: positions of atoms {first} are NaN or inf (atoms numbered from 1)")


def _check_species(numbers: np.ndarray, species: tuple[str, ...], where: str, species_of: str) -> None:
    from ase.data import atomic_numbers, chemical_symbols

    allowed = {atomic_numbers[sym] for sym in species}
    bad = sorted(set(int(z) for z in numbers) - allowed)
    if not bad:
        return
    names = ", ".join(f"{chemical_symbols[z] if 0 < z < len(chemical_symbols) else '?'} (Z={z})" for z in bad)
    only = " (hydrogen only)" if species == ("H",) else ""
    n_bad = int(np.isin(numbers, bad).sum())
    raise StructureError(f"{where} contains {names}, not among the {species_of} species {list(species)}{only}; "
                         f"{n_bad} of {len(numbers)} atoms")


def _check_cell_volume(cell: np.ndarray, where: str) -> None:
    if cell.shape != (3, 3) or not np.all(np.isfinite(cell)):
        raise StructureError(f"{where} needs a periodic cell of non-zero volume")
    with np.errstate(over="ignore"):  # a 1e200 Å cell is refused by the bounds, not here
        volume = abs(float(np.linalg.det(cell)))
    if volume < MIN_CELL_VOLUME:
        raise StructureError(f"{where} needs a periodic cell of non-zero volume")


def _check_period(cell: np.ndarray, sigma: float) -> None:
    from ase.geometry import minkowski_reduce

    reduced, _ = minkowski_reduce(cell)
    period = float(np.linalg.norm(reduced, axis=1).min())
    if period < sigma:
        raise StructureError(
            f"the cell repeats every {period:.3g} Å, less than the descriptor's Gaussian width σ = {sigma:g} Å: "
            "every grid point would see the same smeared density (a flat, meaningless ELF)")


def _check_distances(cell: np.ndarray, positions: np.ndarray, numbers: np.ndarray, min_distance: float) -> None:
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    if len(positions) == 0:
        return
    cutoff = max(WARN_ATOM_DISTANCE, float(min_distance))
    periodic = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)
    i, j, d = neighbor_list("ijd", periodic, cutoff, self_interaction=False)
    if len(d) == 0:
        return
    k = int(np.argmin(d))
    where = f"atoms {int(i[k]) + 1} and {int(j[k]) + 1}" if i[k] != j[k] else f"atom {int(i[k]) + 1} and its image"
    if d[k] < min_distance:
        raise StructureError(f"{where} are {d[k]:.3f} Å apart (overlapping atoms; periodic images included); "
                             f"at least {min_distance:g} Å is needed")
    if d[k] < WARN_ATOM_DISTANCE:
        log.warning("%s are %.3f Å apart, closer than any structure the models were trained on (≥ %g Å)",
                    where, d[k], WARN_ATOM_DISTANCE)


# --------------------------------------------------------------------------- prediction input
def check_spacing(spacing) -> float:
    """A grid spacing in Å that is finite, > 0 and ≤ :data:`MAX_SPACING`; return it as float.

    Raises
    ------
    GridError
        ``inf``, ``nan``, ≤ 0 or coarser than :data:`MAX_SPACING` (a degenerate grid).
    """
    try:
        value = float(spacing)
    except (TypeError, ValueError):
        raise GridError(f"spacing={spacing!r}; must be a number of Å") from None
    if not (math.isfinite(value) and value > 0):
        raise GridError(f"spacing={spacing}; must be a finite number > 0 Å")
    if value > MAX_SPACING:
        raise GridError(f"spacing={value:g} Å is coarser than {MAX_SPACING:g} Å: the grid cannot resolve the ELF "
                        "(H–H bonds are ≈0.7 Å); give a finer spacing or an explicit grid")
    return value


def check_prediction_structure(atoms, sigma: float, *, require_atoms: bool = False, species=None) -> None:
    """Refuse (or warn about) a structure no ELF prediction can be meaningful for.

    :func:`check_atoms` with the reader's bounds, the cell period against σ and
    :data:`MIN_ATOM_DISTANCE` (pairs closer than :data:`WARN_ATOM_DISTANCE` are
    logged as a warning).

    Parameters
    ----------
    atoms : ase.Atoms
        The structure (its cell is taken as periodic).
    sigma : float
        Gaussian width (Å) of the descriptor's atomic densities.
    require_atoms : bool
        Also refuse a structure without atoms.
    species : sequence of str, optional
        The descriptor's elements: any other element is refused by name.

    Raises
    ------
    StructureError
        The structure fails :func:`check_structure`; the cell repeats along some
        direction with a period shorter than ``sigma`` (every grid point would see
        the same smeared density: a flat, meaningless ELF); two atoms (or an atom and
        its periodic image) are closer than :data:`MIN_ATOM_DISTANCE`.
    """
    check_atoms(atoms, species=species, require_atoms=require_atoms, require_cell=True, bounds=True, sigma=sigma,
                min_distance=MIN_ATOM_DISTANCE, species_of="descriptor's")


# --------------------------------------------------------------------------- safetensors
#: dtype names a model file may store, with their item size in bytes.
SAFETENSORS_DTYPES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}
#: Largest safetensors JSON header accepted (bytes).
MAX_SAFETENSORS_HEADER = 16 * 2**20


def check_safetensors(path, *, dtypes=SAFETENSORS_DTYPES, max_elements: int = 2**28) -> dict:
    """Parse and check the header of a safetensors file without reading any tensor.

    Checks: the 8-byte header length fits the file and :data:`MAX_SAFETENSORS_HEADER`;
    the header is a JSON object; every tensor has a dtype of ``dtypes``, a
    shape of non-negative integers with at most ``max_elements`` elements, and
    ``data_offsets`` that match ``shape × itemsize``, lie inside the file and
    do not overlap.

    Returns
    -------
    dict
        ``{"tensors": {name: (dtype, shape)}, "metadata": {str: str}}``.

    Raises
    ------
    FormatError
        Naming the file and the first inconsistency.
    """
    label = os.fspath(path)
    try:
        size = os.path.getsize(label)
        with open(label, "rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise FormatError("not a safetensors model file (shorter than 8 bytes)", label)
            (n_header,) = struct.unpack("<Q", prefix)
            if n_header > min(MAX_SAFETENSORS_HEADER, size - 8):
                raise FormatError(f"safetensors header of {n_header} bytes in a {size}-byte file "
                                  "(not a model file, or truncated)", label)
            raw = fh.read(n_header)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise FormatError(f"cannot read the model file: {exc.strerror or exc}", label) from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise FormatError("safetensors header is not valid JSON (not a model file?)", label) from None
    if not isinstance(header, dict):
        raise FormatError("safetensors header is not a JSON object", label)
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise FormatError("safetensors __metadata__ is not a map of strings", label)
    data_size = size - 8 - n_header
    tensors: dict = {}
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise FormatError(f"tensor {name[:40]!r}: header entry is not an object", label)
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in dtypes:
            raise FormatError(f"tensor {name[:40]!r} has dtype {str(dtype)[:20]!r}; allowed: {', '.join(dtypes)}",
                              label)
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise FormatError(f"tensor {name[:40]!r} has shape {str(shape)[:60]}; expected a list of "
                              "non-negative integers", label)
        n = math.prod(shape)
        if n > max_elements:
            raise FormatError(f"tensor {name[:40]!r} declares {n} elements; at most {max_elements} allowed", label)
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise FormatError(f"tensor {name[:40]!r} has data_offsets {str(offsets)[:60]}; expected [begin, end]",
                              label)
        begin, end = offsets
        if not 0 <= begin <= end <= data_size or end - begin != n * dtypes[dtype]:
            raise FormatError(f"tensor {name[:40]!r}: shape {shape} of {dtype} does not fit data_offsets "
                              f"{offsets} in {data_size} data bytes (truncated or corrupt file)", label)
        spans.append((begin, end, name))
        tensors[name] = (dtype, tuple(shape))
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise FormatError(f"tensors {n0[:40]!r} and {n1[:40]!r} overlap in the file", label)
    return {"tensors": tensors, "metadata": meta}


# --------------------------------------------------------------------------- outputs
def check_output_path(path, *, what: str = "output", format: str | None = None, field: bool = False) -> None:
    """Refuse an output path whose directory is missing or not writable (before any work).

    ``"-"`` (stdout) and open files pass. Writability is tested by creating (and
    removing) a file in the directory, which also holds for root and read-only mounts.

    Parameters
    ----------
    path : str or os.PathLike
        The output file.
    what : str
        How messages name it (``"--out"``).
    format : str, optional
        The format it will be written in (``field=True``: else taken from the name).
    field : bool
        Also check that a field format is known for it (:class:`UnknownFormatError`).

    Raises
    ------
    OutputError
        The directory does not exist, is not a directory, is not writable, or the
        path is an existing directory.
    UnknownFormatError
        ``field=True`` and neither ``format`` nor the name gives a known format.
    """
    if not isinstance(path, (str, os.PathLike)):
        return
    target = os.fspath(path)
    if target == "-":
        return
    if "\x00" in target:
        raise OutputError(f"{what} {target!r}: the name contains a NUL byte")
    parent = os.path.dirname(os.path.abspath(target)) or "."
    if not os.path.exists(parent):
        raise OutputError(f"{what} {target}: directory {parent} does not exist")
    if not os.path.isdir(parent):
        raise OutputError(f"{what} {target}: {parent} is not a directory")
    if os.path.isdir(target):
        raise OutputError(f"{what} {target} is a directory; give a file name")
    if field:
        from .formats import _spec_for_write

        _spec_for_write(target, format)
    try:
        probe = tempfile.NamedTemporaryFile(dir=parent, prefix=".elfcore-write-test-", delete=True)
        probe.close()
    except OSError as exc:
        raise OutputError(f"{what} {target}: cannot write in {parent} ({exc.strerror or exc})") from None
    if os.path.exists(target) and not os.access(target, os.W_OK):
        raise OutputError(f"{what} {target} is read-only")
