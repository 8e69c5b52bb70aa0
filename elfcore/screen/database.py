"""The results database of a screening run (an ASE database, :mod:`ase.db`).

One row per frame, keyed by ``source`` (absolute path of the input file) and
``frame`` (index in that file), holding the frame's structure and as key-value
pairs: ``status`` ("ok", "skipped": the frame cannot be screened, "failed": the
computation raised), ``reason``, the topology numbers of
:func:`elfcore.screen.task.screen_frame`, ``pressure_gpa``/``time_fs``/``md_step``
when the input gives them, and ``model``, ``spacing``, ``elfcore_version``. Lists
(percolation thresholds of the members, grid) go into the row's ``data``. The
database's metadata (``metadata["elfcore_screen"]``) holds the run settings and the
model identity; a run with other settings refuses to write into it.

A database is a SQLite file by default (any name; ``.json`` names give ase's JSON
backend) or a ``postgresql://`` URL.
"""
from __future__ import annotations

import csv
import os
from typing import Iterable

import numpy as np

from ..errors import ElfcoreError
from ..jsonsafe import to_jsonable

__all__ = [
    "connect",
    "check_metadata",
    "done_frames",
    "write_frame",
    "read_records",
    "results_dataset",
    "read_frames",
    "export_csv",
    "COLUMNS",
]

#: key-value columns of a row, in the order of :func:`export_csv`
COLUMNS = (
    "source", "frame", "status", "reason", "phi", "phi_std", "phi_grid", "threshold_1d", "threshold_2d",
    "threshold_3d", "molecularity", "phi_star", "n_molecules", "elf_min", "elf_max", "elf_mean", "elf_std",
    "elf_spread", "n_members", "pressure_gpa", "time_fs", "md_step", "n_atoms", "volume_a3", "grid",
    "seconds_predict", "seconds_topology", "worker", "field_file", "model", "spacing", "elfcore_version",
)

#: numeric columns of :func:`results_dataset`
_NUMERIC = (
    "phi", "phi_std", "phi_grid", "threshold_1d", "threshold_2d", "threshold_3d", "molecularity", "phi_star",
    "n_molecules", "elf_min", "elf_max", "elf_mean", "elf_std", "elf_spread", "n_members", "pressure_gpa",
    "time_fs", "md_step", "n_atoms", "volume_a3", "seconds_predict", "seconds_topology",
)

_DONE = ("ok", "skipped")


def connect(db):
    """Open (or create) a results database.

    Parameters
    ----------
    db : str, os.PathLike or ase.db.core.Database
        SQLite file (any name), ``.json`` file, ``postgresql://`` URL, or an open database.
    """
    import ase.db
    from ase.db.core import Database

    if isinstance(db, Database):
        return db
    name = os.fspath(db)
    if name.startswith(("postgresql://", "postgres://")):
        return ase.db.connect(name)
    kind = "json" if name.endswith(".json") else "db"
    return ase.db.connect(name, type=kind)


def check_metadata(db, run: dict) -> None:
    """Store the run settings in the database, or refuse when it holds another run's.

    Parameters
    ----------
    db : database (see :func:`connect`)
    run : dict
        JSON-ready settings and model identity of the run (compared key by key,
        ``elfcore_version`` excepted).

    Raises
    ------
    ElfcoreError
        The database was written with other settings or another model.
    """
    db = connect(db)
    meta = dict(db.metadata or {})
    old = meta.get("elfcore_screen")
    if old is not None:
        keys = (set(old) | set(run)) - {"elfcore_version"}
        diff = sorted(k for k in keys if old.get(k) != run.get(k))
        if diff:
            where = getattr(db, "filename", "the database")
            details = "; ".join(f"{k}: {old.get(k)!r} there, {run.get(k)!r} now" for k in diff)
            raise ElfcoreError(f"{where} holds a screening run with other settings ({details}); use another --db")
        return
    meta["elfcore_screen"] = run
    db.metadata = meta


def done_frames(db) -> set[tuple[str, int]]:
    """(source, frame) of the rows a re-run does not compute again ("ok" and "skipped")."""
    db = connect(db)
    out = set()
    for row in db.select():
        kv = row.key_value_pairs
        if kv.get("status") in _DONE:
            out.add((kv["source"], int(kv["frame"])))
    return out


def write_frame(db, atoms, record: dict) -> int:
    """Write one frame's row (replacing an earlier row of the same key that did not finish).

    Parameters
    ----------
    db : database (see :func:`connect`)
    atoms : ase.Atoms or None
        The frame's structure (None for a file that could not be read).
    record : dict
        ``source``, ``frame``, ``status`` and any of :data:`COLUMNS`; scalars go
        into key-value pairs (None and NaN are left out), lists into ``data``.

    Returns
    -------
    int
        Row id.
    """
    from ase import Atoms

    db = connect(db)
    kvp, data = {}, {}
    for key, value in record.items():
        if isinstance(value, (list, tuple, dict, np.ndarray)):
            data[key] = value if isinstance(value, dict) else np.asarray(
                [np.nan if v is None else v for v in value], dtype=float)
            if key == "grid":
                kvp["grid"] = "x".join(str(int(n)) for n in value)
            continue
        value = to_jsonable(value) if isinstance(value, (str, int, float, np.generic)) else None
        if isinstance(value, (str, int, float)):  # a column scalar (NaN became None: left out)
            kvp[key] = value
    atoms = Atoms() if atoms is None else atoms
    if len(atoms):
        kvp.setdefault("n_atoms", len(atoms))
        if abs(np.linalg.det(np.asarray(atoms.cell[:], dtype=float))) > 1e-8:
            kvp.setdefault("volume_a3", float(atoms.get_volume()))
    atoms = atoms.copy()  # drops a calculator: only the structure is stored
    old = [row.id for row in db.select(source=kvp["source"], frame=int(kvp["frame"]))]
    if old:
        db.delete(old)
    return db.write(atoms, key_value_pairs=kvp, data=data or None)


def read_records(db, *, status: str | Iterable[str] | None = None) -> list[dict]:
    """Rows of a results database as plain dicts, sorted by source and frame.

    Parameters
    ----------
    db : database (see :func:`connect`)
    status : str or iterable of str, optional
        Keep only these statuses ("ok", "skipped", "failed").

    Returns
    -------
    list of dict
        The key-value pairs of each row plus ``id`` and ``data`` (dict of lists).
    """
    db = connect(db)
    wanted = {status} if isinstance(status, str) else (set(status) if status is not None else None)
    rows = []
    for row in db.select():
        kv = dict(row.key_value_pairs)
        if wanted is not None and kv.get("status") not in wanted:
            continue
        kv["id"] = row.id
        kv["data"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in dict(row.data).items()}
        rows.append(kv)
    rows.sort(key=lambda r: (str(r.get("source", "")), int(r.get("frame", -1))))
    return rows


def results_dataset(db, *, status: str | Iterable[str] | None = "ok"):
    """A results database as an :class:`xarray.Dataset` over one dimension ``frame``.

    Parameters
    ----------
    db : database (see :func:`connect`)
    status : str or iterable of str, optional
        Rows to keep (default "ok"; None keeps all).

    Returns
    -------
    xarray.Dataset
        dim ``frame`` (rows sorted by source and frame index); coords ``source``,
        ``frame_index``, ``status``, ``reason``, ``row_id`` (to fetch the structure
        with ``connect(db).get_atoms(id=...)``); float variables for each numeric
        column (NaN where a row has no value); attrs: the run settings
        (``metadata["elfcore_screen"]`` as JSON).
    """
    import json

    import xarray as xr

    rows = read_records(db, status=status)
    n = len(rows)
    coords = {
        "source": ("frame", np.array([str(r.get("source", "")) for r in rows], dtype=object)),
        "frame_index": ("frame", np.array([int(r.get("frame", -1)) for r in rows], dtype=np.int64)),
        "status": ("frame", np.array([str(r.get("status", "")) for r in rows], dtype=object)),
        "reason": ("frame", np.array([str(r.get("reason", "")) for r in rows], dtype=object)),
        "row_id": ("frame", np.array([int(r["id"]) for r in rows], dtype=np.int64)),
    }
    data_vars = {}
    for col in _NUMERIC:
        values = np.array([r.get(col, np.nan) for r in rows], dtype=np.float64) if n else np.zeros(0)
        data_vars[col] = ("frame", values)
    meta = (connect(db).metadata or {}).get("elfcore_screen", {})
    return xr.Dataset(data_vars, coords={"frame": np.arange(n), **coords},
                      attrs={"elfcore_screen": json.dumps(meta, sort_keys=True)})


def read_frames(db, *, status: str | Iterable[str] | None = "ok"):
    """A results database with the structure of each of its frames, to step through them.

    Parameters
    ----------
    db : database (see :func:`connect`)
    status : str or iterable of str, optional
        Rows to keep (default "ok").

    Returns
    -------
    (xarray.Dataset, list of ase.Atoms)
        :func:`results_dataset` and, in its frame order, each frame's structure
        (periodic; ``info`` holds ``source``, ``frame`` and the row id).
    """
    database = connect(db)
    ds = results_dataset(database, status=status)
    frames = []
    for row_id, source, index in zip(ds.row_id.values, ds.source.values, ds.frame_index.values):
        atoms = database.get_atoms(id=int(row_id))
        atoms.info.update(source=str(source), frame=int(index), row_id=int(row_id))
        frames.append(atoms)
    return ds, frames


def export_csv(db, path: str | os.PathLike, *, status: str | Iterable[str] | None = None) -> int:
    """Write the rows of a results database to a CSV file (one line per frame, :data:`COLUMNS`).

    Returns
    -------
    int
        Number of rows written.
    """
    rows = read_records(db, status=status)
    with open(os.fspath(path), "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for r in rows:
            writer.writerow(["" if r.get(c) is None else r.get(c) for c in COLUMNS])
    return len(rows)
