"""A generated corpus of malformed input and the harness that runs it (used by ``tests/test_fuzz_corpus.py``).

Every case is built at run time from a small valid sample (nothing binary is
committed): the five field formats (cube, XSF, ELFCAR, CHGCAR, netCDF), app
uploads, model files, and ``elfcore predict`` runs (structures, grids, outputs).

Each case names what must happen:

``refuse``
    A one-line :class:`~elfcore.errors.ElfcoreError` (API) and exit code 1 with
    exactly one ``elfcore <cmd>: error: ...`` line on stderr (CLI); for uploads
    ``AppState.upload`` returns False with a one-line message.
``refuse_or_valid``
    Random byte flips: the same clean refusal, or a file that reads as a valid
    field (a flip inside a digit can give another valid file).
``warn``
    An ELF outside [0, 1]: ``elfcore info --json`` exits 0 and lists a warning;
    the strict reader (``elf_range="error"``) and the app's upload refuse it.
``handled``
    Odd upload names with valid content: no exception, a one-line message.

Run ``python -m tests.fuzz_corpus OUT.json [PART]`` (from the repository root; PART one of
:data:`PARTS`, default all) to run the cases in this process and write one result per case: outcome, message,
wall and CPU seconds and the growth of the process's peak RSS (MiB).
"""
from __future__ import annotations

import bz2
import contextlib
import gc
import gzip
import io
import json
import logging
import lzma
import os
import re
import resource
import struct
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field

import numpy as np

TEXT_FORMATS = ("cube", "xsf", "elfcar", "chgcar")
FORMATS = TEXT_FORMATS + ("netcdf",)
FILE_NAMES = {"cube": "f.cube", "xsf": "f.xsf", "elfcar": "ELFCAR", "chgcar": "CHGCAR", "netcdf": "f.nc"}
CELL = np.array([[3.0, 0.0, 0.0], [0.5, 3.0, 0.0], [0.2, 0.1, 3.0]])
SHAPE = (2, 3, 4)


@dataclass
class Case:
    """One malformed input.

    Attributes
    ----------
    id : str
        ``<group>-<format>-<mutation>``.
    group : str
        ``file``, ``upload``, ``model`` or ``predict``.
    expect : str
        ``refuse``, ``refuse_or_valid``, ``warn`` or ``handled``.
    name : str
        File name the bytes are stored under (format detection uses it).
    data : bytes
        The content.
    args : list
        ``predict`` cases: extra CLI arguments.
    """

    id: str
    group: str
    expect: str
    name: str
    data: bytes = b""
    args: list = field(default_factory=list)


#: The voxel limit the corpus runs under (``ELFCORE_MAX_VOXELS``): small, so that bombs sized to exceed the
#: byte budgets it implies stay cheap to build (the budgets scale with the limit; see elfcore.io.validate).
CORPUS_MAX_VOXELS = 2**20
_BOMBS: dict[str, bytes] = {}


def _bomb(kind: str) -> bytes:
    """A gzip member of 64 MiB of NUL bytes or 48 MiB of spaces (built once, about 2 s)."""
    if kind not in _BOMBS:
        fill, size = (b"\x00", 64) if kind == "nul" else (b" ", 48)
        comp = __import__("zlib").compressobj(9, 8, 31)
        chunk = fill * 2**20
        _BOMBS[kind] = b"".join([comp.compress(chunk) for _ in range(size)] + [comp.flush()])
    return _BOMBS[kind]


# --------------------------------------------------------------------------- valid samples
def _field(fmt: str):
    from elfcore.grid import make_field

    rng = np.random.default_rng(7)
    name = "rho" if fmt == "chgcar" else "elf"
    values = rng.random(SHAPE) * (0.9 if name == "elf" else 3.0) + 0.05
    return make_field(values, CELL, rng.random((2, 3)) @ CELL, [1, 1], name=name)


def sample(fmt: str) -> bytes:
    """A small valid file of ``fmt``."""
    from elfcore.io import write_field

    buf = io.BytesIO()
    write_field(_field(fmt), buf, format=fmt)
    return buf.getvalue()


# --------------------------------------------------------------------------- text mutations
def _lines(data: bytes) -> list[str]:
    return data.decode("latin-1").split("\n")


def _join(lines: list[str]) -> bytes:
    return "\n".join(lines).encode("latin-1")


def _set_token(data: bytes, line: int, tok: int, value: str) -> bytes:
    lines = _lines(data)
    toks = lines[line].split()
    toks[tok] = value
    lines[line] = " " + " ".join(toks)
    return _join(lines)


def _layout(fmt: str, data: bytes) -> dict:
    """Line numbers of the parts of a sample written by elfcore (atoms, cell, grid, first data line)."""
    lines = _lines(data)
    if fmt == "cube":
        return {"natoms": (2, 0), "atom": (6, 0), "pos": (6, 2), "cell": (3, 1), "grid": [(3, 0), (4, 0), (5, 0)],
                "data": 8}
    if fmt == "xsf":
        g = next(i for i, s in enumerate(lines) if "BEGIN_DATAGRID_3D" in s)
        return {"natoms": (6, 0), "atom": (7, 0), "pos": (7, 1), "cell": (g + 3, 0),  # the grid's spanning vector
                "grid": [(g + 1, 0), (g + 1, 1), (g + 1, 2)], "data": g + 6}
    g = next(i for i, s in enumerate(lines) if i > 8 and re.fullmatch(r"\s*\d+\s+\d+\s+\d+\s*", s))
    return {"natoms": (6, 0), "atom": (5, 0), "pos": (8, 0), "cell": (2, 0),
            "grid": [(g, 0), (g, 1), (g, 2)], "data": g + 1}


def _set_values(fmt: str, data: bytes, value: str) -> bytes:
    lay = _layout(fmt, data)
    lines = _lines(data)
    end = next((i for i, s in enumerate(lines) if "END_DATAGRID" in s), len(lines))
    for i in range(lay["data"], end):
        if lines[i].strip():
            lines[i] = re.sub(r"\S+", value, lines[i])
    return _join(lines)


def text_cases(fmt: str) -> list[Case]:
    """Deterministic malformed variants of a text format sample."""
    data = sample(fmt)
    lay = _layout(fmt, data)
    name = FILE_NAMES[fmt]
    out: list[tuple[str, str, bytes]] = []

    def add(tag, content, expect="refuse"):
        out.append((tag, expect, content))

    atom_line, atom_tok = lay["atom"]
    symbol = fmt in ("elfcar", "chgcar")
    for z in (["Xx", "Q", "999"] if symbol else ["999", "-5", "0", "119", "1.5"]):
        add(f"species-{z}", _set_token(data, atom_line, atom_tok, z))
    pos_line, pos_tok = lay["pos"]
    for v in ("nan", "inf", "-inf", "1e999", "x"):
        add(f"position-{v}", _set_token(data, pos_line, pos_tok, v))
    add("position-1e300", _set_token(data, pos_line, pos_tok, "1e300"))
    cell_line, cell_tok = lay["cell"]
    for v in ("1e200", "nan", "inf", "1e999", "0"):
        add(f"cell-{v}", _set_token(data, cell_line, cell_tok, v))
    lines = _lines(data)
    zero = list(lines)
    zero[cell_line] = " 0.0 0.0 0.0" if fmt != "cube" else f" {lines[cell_line].split()[0]} 0.0 0.0 0.0"
    add("cell-zero-vector", _join(zero))
    n_line, n_tok = lay["natoms"]
    n0 = int(_lines(data)[n_line].split()[n_tok])
    for n in (n0 + 1, n0 + 5, 10**9):
        add(f"natoms-{n}", _set_token(data, n_line, n_tok, str(n)))
    (gl, gt) = lay["grid"][0]
    for v in ("100000", "0", "-3" if fmt != "cube" else "x", "99999999999999999999"):
        add(f"grid-{v}", _set_token(data, gl, gt, v))
    big = data
    for line, tok in lay["grid"]:
        big = _set_token(big, line, tok, "100000")
    add("grid-100000^3", big)
    add("value-nan", _set_values(fmt, data, "nan"))
    add("value-inf", _set_values(fmt, data, "inf"))
    add("value-word", _set_values(fmt, data, "abc"))
    if fmt != "chgcar":
        add("elf-7.5", _set_values(fmt, data, "7.5"), "warn")
        add("elf-50", _set_values(fmt, data, "50"), "warn")
        add("elf-negative", _set_values(fmt, data, "-3"), "warn")
    lines = _lines(data)
    add("extra-values", _join(lines[: lay["data"]] + [lines[lay["data"]] + " 0.5 0.5"] + lines[lay["data"] + 1:]))
    add("empty", b"")
    add("blank", b" \n\t\n")
    add("nul-bytes", b"\x00" * 4096)
    add("binary-noise", np.random.default_rng(11).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    add("header-only", _join(_lines(data)[: lay["data"]]))
    for k in range(1, 20):
        add(f"truncated-{5 * k}pct", data[: len(data) * 5 * k // 100])
    # compression: bombs and corrupt streams (named .gz/.bz2/.xz or detected by magic)
    add("gz-nul-bomb", _bomb("nul"))
    add("gz-tail-bomb", gzip.compress(data) + _bomb("space"))  # two gzip members: a valid file, then 48 MiB
    add("gz-corrupt", gzip.compress(data)[:-20] + b"\x00" * 20)
    add("bz2-corrupt", bz2.compress(data)[:40])
    add("xz-corrupt", lzma.compress(data)[:60])
    cases = []
    for tag, expect, content in out:
        suffix = ""
        if tag.startswith("gz-"):
            suffix = ".gz"
        elif tag.startswith(("bz2-", "xz-")):
            suffix = "." + tag.split("-")[0]
        cases.append(Case(f"file-{fmt}-{tag}", "file", expect, name + suffix, content))
    rng = np.random.default_rng(100 + FORMATS.index(fmt))
    for k in range(10):
        b = bytearray(data)
        for _ in range(4):
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        cases.append(Case(f"file-{fmt}-flip{k}", "file", "refuse_or_valid", name, bytes(b)))
    return cases


# --------------------------------------------------------------------------- netCDF
def _nc(ds) -> bytes:
    """The case as netCDF-4 bytes, written by h5netcdf directly (xarray's encoding pass is slow)."""
    import h5netcdf
    import h5py

    buf = io.BytesIO()
    with h5netcdf.File(buf, "w", invalid_netcdf=True) as f:
        f.dimensions = {str(k): int(v) for k, v in ds.sizes.items()}
        for key, var in ds.variables.items():
            if key in ds.dims:
                continue
            values = np.asarray(var.values)
            if values.dtype.kind == "U":
                values = values.astype(object)
                f.create_variable(str(key), tuple(map(str, var.dims)), h5py.string_dtype(), data=values)
            else:
                f.create_variable(str(key), tuple(map(str, var.dims)), values.dtype, data=values)
    return buf.getvalue()


def _declared_bomb(n: int) -> bytes:
    """A netCDF case whose zlib-chunked field declares n³ float32 voxels but stores no chunk (a few KiB)."""
    import h5netcdf

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bomb.nc")
        with h5netcdf.File(path, "w") as f:
            f.dimensions = {"vec": 3, "xyz": 3, "atom": 1, "a": n, "b": n, "c": n}
            f.create_variable("cell", ("vec", "xyz"), "f8", data=CELL)
            f.create_variable("positions", ("atom", "xyz"), "f8", data=np.zeros((1, 3)))
            f.create_variable("numbers", ("atom",), "i8", data=np.ones(1, np.int64))
            f.create_variable("elf", ("a", "b", "c"), "f4", chunks=(min(n, 150),) * 3, compression="gzip",
                              fillvalue=np.float32(0.5))
        with open(path, "rb") as fh:
            return fh.read()


def netcdf_cases() -> list[Case]:
    from elfcore.io.netcdf import field_to_case

    base = field_to_case(_field("netcdf"))
    n = base.sizes["atom"]

    def with_var(key, dims, values):
        ds = base.copy()
        if key in ds:
            ds = ds.drop_vars(key)
        return _nc(ds.assign({key: (dims, values)}))

    grid = ("a", "b", "c")
    out = {
        "species-999": with_var("numbers", ("atom",), np.full(n, 999)),
        "species-minus5": with_var("numbers", ("atom",), np.full(n, -5)),
        "species-0": with_var("numbers", ("atom",), np.zeros(n, int)),
        "species-float": with_var("numbers", ("atom",), np.full(n, 1.5)),
        "species-count-5-for-2": with_var("numbers", ("n5",), np.ones(5, int)),
        "position-nan": with_var("positions", ("atom", "xyz"), np.full((n, 3), np.nan)),
        "position-inf": with_var("positions", ("atom", "xyz"), np.full((n, 3), np.inf)),
        "position-shape-n2": with_var("positions", ("atom", "two"), np.ones((n, 2))),
        "position-string": with_var("positions", ("atom", "xyz"), np.full((n, 3), "x")),
        "cell-1e200": with_var("cell", ("vec", "xyz"), np.eye(3) * 1e200),
        "cell-nan": with_var("cell", ("vec", "xyz"), np.full((3, 3), np.nan)),
        "cell-zero": with_var("cell", ("vec", "xyz"), np.zeros((3, 3))),
        "cell-shape-2x2": with_var("cell", ("v2", "x2"), np.eye(2)),
        "field-string": with_var("elf", grid, np.full(SHAPE, "x")),
        "field-complex": with_var("elf", grid, np.full(SHAPE, 0.5 + 0.5j)),
        "field-bool": with_var("elf", grid, np.ones(SHAPE, bool)),
        "field-nan": with_var("elf", grid, np.full(SHAPE, np.nan)),
        "no-field": _nc(base.drop_vars("elf")),
        "no-cell": _nc(base.drop_vars("cell")),
        "no-numbers": _nc(base.drop_vars("numbers")),
    }
    expect = {k: "refuse" for k in out}
    out["elf-7.5"] = with_var("elf", grid, np.full(SHAPE, 7.5))
    out["elf-50"] = with_var("elf", grid, np.full(SHAPE, 50.0))
    expect.update({"elf-7.5": "warn", "elf-50": "warn"})
    out["zlib-bomb-450^3"] = _declared_bomb(450)
    out["zlib-bomb-120^3"] = _declared_bomb(120)  # above the corpus limit, far below the default one
    expect["zlib-bomb-450^3"] = expect["zlib-bomb-120^3"] = "refuse"
    valid = _nc(base)
    for k in range(1, 13):
        out[f"truncated-{8 * k}pct"] = valid[: len(valid) * 8 * k // 100]
        expect[f"truncated-{8 * k}pct"] = "refuse"
    for tag, content in (("empty", b""), ("signature-only", b"\x89HDF\r\n\x1a\n"), ("classic-junk", b"CDF\x01" + b"\xff" * 64),
                         ("nul-bytes", b"\x00" * 4096)):
        out[tag] = content
        expect[tag] = "refuse"
    cases = [Case(f"file-netcdf-{k}", "file", expect[k], "f.nc", v) for k, v in out.items()]
    cases.append(Case("file-netcdf-gz-nul-bomb", "file", "refuse", "f.nc.gz", _bomb("nul")))
    cases.append(Case("file-netcdf-gz-hdf5-bomb", "file", "refuse", "f.nc.gz", gzip.compress(valid) + _bomb("nul")))
    rng = np.random.default_rng(99)
    for k in range(12):  # header bit flips (the HDF5 superblock and object headers sit in the first 2 KiB)
        b = bytearray(valid)
        for _ in range(3):
            b[int(rng.integers(0, min(len(b), 2048)))] = int(rng.integers(0, 256))
        cases.append(Case(f"file-netcdf-flip{k}", "file", "refuse_or_valid", "f.nc", bytes(b)))
    return cases


# --------------------------------------------------------------------------- uploads
def upload_cases(file_cases: list[Case]) -> list[Case]:
    """Malformed files through ``AppState.upload`` (one per file mutation kind), plus odd names."""
    out = []
    pattern = r"species-(999|Xx|minus5)|position-(nan|inf|shape)|cell-(1e200|nan|inf)|grid-100000\^3|bomb|field-|elf-7|nul-bytes|truncated-50"
    for case in file_cases:
        if case.expect in ("refuse", "warn") and re.search(pattern, case.id):
            out.append(Case(case.id.replace("file-", "upload-", 1), "upload", "refuse", case.name, case.data))
    bad = sample("cube")[:200]
    for tag, name in (("nul-name", "ev\x00il.cube"), ("long-name", "x" * 300 + ".cube"),
                      ("path-name", "../../etc/f.cube"), ("dots", ".."), ("unicode", "é\u202e.cube"),
                      ("control", "a\r\nb.cube"), ("empty-name", ""), ("only-suffix", ".cube")):
        out.append(Case(f"upload-{tag}-bad-content", "upload", "refuse", name, bad))
    good = sample("cube")
    for tag, name in (("nul-name", "ok\x00.cube"), ("long-name", "y" * 300 + ".cube")):
        out.append(Case(f"upload-{tag}-valid-content", "upload", "handled", name, good))
    out.append(Case("upload-empty-data", "upload", "refuse", "f.cube", b""))
    out.append(Case("upload-unknown-type", "upload", "refuse", "f.exe", b"MZ" + b"\x00" * 100))
    out.append(Case("upload-over-cap", "upload", "refuse", "f.cube", b"0" * (64 * 2**20 + 1)))
    return out


# --------------------------------------------------------------------------- model files
def _model_bytes() -> tuple[dict, dict, bytes]:
    from elfcore.descriptor import DescriptorSettings
    from elfcore.models import save_model
    from elfcore.reproduce.bench import timing_model

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.safetensors")
        save_model(timing_model(DescriptorSettings(r_cut=2.0, n_radial=2, l_max=1), width=8), path)
        raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["elfcore"])
    return header, meta, raw[8 + n :]


def _pack(header: dict, meta: dict | None, body: bytes) -> bytes:
    header = json.loads(json.dumps(header))
    if meta is not None:
        header["__metadata__"] = {"elfcore": json.dumps(meta)}
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def model_cases() -> list[Case]:
    header, meta, body = _model_bytes()
    out: dict[str, bytes] = {}

    def spec(**change):
        m = json.loads(json.dumps(meta))
        m["model"].update(change)
        return _pack(header, m, body)

    for key, values in (("width", [200000, 0, -1, "8", 8.5, None, 10**30]), ("hidden_layers", [10000, 0, 3]),
                        ("n_features", [10**9, 1, 7])):
        for v in values:
            out[f"{key}-{v}"] = spec(**{key: v})
    for v in (0, 10**6):
        m = json.loads(json.dumps(meta))
        m["model_class"] = "Ensemble"
        m["model"]["n_members"] = v
        out[f"ensemble-n_members-{v}"] = _pack(header, m, body)
    for key, value in (("model_class", "Evil"), ("model_class", "CNN"), ("schema_version", 2)):
        m = dict(meta, **{key: value})
        out[f"{key}-{value}"] = _pack(header, m, body)
    for key, value in (("l_max", 99), ("r_cut", -1.0), ("sigma", 0.0), ("n_radial", "two"), ("extra", 1)):
        m = json.loads(json.dumps(meta))
        m["descriptor"][key] = value
        out[f"descriptor-{key}-{value}"] = _pack(header, m, body)
    m = json.loads(json.dumps(meta))
    m["model_class"] = "Ensemble"
    m["model"]["n_members"] = 4
    out["ensemble-without-member-tensors"] = _pack(header, m, body)
    first = next(k for k in header if k != "__metadata__" and "weight" in k)
    for tag, change in (("dtype-I64", {"dtype": "I64"}), ("dtype-C64", {"dtype": "C64"}), ("dtype-bogus", {"dtype": 7}),
                        ("shape-negative", {"shape": [-8, 4]}), ("shape-huge", {"shape": [200000, 200000]}),
                        ("shape-mismatch", {"shape": [4, 2]}), ("offsets-beyond", {"data_offsets": [0, 10**12]}),
                        ("offsets-reversed", {"data_offsets": [64, 0]}), ("offsets-string", {"data_offsets": "0-8"}),
                        ("entry-not-object", None)):
        h = json.loads(json.dumps(header))
        h[first] = "x" if change is None else {**h[first], **change}
        out[f"tensor-{tag}"] = _pack(h, None, body)
    h = json.loads(json.dumps(header))
    other = next(k for k in header if k not in ("__metadata__", first))
    h[other]["data_offsets"] = list(h[first]["data_offsets"])
    h[other]["shape"] = h[first]["shape"]
    out["tensors-overlap"] = _pack(h, None, body)
    h = json.loads(json.dumps(header))
    del h["__metadata__"]
    out["no-elfcore-header"] = _pack(h, None, body)
    h["__metadata__"] = {"elfcore": "{not json"}
    out["header-not-json"] = _pack(h, None, body)
    valid = _pack(header, meta, body)
    out["nan-weights"] = valid[: len(valid) - 4] + struct.pack("<f", float("nan"))
    out["inf-weights"] = valid[: len(valid) - 4] + struct.pack("<f", float("inf"))
    out["header-length-2^60"] = struct.pack("<Q", 2**60) + valid[8:]
    out["header-length-beyond-file"] = struct.pack("<Q", len(valid)) + valid[8:]
    out["json-list"] = struct.pack("<Q", 2) + b"[]"
    out["empty"] = b""
    out["seven-bytes"] = b"\x01" * 7
    out["noise"] = np.random.default_rng(5).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    for k in range(1, 10):
        out[f"truncated-{10 * k}pct"] = valid[: len(valid) * 10 * k // 100]
    return [Case(f"model-{k}", "model", "refuse", "m.safetensors", v) for k, v in out.items()]


# --------------------------------------------------------------------------- predict runs
def _poscar(positions, cell, symbols="H") -> bytes:
    lines = ["fuzz", "1.0"] + [" ".join(f"{x:.8f}" for x in row) for row in cell]
    lines += [symbols, str(len(positions)), "Cartesian"] + [" ".join(f"{x:.8f}" for x in p) for p in positions]
    return ("\n".join(lines) + "\n").encode()


def predict_cases() -> list[Case]:
    ok = _poscar(np.array([[0.0, 0.0, 0.0], [0.74, 0.0, 0.0], [1.5, 1.5, 1.5]]), np.eye(3) * 3.0)
    out = [
        Case("predict-overlapping-atoms", "predict", "refuse", "POSCAR",
             _poscar(np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]), np.eye(3) * 3.0)),
        Case("predict-atoms-0.05A-apart", "predict", "refuse", "POSCAR",
             _poscar(np.array([[0.5, 0.5, 0.5], [0.55, 0.5, 0.5]]), np.eye(3) * 3.0)),
        Case("predict-image-overlap", "predict", "refuse", "POSCAR",
             _poscar(np.array([[0.0, 0.0, 0.0], [2.99, 0.0, 0.0]]), np.eye(3) * 3.0)),
        Case("predict-cell-0.1A", "predict", "refuse", "POSCAR", _poscar(np.zeros((1, 3)), np.eye(3) * 0.1),
             ["--grid", "4"]),
        Case("predict-cell-thin", "predict", "refuse", "POSCAR", _poscar(np.zeros((1, 3)), np.diag([3.0, 3.0, 0.2])),
             ["--grid", "4"]),
        Case("predict-cell-1e200", "predict", "refuse", "POSCAR", _poscar(np.zeros((1, 3)), np.eye(3) * 1e200)),
        Case("predict-unknown-element", "predict", "refuse", "POSCAR",
             _poscar(np.zeros((1, 3)), np.eye(3) * 3, symbols="Xx")),
        Case("predict-no-atoms", "predict", "refuse", "POSCAR", _poscar(np.zeros((0, 3)), np.eye(3) * 3)),
    ]
    for spacing in ("inf", "nan", "-1", "0", "50", "1e300"):
        out.append(Case(f"predict-spacing-{spacing}", "predict", "refuse", "POSCAR", ok, [f"--spacing={spacing}"]))
    for grid in ("0", "1,2", "a", "-4", "100000"):
        out.append(Case(f"predict-grid-{grid}", "predict", "refuse", "POSCAR", ok, [f"--grid={grid}"]))
    for tag, target in (("missing-directory", "{tmp}/no/such/dir/out.cube"), ("out-is-directory", "{tmp}"),
                        ("out-under-proc", "/proc/elfcore-fuzz.cube"), ("nul-in-name", "{tmp}/a\x00b.cube"),
                        ("unknown-format", "{tmp}/out.unknownext")):
        out.append(Case(f"predict-{tag}", "predict", "refuse", "POSCAR", ok, ["--grid", "4", "--out", target]))
    return out


def all_cases() -> list[Case]:
    """The whole corpus (deterministic)."""
    files = [c for fmt in TEXT_FORMATS for c in text_cases(fmt)] + netcdf_cases()
    return files + upload_cases(files) + model_cases() + predict_cases()


#: Parts of the corpus that run in separate interpreters (in parallel): name → case builder.
PARTS = {
    **{fmt: (lambda fmt=fmt: text_cases(fmt)) for fmt in TEXT_FORMATS},
    "netcdf": netcdf_cases,
    "upload": lambda: upload_cases([c for fmt in TEXT_FORMATS for c in text_cases(fmt)] + netcdf_cases()),
    "model": model_cases,
    "predict": predict_cases,
}


# --------------------------------------------------------------------------- harness
class _Capture(io.StringIO):
    pass


#: stderr lines that are ordinary logs, not part of an error report.
_LOG_LINES = re.compile(r"^(predicting ELF on|wrote |atoms \d+ and \d+ are|atom \d+ and its image are)")


def _one_line_error(text: str, command: str) -> bool:
    """Exactly one ``elfcore <command>: error:`` line; anything else only ordinary log lines."""
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"elfcore {command}: error: ")]
    others = [line for line in lines if line not in errors and not _LOG_LINES.match(line)]
    return len(errors) == 1 and not others


def _cli(argv: list[str], buf: _Capture) -> tuple[int, str, str]:
    from elfcore.cli import main

    out = io.StringIO()
    buf.seek(0)
    buf.truncate()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(buf):
        rc = main(argv)
        if any(a.endswith((".nc", ".nc.gz")) for a in argv):
            gc.collect()  # unraisable errors of half-built h5netcdf objects land in this case's stderr
    return rc, out.getvalue(), buf.getvalue()


def _api(call) -> tuple[str, str]:
    from elfcore.errors import ElfcoreError

    try:
        call()
    except ElfcoreError as exc:
        return "refused", str(exc)
    return "accepted", ""


def run_case(case: Case, tmp: str, model_path: str, state, buf: _Capture) -> dict:
    """Run one case; return ``{"ok": bool, "outcome": str, "message": str}``."""
    from elfcore.io import read_field
    from elfcore.models.io import load_model

    path = os.path.join(tmp, case.name) if case.group != "upload" else None
    if path is not None:
        with open(path, "wb") as fh:
            fh.write(case.data)
    if case.group == "file":
        rc, stdout, stderr = _cli(["info", "--json", path], buf)
        if case.expect == "warn":
            strict, message = _api(lambda: read_field(path, elf_range="error"))
            info = json.loads(stdout) if rc == 0 else {}
            ok = rc == 0 and bool(info.get("warnings")) and strict == "refused" and "\n" not in message
            return {"ok": ok, "outcome": "warned" if ok else f"rc={rc}", "message": message or stderr.strip()}
        if rc == 1:
            api, message = _api(lambda: read_field(path))
            ok = _one_line_error(stderr, "info") and api == "refused" and "\n" not in message.strip()
            return {"ok": ok, "outcome": "refused", "message": stderr.strip()}
        if rc == 0 and case.expect == "refuse_or_valid":
            from elfcore.grid import validate_field

            validate_field(read_field(path))
            return {"ok": "Traceback" not in stderr, "outcome": "valid", "message": ""}
        return {"ok": False, "outcome": f"rc={rc}", "message": stderr[-500:]}
    if case.group == "upload":
        before = state.case
        loaded = state.upload(case.name, case.data)
        message = state.message
        one_line = "\n" not in message and bool(message)
        if case.expect == "handled":
            return {"ok": one_line, "outcome": "loaded" if loaded else "refused", "message": message}
        ok = loaded is False and one_line and state.case == before
        return {"ok": ok, "outcome": "refused" if not loaded else "loaded", "message": message}
    if case.group == "model":
        api, message = _api(lambda: load_model(path))
        rc, _, stderr = _cli(["predict", os.path.join(os.path.dirname(tmp), "ok.POSCAR"), "--model", path,
                              "--grid", "4", "--device", "cpu", "--no-progress", "--out", os.path.join(tmp, "o.cube")],
                             buf)
        ok = (api == "refused" and "\n" not in message and rc == 1 and _one_line_error(stderr, "predict")
              and "file not found" not in stderr)
        return {"ok": ok, "outcome": "refused" if ok else f"api={api} rc={rc}", "message": stderr.strip()}
    args = [a.format(tmp=tmp) for a in case.args]
    if "--out" not in args:
        args += ["--out", os.path.join(tmp, "pred.cube")]
    rc, _, stderr = _cli(["predict", path, "--model", model_path, "--device", "cpu", "--no-progress"] + args, buf)
    parts = [n for n in os.listdir(tmp) if ".part" in n]
    ok = rc == 1 and _one_line_error(stderr, "predict") and not parts
    return {"ok": ok, "outcome": "refused" if rc == 1 else f"rc={rc}", "message": stderr.strip()}


def _model(tmp: str) -> str:
    from elfcore.descriptor import DescriptorSettings
    from elfcore.models import save_model
    from elfcore.reproduce.bench import timing_model

    path = os.path.join(tmp, "valid.safetensors")
    save_model(timing_model(DescriptorSettings(r_cut=2.0, n_radial=2, l_max=1), width=8), path)
    return path


#: Peak RSS (MiB) once elfcore, torch and the app state are loaded, before the first case.
READY_RSS_MIB: list[float] = []


def run_all(cases: list[Case], log_path: str | None = None) -> list[dict]:
    """Run every case in this process; per case: id, group, expect, ok, outcome, message, seconds, rss_growth_mib."""
    from app.pipeline import ElfcoreEngine, Pipeline
    from app.state import AppState

    buf = _Capture()
    handler = logging.StreamHandler(buf)
    logging.basicConfig(level=logging.INFO, handlers=[handler], format="%(message)s", force=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="elfcore-fuzz-") as tmp:
        model_path = _model(tmp)
        with open(os.path.join(tmp, "ok.POSCAR"), "wb") as fh:
            fh.write(_poscar(np.array([[0.0, 0.0, 0.0], [0.74, 0.0, 0.0]]), np.eye(3) * 3.0))
        empty = os.path.join(tmp, "no-cases")
        os.mkdir(empty)
        state = AppState(pipeline=Pipeline(engine=ElfcoreEngine(device="cpu"), data_dir=__import__("pathlib").Path(empty)))
        case_dir = os.path.join(tmp, "cases")
        READY_RSS_MIB.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        for case in cases:
            os.makedirs(case_dir, exist_ok=True)
            peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                res = run_case(case, case_dir, model_path, state, buf)
            except BaseException as exc:  # a case that escapes the error family is a failure, reported in full
                res = {"ok": False, "outcome": f"raised {type(exc).__name__}",
                       "message": "".join(traceback.format_exception(exc))[-1500:]}
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak0) / 1024
            for name in os.listdir(case_dir):
                os.remove(os.path.join(case_dir, name))
            results.append({"id": case.id, "group": case.group, "expect": case.expect, **res,
                            "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
                            "rss_growth_mib": round(growth, 1)})
            if log_path:
                with open(log_path, "a") as fh:
                    fh.write(json.dumps(results[-1]) + "\n")
    return results


if __name__ == "__main__":
    os.environ["ELFCORE_MAX_VOXELS"] = str(CORPUS_MAX_VOXELS)
    started = time.perf_counter()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if len(sys.argv) > 2:
        corpus = PARTS[sys.argv[2]]()
    else:  # interleave the parts so that a partial run already covers all of them
        parts = [builder() for builder in PARTS.values() if builder is not PARTS["upload"]]
        files = [c for p in parts for c in p if c.group == "file"]
        parts.append(upload_cases(files))
        corpus = [p[i] for i in range(max(map(len, parts))) for p in parts if i < len(p)]
    out = run_all(corpus, sys.argv[1] + ".log")
    summary = {"cases": len(out), "seconds": round(time.perf_counter() - started, 1),
               "cpu_seconds": round(time.process_time(), 1),
               "start_rss_mib": round(base_rss, 1), "baseline_rss_mib": round(READY_RSS_MIB[0], 1),
               "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    with open(sys.argv[1], "w") as fh:
        json.dump({"summary": summary, "results": out}, fh, indent=1)
