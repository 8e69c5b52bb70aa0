"""The format registry and the only place where files are opened.

Every supported format is one row of :data:`FORMATS` (name, description,
extensions, name globs, magic bytes, content pattern, binary flag, module).
The reader and writer of format ``fmt`` are found by name in
``elfcore.io.<module>``: ``read_<fmt>(fileobj, *, name, source)`` returns a
field and ``write_<fmt>(fileobj, field)`` writes one. Formats that hold a whole
case (netCDF) also define ``read_case(fileobj, *, source)`` and
``write_case(fileobj, case, *, quantize, encoding)``. Format modules never
open files: they get a text stream (str, latin-1 decoded, so that no byte
makes the decoder fail) or a seekable binary stream.

Paths may end in ``.gz``, ``.bz2`` or ``.xz`` (compressed on write, detected
by name or magic bytes on read); ``"-"`` is stdin/stdout. The format is taken
from the name first (extension, then VASP-style name globs such as
``ELFCAR*``), then from the first 64 KiB of content.
"""
from __future__ import annotations

import bz2
import contextlib
import fnmatch
import gzip
import importlib
import io
import lzma
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from typing import IO, Iterator, Mapping, Union

import xarray as xr

from ..errors import FormatError, GridError, OutputError, SettingsError, StructureError, UnknownFormatError

__all__ = [
    "FormatSpec",
    "FORMATS",
    "register",
    "known_formats",
    "sniff_format",
    "read_field",
    "write_field",
    "read_case",
    "write_case",
]

Source = Union[str, "os.PathLike[str]", IO]

_FLOAT = rb"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eEdD][-+]?\d+)?"
_INT = rb"[-+]?\d+"
_HEAD_BYTES = 65536


@dataclass(frozen=True)
class FormatSpec:
    """One row of the format table.

    Attributes
    ----------
    name : str
        Format name, also the suffix of ``read_<name>``/``write_<name>``.
    description : str
        One line for humans.
    module : str
        Module under ``elfcore.io`` holding the reader and writer.
    extensions : tuple of str
        File extensions without the dot, lower case (``"cube"``).
    globs : tuple of str
        Upper-case :mod:`fnmatch` patterns on the file name (``"ELFCAR*"``).
    magic : tuple of bytes
        Prefixes of the (decompressed) content.
    content : bytes or None
        Regular expression (bytes, multiline) matched against the first 64 KiB.
    binary : bool
        The module wants a binary stream (else text).
    case : bool
        The format stores a whole case (several fields).
    """

    name: str
    description: str
    module: str
    extensions: tuple[str, ...] = ()
    globs: tuple[str, ...] = ()
    magic: tuple[bytes, ...] = ()
    content: bytes | None = None
    binary: bool = False
    case: bool = False


FORMATS: dict[str, FormatSpec] = {}
_EXTENSIONS: dict[str, str] = {}
_GLOBS: dict[str, str] = {}


def register(spec: FormatSpec) -> None:
    """Add a format to the table.

    Raises
    ------
    ValueError
        If the name, an extension or a glob is already registered.
    """
    if spec.name in FORMATS:
        raise SettingsError(f"format {spec.name!r} is already registered")
    for ext in spec.extensions:
        if ext in _EXTENSIONS:
            raise SettingsError(f"extension {ext!r} of {spec.name!r} is already registered by {_EXTENSIONS[ext]!r}")
    for glob in spec.globs:
        if glob in _GLOBS:
            raise SettingsError(f"name pattern {glob!r} of {spec.name!r} is already registered by {_GLOBS[glob]!r}")
    FORMATS[spec.name] = spec
    _EXTENSIONS.update({ext: spec.name for ext in spec.extensions})
    _GLOBS.update({g: spec.name for g in spec.globs})


_VASP_CONTENT = (
    rb"\A[^\n]*\n[ \t]*" + _FLOAT + rb"(?:[ \t]+" + _FLOAT + rb"){0,2}[ \t]*\r?\n"
    rb"(?:[ \t]*" + _FLOAT + rb"[ \t]+" + _FLOAT + rb"[ \t]+" + _FLOAT + rb"[ \t]*\r?\n){3}"
)

# The table: name, description, module, extensions, globs, magic, content, binary, case.
for _spec in (
    FormatSpec(
        "netcdf", "netCDF-4/HDF5 (or classic netCDF) case file, docs/datamodel.md", "netcdf",
        extensions=("nc", "nc4", "cdf"),
        magic=(b"\x89HDF\r\n\x1a\n", b"CDF\x01", b"CDF\x02"), binary=True, case=True,
    ),
    FormatSpec(
        "xsf", "XCrySDen XSF with a DATAGRID_3D block (general grid, Å)", "xsf",
        extensions=("xsf",),
        content=rb"^[ \t]*(?:BEGIN_BLOCK_DATAGRID_?3D|BEGIN_DATAGRID_3D|PRIMVEC|PRIMCOORD|CRYSTAL)\b",
    ),
    FormatSpec(
        "cube", "Gaussian cube (CP2K, Quantum ESPRESSO flavours; Bohr in the file)", "cube",
        extensions=("cube", "cub"),
        content=(
            rb"\A[^\n]*\n[^\n]*\n[ \t]*" + _INT + rb"(?:[ \t]+" + _FLOAT + rb"){3}(?:[ \t]+" + _INT + rb")?[ \t]*\r?\n"
            rb"(?:[ \t]*" + _INT + rb"(?:[ \t]+" + _FLOAT + rb"){3}[ \t]*\r?\n){3}"
        ),
    ),
    FormatSpec(
        "elfcar", "VASP ELFCAR (ELF, dimensionless, kept as is)", "vasp",
        globs=("ELFCAR*", "*ELFCAR*"), content=_VASP_CONTENT,
    ),
    FormatSpec(
        "chgcar", "VASP CHGCAR/CHG/AECCAR/PARCHG (ρ·V in the file, ρ in Å⁻³ in elfcore)", "vasp",
        globs=("CHGCAR*", "*CHGCAR*", "CHG", "AECCAR*", "PARCHG*"), content=_VASP_CONTENT,
    ),
):
    register(_spec)
del _spec

_COMPRESSION = {".gz": gzip, ".bz2": bz2, ".xz": lzma}
_COMPRESSION_MAGIC = ((b"\x1f\x8b", gzip), (b"BZh", bz2), (b"\xfd7zXZ\x00", lzma))


def known_formats() -> list[str]:
    """Names of the registered formats."""
    return list(FORMATS)


def _label(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "name", "<stream>"))


def _module(spec: FormatSpec):
    return importlib.import_module(f"elfcore.io.{spec.module}")


def _get_spec(format: str | None) -> FormatSpec | None:
    if format is None:
        return None
    key = format.lower()
    if key not in FORMATS:
        raise UnknownFormatError(f"unknown format {format!r}; known formats: {', '.join(FORMATS)}")
    return FORMATS[key]


def _strip_compression(name: str) -> tuple[str, object | None]:
    for suffix, mod in _COMPRESSION.items():
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], mod
    return name, None


def _format_from_name(label: str) -> str | None:
    base, _ = _strip_compression(os.path.basename(label))
    ext = os.path.splitext(base)[1].lstrip(".").lower()
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    upper = base.upper()
    for glob, name in _GLOBS.items():
        if fnmatch.fnmatchcase(upper, glob):
            return name
    return None


def _format_from_content(head: bytes, label: str) -> str:
    for spec in FORMATS.values():
        if spec.magic and head.startswith(spec.magic):
            return spec.name
    for spec in FORMATS.values():
        if spec.content is not None and re.search(spec.content, head, re.M):
            guess = getattr(_module(spec), "guess_format", None)
            return guess(head.decode("latin-1")) if guess else spec.name
    raise UnknownFormatError(
        f"{label}: cannot tell the file format from its name or content; "
        f"known formats: {', '.join(FORMATS)} (pass format=...)"
    )


def _read_upto(stream, n: int) -> bytes:
    """At most ``n`` bytes of a binary stream (several reads for decompressing streams)."""
    parts = []
    while n > 0:
        chunk = stream.read(min(n, 2**24))
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _open_source(source: Source, label: str):
    """A binary stream over ``source`` and, for a plain path, its size (else None)."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path == "-":
            return sys.stdin.buffer, None
        if os.path.isdir(path):
            raise FormatError("is a directory, not a file", path)
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            raise  # the CLI maps it to a one-line message
        except (OSError, ValueError) as exc:
            raise FormatError(f"cannot read the file: {getattr(exc, 'strerror', None) or exc}", path) from None
        return fh, os.fstat(fh.fileno()).st_size
    data = source.read()
    if isinstance(data, str):
        data = data.encode("latin-1", errors="replace")
    return io.BytesIO(data), len(data)


def _decompressor(raw):
    """(stream of the content, compression module or None), by magic bytes."""
    start = raw.read(6)
    stream = io.BufferedReader(_Prefixed(start, raw))
    for magic, mod in _COMPRESSION_MAGIC:
        if start.startswith(magic):
            return mod.open(stream, "rb"), mod
    return stream, None


class _Prefixed(io.RawIOBase):
    """A read-only binary stream: ``prefix`` bytes, then the rest of ``stream``."""

    def __init__(self, prefix: bytes, stream):
        self._prefix = prefix
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._stream.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n


_DECOMPRESS_ERRORS = (OSError, EOFError, ValueError, lzma.LZMAError)
#: Decompressed binary content (a ``.nc.gz``) above this size is spooled to a temporary file, not memory.
_SPOOL_BYTES = 64 * 2**20


def _read_content(source: Source, label: str, spec: "FormatSpec | None", max_voxels: int | None):
    """(spec, decompressed content) of ``source``, within the voxel limit and its byte budget.

    The grid the first bytes declare is checked against the limit before the
    rest is read or decompressed, and decompression stops at
    :func:`elfcore.io.validate.decompressed_budget` bytes.
    """
    from .validate import HEAD_BYTES, check_voxels, declared_shape, decompressed_budget
    from .validate import max_voxels as voxel_limit

    limit = voxel_limit(max_voxels)
    raw, size = _open_source(source, label)
    try:
        content, mod = _decompressor(raw)
        try:
            head = _read_upto(content, HEAD_BYTES)
        except _DECOMPRESS_ERRORS as exc:
            if mod is not bz2 or _strip_compression(label)[1] is not None:
                raise FormatError(f"corrupt {mod.__name__} compressed data: {exc}", label) from None
            if not raw.seekable():
                raise FormatError(f"corrupt bz2 compressed data: {exc}", label) from None
            mod = None  # "BZh" may just be text; let the format reader judge it
            raw.seek(0)
            content = raw
            head = _read_upto(content, HEAD_BYTES)
        if not head or head.isspace():
            raise FormatError("file is empty", label)
        if spec is None:
            spec = FORMATS[_format_from_content(head[:_HEAD_BYTES], label)]
        if spec.magic and not head.startswith(spec.magic):
            raise FormatError(f"not a {spec.name} file (its first bytes are not a {spec.name} signature)", label)
        shape = declared_shape(spec.name, head)
        if shape is not None:
            check_voxels(shape, limit, label, what="declared grid")
        elif not spec.binary and len(head) >= HEAD_BYTES:
            raise FormatError(f"no {spec.name} grid size in the first {HEAD_BYTES // 2**20} MiB "
                              "(not such a file, or a corrupt header)", label)
        budget = decompressed_budget(spec.name, shape, limit)
        if mod is None and size is not None and size > budget:
            raise FormatError(f"file of {size} bytes is larger than {budget} bytes allowed for "
                              f"{'its declared grid' if shape else 'the voxel limit'}", label)
        out = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) if spec.binary and mod else io.BytesIO()
        out.write(head)
        total = len(head)
        while total <= budget:
            try:
                chunk = content.read(min(2**22, budget + 1 - total))
            except _DECOMPRESS_ERRORS as exc:
                raise FormatError(f"corrupt {mod.__name__ if mod else ''} compressed data: {exc}", label) from None
            if not chunk:
                break
            out.write(chunk)
            total += len(chunk)
        if total > budget:
            raise FormatError(f"content exceeds {budget} bytes once decompressed, more than "
                              f"{'its declared grid' if shape else 'the voxel limit'} needs "
                              "(a compression bomb?)", label)
        if spec.binary:
            out.seek(0)
            return spec, out
        return spec, out.getvalue()
    finally:
        if isinstance(source, (str, os.PathLike)) and raw is not sys.stdin.buffer:
            raw.close()


def sniff_format(source: Source) -> str:
    """Name of the format of ``source``: from its name, then from its content.

    Raises
    ------
    UnknownFormatError
        Neither name nor content match a registered format.
    FileNotFoundError
        ``source`` is a path that does not exist.
    """
    label = _label(source)
    by_name = _format_from_name(label) if isinstance(source, (str, os.PathLike)) else None
    if by_name:
        return by_name
    if isinstance(source, (str, os.PathLike)) and os.fspath(source) != "-":
        path = os.fspath(source)
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
        for magic, mod in _COMPRESSION_MAGIC:
            if head.startswith(magic):
                try:
                    with mod.open(path, "rb") as zh:
                        head = zh.read(_HEAD_BYTES)
                except (OSError, EOFError, ValueError, lzma.LZMAError) as exc:
                    raise FormatError(f"corrupt compressed data: {exc}", label) from None
                break
        return _format_from_content(head, label)
    if hasattr(source, "seekable") and source.seekable():
        start = source.tell()
        head = source.read(_HEAD_BYTES)
        source.seek(start)
        if isinstance(head, str):
            head = head.encode("latin-1", errors="replace")
        for magic, mod in _COMPRESSION_MAGIC:
            if head.startswith(magic):
                raise UnknownFormatError(f"{label}: compressed stream; give format=...")
        return _format_from_content(head, label)
    raise UnknownFormatError(f"{label}: give format=... for a stream that cannot seek; "
                             f"known formats: {', '.join(FORMATS)}")


class _Text:
    """Read-once text stream over a decoded string (no copy, unlike io.StringIO)."""

    def __init__(self, text: str):
        self._text = text

    def read(self, size: int = -1) -> str:
        text, self._text = self._text, ""
        return text


def _load(source: Source, format: str | None, max_voxels: int | None = None) -> tuple[FormatSpec, object, str]:
    """Read ``source`` and return (spec, stream for the module, label)."""
    label = _label(source)
    spec = _get_spec(format)
    if spec is None and isinstance(source, (str, os.PathLike)):
        name = _format_from_name(label)
        spec = FORMATS[name] if name else None
    spec, data = _read_content(source, label, spec, max_voxels)
    stream = data if spec.binary else _Text(data.decode("latin-1"))
    return spec, stream, label


def _call_reader(func, stream, label: str, **kwargs):
    try:
        return func(stream, source=label, **kwargs)
    except (GridError, StructureError) as exc:
        raise FormatError(str(exc), label) from exc


def read_field(source: Source, format: str | None = None, name: str | None = None, *,
               max_voxels: int | None = None, elf_range: str = "warn") -> xr.DataArray:
    """Read one field from a file.

    Parameters
    ----------
    source : str, os.PathLike or file object
        Path (optionally ``.gz/.bz2/.xz``), ``"-"`` for stdin, or an open file.
    format : str, optional
        One of :func:`known_formats`; guessed from name and content if omitted.
    name : str, optional
        For a case file (netCDF): the field to return (default ``elf_ref`` if
        present, else ``elf``, else the first 3D variable). For the other
        formats: the name given to the field (``"rho..."`` names mark
        densities, which matters for unit conversion in cube files).
    max_voxels : int, optional
        Refuse grids above this many voxels, checked on the declared grid before
        the values are decoded (default :func:`elfcore.io.validate.max_voxels`:
        ``$ELFCORE_MAX_VOXELS`` or 2**26).
    elf_range : {"warn", "error"} or None
        An ELF field (``elf``, ``elf_*``) with values outside [0, 1] is logged
        as a warning (default), refused with :class:`FormatError`, or (None)
        left to the caller.

    Returns
    -------
    xarray.DataArray
        A field as in ``docs/datamodel.md`` (dims ``a, b, c``, Å, no duplicated
        periodic plane); ``attrs["source_format"]`` names the format read.

    Raises
    ------
    UnknownFormatError
        Format not given and not recognised.
    FormatError
        The file does not follow the format (message gives path and line), its
        content fails :mod:`elfcore.io.validate` (cell, atoms, values, an ELF
        outside [0, 1]) or its grid is above the voxel limit.
    FileNotFoundError
        The path does not exist.
    """
    from .validate import check_field

    spec, stream, label = _load(source, format, max_voxels)
    field = _call_reader(getattr(_module(spec), f"read_{spec.name}"), stream, label, name=name,
                         **_limit_kwargs(spec, max_voxels))
    check_field(field, label, elf_range=elf_range)
    field.attrs["source_format"] = spec.name
    return field


def _limit_kwargs(spec: FormatSpec, max_voxels: int | None) -> dict:
    """Binary formats check their (lazily read) header against the voxel limit themselves."""
    return {"max_voxels": max_voxels} if spec.binary else {}


def read_case(source: Source, format: str | None = None, *, max_voxels: int | None = None,
              elf_range: str = "warn") -> xr.Dataset:
    """Read a case Dataset (``docs/datamodel.md``).

    A netCDF file gives its case; any other format gives a one-field case
    holding the field under its name (``elf``, ``rho``...).

    Raises
    ------
    UnknownFormatError, FormatError, FileNotFoundError
        As :func:`read_field` (``max_voxels`` and ``elf_range`` too).
    """
    from ..grid import field_atoms, make_case
    from .validate import check_case, check_field

    spec, stream, label = _load(source, format, max_voxels)
    module = _module(spec)
    if spec.case:
        case = _call_reader(module.read_case, stream, label, **_limit_kwargs(spec, max_voxels))
        check_case(case, label, elf_range=elf_range)
        case.attrs["source_format"] = spec.name
        return case
    field = _call_reader(getattr(module, f"read_{spec.name}"), stream, label, name=None,
                         **_limit_kwargs(spec, max_voxels))
    check_field(field, label, elf_range=elf_range)
    attrs = {k: v for k, v in field.attrs.items() if k not in ("cell", "positions", "numbers")}
    attrs["source_format"] = spec.name
    return make_case(field_atoms(field), {str(field.name): field.values}, attrs=attrs)


@contextlib.contextmanager
def _open_write(target: Source, binary: bool) -> Iterator[IO]:
    """Open ``target`` for writing; paths are written to a temporary file, then renamed."""
    if not isinstance(target, (str, os.PathLike)):
        if binary or isinstance(target, io.TextIOBase):
            yield target
        else:  # a binary stream for a text format
            wrapper = io.TextIOWrapper(target, encoding="ascii", errors="replace", newline="\n", write_through=True)
            yield wrapper
            wrapper.flush()
            wrapper.detach()
        return
    path = os.fspath(target)
    if path == "-":
        if binary:
            yield sys.stdout.buffer
        else:
            yield sys.stdout
        return
    from .validate import check_output_path

    check_output_path(path)
    _remove_orphans(path)
    _, comp = _strip_compression(path)
    tmp = f"{path}.part{os.getpid()}"
    try:
        if comp is not None:
            fh = comp.open(tmp, "wb" if binary else "wt",
                           **({} if binary else {"encoding": "ascii", "errors": "replace", "newline": "\n"}))
        else:
            fh = open(tmp, "wb") if binary else open(tmp, "w", encoding="ascii", errors="replace", newline="\n")
        with fh:
            yield fh
        os.replace(tmp, path)
    except OSError as exc:  # disk full, file-size limit, read-only: name the target, not the temporary file
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _remove_orphans(path: str) -> None:
    """Remove ``<path>.part<pid>`` files left by writers that were killed (their process is gone)."""
    folder = os.path.dirname(os.path.abspath(path))
    prefix = os.path.basename(path) + ".part"
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefix) and n[len(prefix):].isdigit()]
    except OSError:
        return
    for name in names:
        pid = int(name[len(prefix):])
        if pid == os.getpid() or _process_alive(pid):
            continue
        with contextlib.suppress(OSError):
            os.remove(os.path.join(folder, name))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _spec_for_write(target: Source, format: str | None) -> FormatSpec:
    spec = _get_spec(format)
    if spec is None:
        name = _format_from_name(_label(target)) if isinstance(target, (str, os.PathLike)) else None
        if name is None:
            raise UnknownFormatError(
                f"{_label(target)}: cannot tell the format from the name; known formats: {', '.join(FORMATS)}"
            )
        spec = FORMATS[name]
    return spec


def write_field(field: xr.DataArray, target: Source, format: str | None = None) -> None:
    """Write one field.

    Parameters
    ----------
    field : xarray.DataArray
        A valid field (``elfcore.grid.validate_field``).
    target : str, os.PathLike or file object
        Path (``.gz/.bz2/.xz`` compresses), ``"-"`` for stdout, or an open file.
    format : str, optional
        Format name; taken from the file name if omitted.

    Raises
    ------
    UnknownFormatError
        No format given and the name does not tell.
    GridError
        ``field`` is not a valid field.
    """
    from ..grid import validate_field

    validate_field(field)
    spec = _spec_for_write(target, format)
    writer = getattr(_module(spec), f"write_{spec.name}")
    with _open_write(target, spec.binary) as fh:
        writer(fh, field)


def write_case(
    case: xr.Dataset,
    target: Source,
    format: str | None = None,
    *,
    quantize: Mapping[str, str] | None = None,
    encoding: Mapping[str, Mapping] | None = None,
) -> None:
    """Write a case Dataset to a case format (netCDF).

    Parameters
    ----------
    case : xarray.Dataset
        A valid case (``elfcore.grid.validate_case``).
    target : str, os.PathLike or file object
        Destination.
    format : str, optional
        Default: from the name; must be a case format (``netcdf``).
    quantize : mapping of str to str, optional
        Store these fields as scaled integers, e.g. ``{"elf_ref": "uint16"}``
        (reads back as floats; error ≤ half a quantization step).
    encoding : mapping, optional
        Extra xarray encoding per variable (overrides the defaults).

    Raises
    ------
    UnknownFormatError
        The format cannot hold a case.
    """
    from ..grid import validate_case

    validate_case(case)
    spec = _spec_for_write(target, format)
    if not spec.case:
        case_formats = [s.name for s in FORMATS.values() if s.case]
        raise UnknownFormatError(
            f"format {spec.name!r} holds a single field, not a case; case formats: {', '.join(case_formats)}"
        )
    with _open_write(target, spec.binary) as fh:
        _module(spec).write_case(fh, case, quantize=quantize, encoding=encoding)
