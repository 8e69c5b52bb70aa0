"""Describe a field file: format, cell, atoms by species, grid shape and spacing,
min/mean/max of every field, and whether the last grid plane duplicates the first.

FILE is any format elfcore reads (ELFCAR, CHGCAR, cube, XSF, netCDF case; also
compressed with .gz/.bz2/.xz). For a netCDF case every field is described.
"""
from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

__all__ = ["add_arguments", "run", "render", "describe"]

_AXES = "abc"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments and options."""
    parser.add_argument("file", metavar="FILE", help="field or case file")
    parser.add_argument("--format", default=None, help="file format (default: from name and content)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def describe(path: str, format: str | None = None) -> dict:
    """Summary of a field or case file as a JSON-ready dict.

    Keys: ``path, format, shape, cell, volume, lengths, angles, natoms, species,
    spacing, field`` (the main field), ``min, mean, max`` (of the main field),
    ``fields`` (``{name: {min, mean, max, std}}``), ``periodic_plane``
    (``dropped``: axes whose duplicated last plane the reader removed;
    ``last_equals_first``: axes whose last plane still repeats the first
    exactly), ``warnings`` (e.g. an ELF field outside [0, 1]), ``attrs``.
    """
    from ase.data import chemical_symbols

    from ..io import read_case
    from ..io._text import duplicate_plane_axes
    from ..io.validate import ELF_TOLERANCE, is_elf_name
    from ..jsonsafe import to_jsonable

    ds = read_case(path, format=format, elf_range=None)  # an out-of-range ELF is reported in "warnings"
    fields = [str(k) for k, v in ds.data_vars.items() if tuple(v.dims) == ("a", "b", "c")]
    main = next((f for f in ("elf_ref", "elf") if f in fields), fields[0])
    cell = np.asarray(ds["cell"].values, dtype=np.float64)
    shape = [int(ds.sizes[d]) for d in _AXES]
    lengths = np.linalg.norm(cell, axis=1)
    angles = [
        float(np.degrees(np.arccos(np.clip(cell[j] @ cell[k] / (lengths[j] * lengths[k]), -1, 1))))
        for j, k in ((1, 2), (0, 2), (0, 1))
    ]
    numbers = np.asarray(ds["numbers"].values, dtype=int)
    species = {chemical_symbols[z]: int(c) for z, c in sorted(Counter(numbers.tolist()).items())}
    stats = {}
    remaining: set[str] = set()
    for name in fields:
        vals = np.asarray(ds[name].values, dtype=np.float64)
        stats[name] = {
            "min": float(vals.min()),
            "mean": float(vals.mean()),
            "max": float(vals.max()),
            "std": float(vals.std()),
        }
        remaining.update(_AXES[ax] for ax in duplicate_plane_axes(vals))
    warnings = [f"field {name!r} spans {st['min']:.4g} … {st['max']:.4g}; an ELF lies in [0, 1]"
                for name, st in stats.items()
                if is_elf_name(name) and (st["min"] < -ELF_TOLERANCE or st["max"] > 1 + ELF_TOLERANCE)]
    dropped = [a for a in str(ds.attrs.get("duplicate_plane_dropped", "")).split(",") if a]
    attrs = to_jsonable({k: v for k, v in ds.attrs.items() if k != "duplicate_plane_dropped"})
    return {
        "path": str(path),
        "format": str(ds.attrs.get("source_format", format or "")),
        "shape": shape,
        "cell": cell.tolist(),
        "volume": float(abs(np.linalg.det(cell))),
        "lengths": lengths.tolist(),
        "angles": angles,
        "natoms": int(len(numbers)),
        "species": species,
        "spacing": (lengths / np.asarray(shape)).tolist(),
        "field": main,
        "min": stats[main]["min"],
        "mean": stats[main]["mean"],
        "max": stats[main]["max"],
        "fields": stats,
        "periodic_plane": {"dropped": dropped, "last_equals_first": sorted(remaining)},
        "warnings": warnings,
        "attrs": attrs,
    }


def _text(info: dict) -> str:
    lines = [f"file     {info['path']}", f"format   {info['format']}"]
    lines.append("cell (Å) " + "   ".join(
        "[" + " ".join(f"{x:9.4f}" for x in row) + "]" for row in info["cell"]))
    lines.append("         |a| |b| |c| = " + " ".join(f"{x:.4f}" for x in info["lengths"])
                 + " Å   α β γ = " + " ".join(f"{x:.2f}" for x in info["angles"])
                 + f"°   V = {info['volume']:.4f} Å³")
    spec = " ".join(f"{s}{n}" for s, n in info["species"].items()) or "none"
    lines.append(f"atoms    {info['natoms']} ({spec})")
    lines.append("grid     " + " x ".join(map(str, info["shape"])) + "   spacing "
                 + " ".join(f"{x:.4f}" for x in info["spacing"]) + " Å")
    for name, st in info["fields"].items():
        mark = " *" if name == info["field"] and len(info["fields"]) > 1 else ""
        lines.append(f"field    {name:<10} min {st['min']:.6g}  mean {st['mean']:.6g}  max {st['max']:.6g}"
                     f"  std {st['std']:.6g}{mark}")
    pp = info["periodic_plane"]
    if pp["dropped"]:
        msg = f"the file repeats its first plane as the last along {','.join(pp['dropped'])}; dropped on read"
    else:
        msg = "no duplicated periodic plane in the file"
    if pp["last_equals_first"]:
        msg += f"; after reading, the last plane still equals the first along {','.join(pp['last_equals_first'])}"
    lines.append(f"periodic {msg}")
    lines += [f"warning  {w}" for w in info.get("warnings", [])]
    attrs = info["attrs"]
    if attrs.get("duplicate_plane_mismatch"):
        lines.append(f"warning  the dropped boundary plane differs from the first along {attrs['duplicate_plane_mismatch']}"
                     " (grid not periodic?)")
    if int(attrs.get("vasp_blocks", 1) or 1) > 1:
        lines.append(f"note     {attrs['vasp_blocks']} data blocks (spin); block {attrs.get('vasp_block', 0)} shown")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    """The :func:`describe` dict of FILE."""
    return describe(args.file, format=args.format)


def render(info: dict, args: argparse.Namespace) -> str:
    """The readable form of :func:`describe`'s dict."""
    return _text(info)
