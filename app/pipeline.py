"""Cached calls into elfcore for the app (no numerical code lives here).

The app asks for results by *hashable settings*: a case key plus ``(r_cut,
l_max, squeeze)`` for a prediction, plus ``n_shells`` or ``k_max`` for an oracle k-correction (or
``source="predicted"`` for the long-range correction predicted without a reference).
:class:`Pipeline` memoizes each result in a bounded LRU cache shared by the
sessions of one server process (results are pure functions of their key, so
sharing them never couples the sessions' state), and computes each key only
once even when several sessions ask at the same time.

:class:`ElfcoreEngine` is the only place that knows which elfcore function
computes what; everything it returns is a field or a case of the data model
(``docs/datamodel.md``).
"""
from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field as dc_field, replace
from pathlib import Path
from typing import Any, Callable, Hashable

import numpy as np
import xarray as xr

from elfcore import assets, kspace, predict, topology, train, zoo
from elfcore import io as elfcore_io
from elfcore.errors import ElfcoreError, FormatError, StructureError
from elfcore.io.validate import check_atoms

from .catalog import case_label

__all__ = [
    "DATA_DIR",
    "MAX_UPLOAD_BYTES",
    "WEBSOCKET_MAX_MESSAGE_BYTES",
    "upload_capacity",
    "CaseInfo",
    "ElfcoreEngine",
    "LRUCache",
    "Pipeline",
    "default_pipeline",
    "bundled_cases",
]

log = logging.getLogger(__name__)

#: Directory of the bundled reference cases (one netCDF case per file), see :func:`elfcore.assets.data_dir`.
DATA_DIR = assets.data_dir()
#: Largest accepted upload, bytes.
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
#: Websocket message limit the server must be started with (``panel serve --websocket-max-message-size``,
#: ``pn.serve(websocket_max_message_size=...)``). An upload travels base64-encoded (4/3 of its size) in one
#: message; Bokeh's default of 20 MiB would close the session on any upload above 15 MiB without a word.
WEBSOCKET_MAX_MESSAGE_BYTES = 2 * MAX_UPLOAD_BYTES


def upload_capacity(websocket_bytes: int = WEBSOCKET_MAX_MESSAGE_BYTES) -> int:
    """Largest file (bytes) one websocket message of ``websocket_bytes`` carries (base64 plus 64 KiB framing)."""
    return max(0, (int(websocket_bytes) - 64 * 1024) * 3 // 4)


@dataclass(frozen=True)
class CaseInfo:
    """What the case list shows about one case.

    Attributes
    ----------
    key : str
        Cache key (``"bundled:<file name>"`` or ``"upload:<sha1>"``).
    label : str
        Name shown in the case selector.
    pressure_gpa : float or None
        DFT pressure of the case, when known.
    family : str
        ``"fluid"``, ``"cubic"``, ``"hexagonal"``, ``"upload"``...
    role : str
        ``"train"``, ``"test"``, ``"transfer"``, ``"upload"``...
    has_reference : bool
        Whether the case carries a DFT ``elf_ref`` field.
    name : str
        The case's name (its ``name`` attribute, else the file stem).
    target_pressure_gpa : float or None
        Target pressure of the MD run a fluid snapshot comes from, when known.
    n_atoms : int or None
        Atoms in the cell, when known without reading the case.
    """

    key: str
    label: str
    pressure_gpa: float | None = None
    family: str = ""
    role: str = ""
    has_reference: bool = True
    name: str = ""
    target_pressure_gpa: float | None = None
    n_atoms: int | None = None


class LRUCache:
    """A small thread-safe least-recently-used cache with single-flight compute.

    Parameters
    ----------
    max_items : int
        Entries kept; the least recently used one is dropped beyond that.
    """

    def __init__(self, max_items: int = 64):
        if max_items < 1:
            raise ValueError(f"max_items={max_items}; must be ≥ 1")
        self.max_items = int(max_items)
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """Return the cached value for ``key``, computing it once if missing."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._data:
                    self.hits += 1
                    return self._data[key]
            value = compute()
            with self._lock:
                self.misses += 1
                self._data[key] = value
                self._data.move_to_end(key)
                while len(self._data) > self.max_items:
                    self._data.popitem(last=False)
                self._key_locks.pop(key, None)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


# --------------------------------------------------------------------------- engine
class ElfcoreEngine:
    """Adapter from the app's questions to elfcore's public functions.

    Parameters
    ----------
    device : str
        Torch device for predictions, resolved by :func:`elfcore.device.resolve`.
    """

    def __init__(self, device: str = "auto"):
        self.device = device

    # cases ----------------------------------------------------------------
    def read_case(self, path: str | Path) -> xr.Dataset:
        """Read a bundled netCDF case."""
        return elfcore_io.read_case(path)

    def read_upload(self, path: str | Path) -> xr.Dataset:
        """Read an uploaded file into a case (with ``elf_ref`` when it carries an ELF field).

        Field files (ELFCAR, cube, XSF with a data grid, netCDF) become a case
        with ``elf_ref``; structure files (POSCAR, CIF, extxyz...) a case with
        atoms only.
        """
        from elfcore.grid import field_atoms, make_case, validate_case

        path = Path(path)
        if path.suffix.lower() in (".nc", ".nc4", ".netcdf"):
            try:  # same voxel limit as every reader (ELFCORE_MAX_VOXELS); an ELF outside [0, 1] is refused
                return validate_case(elfcore_io.read_case(path, elf_range="error"))
            except ElfcoreError:
                pass
        field_exc: Exception | None = None
        try:
            fld = elfcore_io.read_field(path)
        except (ElfcoreError, ValueError, KeyError, IndexError) as exc:
            field_exc = exc
            fld = None
        if fld is not None:
            values = np.asarray(fld.values)
            lo, hi = float(values.min()), float(values.max())
            if lo < -1e-3 or hi > 1.0 + 1e-3:
                raise FormatError(
                    f"the grid in this file has values {lo:.3g} … {hi:.3g}; an ELF lies in [0, 1] "
                    "(is it a density file such as CHGCAR?)",
                    path.name,
                )
            atoms = field_atoms(fld)
            if len(atoms) == 0:
                raise StructureError(f"{path.name}: the file holds a grid but no atoms")
            return make_case(atoms, {"elf_ref": np.clip(values, 0.0, 1.0)}, attrs={"source": path.name})
        atoms = self.read_structure(path)
        if atoms is None:
            raise FormatError(f"not a field or structure file elfcore can read ({field_exc})", path.name)
        return make_case(atoms, {}, attrs={"source": path.name})

    def read_structure(self, path: str | Path):
        """Read a periodic structure (:func:`elfcore.io.read_structure`); ``None`` when unreadable."""
        try:
            atoms = elfcore_io.read_structure(path)
        except Exception:  # ase, underneath, raises many unrelated types for foreign files
            return None
        if isinstance(atoms, list):
            atoms = atoms[-1] if atoms else None
        if atoms is None:
            raise StructureError(f"{Path(path).name}: the structure holds no atoms")
        check_atoms(atoms, require_atoms=True, require_cell=True, where=Path(path).name)
        atoms.pbc = True
        return atoms

    def structure_case(self, atoms, source: str = "") -> xr.Dataset:
        """A case holding ``atoms`` only (prediction, no reference)."""
        from elfcore.grid import make_case

        check_atoms(atoms, require_atoms=True, require_cell=True, where=source or "structure")
        return make_case(atoms, {}, attrs={"source": source})

    def read_screening(self, path: str | Path):
        """The screened frames of an ``elfcore screen`` database: ``(results Dataset, list of ase.Atoms)``
        (:func:`elfcore.screen.read_frames`)."""
        from elfcore.screen import read_frames

        path = Path(path)
        if not path.is_file():
            raise FormatError("no such screening database", path.name)
        try:
            return read_frames(path)
        except ElfcoreError:
            raise
        except Exception as exc:  # sqlite3 / ase.db raise their own types for a foreign file
            raise FormatError(f"not a screening database elfcore can read ({type(exc).__name__}: {exc})",
                              path.name) from exc

    # models ----------------------------------------------------------------
    def zoo_axes(self) -> tuple[list[float], list[int]]:
        """The r_cut (Å) and l_max values of the model zoo (those with a built file, else the whole table)."""
        rows = [r for r in zoo.zoo_entries() if r.get("present")]
        if not rows:
            return sorted(float(r) for r in zoo.ZOO_R_CUT), sorted(int(l) for l in zoo.ZOO_L_MAX)
        return sorted({float(r["r_cut"]) for r in rows}), sorted({int(r["l_max"]) for r in rows})

    def has_crystal_model(self) -> bool:
        """Whether the model trained on fluid + atomic crystals (``zoo:crystals``) is shipped."""
        return zoo.crystal_model_path().exists()

    def has_hydride_model(self) -> bool:
        """Whether the metal-hydride model (``zoo:hydrides``) is in the zoo folder."""
        return zoo.hydride_model_path().exists()

    def training_for(self, atoms) -> tuple[str | None, str]:
        """The training set a structure needs by its elements (:func:`elfcore.zoo.choose_model`).

        Returns ``("hydrides", reason)`` when it holds elements besides H that ``zoo:hydrides``
        covers, ``(None, reason)`` for pure hydrogen (any hydrogen model fits).

        Raises
        ------
        StructureError
            The structure holds an element no model knows (named in the message).
        """
        choice = zoo.choose_model(atoms)
        return ("hydrides" if choice.spec == zoo.HYDRIDE_SPEC else None), choice.reason

    def predict(self, atoms, r_cut: float, l_max: int, shape: tuple[int, int, int], training: str = "fluid"):
        """Predicted ELF (and ensemble stdev or ``None``) of ``atoms`` on ``shape``.

        ``training = "fluid"`` takes the zoo model of (r_cut, l_max), trained on fluid
        snapshots; ``"crystals"`` the model trained on fluid + atomic crystals, which
        exists at the baseline descriptor (r_cut 3.0 Å, l_max 2) only; ``"hydrides"`` the
        metal-hydride model ``zoo:hydrides`` (its own descriptor: r_cut and l_max do not apply).

        Returns
        -------
        (xarray.DataArray, xarray.DataArray or None)
            Mean prediction and its ensemble standard deviation, both fields.
        """
        if training == "crystals":
            if (float(r_cut), int(l_max)) != zoo.BASELINE:
                raise ElfcoreError(
                    f"the fluid + crystals model exists at r_cut {zoo.BASELINE[0]} Å, l_max {zoo.BASELINE[1]} only"
                )
            model = zoo.resolve_model(zoo.CRYSTAL_SPEC)
        elif training == "fluid":
            model = zoo.load_zoo_model(r_cut, l_max)
        elif training == "hydrides":
            model = zoo.resolve_model(zoo.HYDRIDE_SPEC)
        else:
            raise ElfcoreError(f"unknown training set {training!r}; use 'fluid', 'crystals' or 'hydrides'")
        out = predict.predict_field(atoms, model, shape=tuple(shape), device=self.device, progress=False)
        return out.elf, out.std

    def correction(self, pred: xr.DataArray, ref: xr.DataArray, n_shells: int, k_max: float = 0.0):
        """Oracle k-space correction of ``pred`` towards ``ref`` (:func:`elfcore.kspace.oracle_correction`).

        The basis is the first ``n_shells`` reciprocal shells, or, when
        ``k_max`` > 0, every ``G`` with ``|G| ≤ k_max`` (Å⁻¹).

        Returns
        -------
        elfcore.kspace.KCorrection
            ``corrected`` field, ``coefficients`` and ``info`` (metrics before/after:
            ``mae_before``, ``mae_after``, ``rmse_*``, ``r2_*``...).
        """
        if k_max > 0:
            return kspace.oracle_correction(pred, ref, k_max=float(k_max))
        return kspace.oracle_correction(pred, ref, n_shells=int(n_shells))

    def predicted_correction(self, pred: xr.DataArray, r_cut: float, l_max: int, training: str = "fluid",
                             ref: xr.DataArray | None = None):
        """Long-range correction predicted from the structure alone (:func:`elfcore.longrange.predicted_correction`).

        The correction shipped with the zoo entry (r_cut, l_max) is used; ``ref``, when given, only
        fills the metrics of ``info`` (before/after, and the oracle on the same basis), never the correction.

        Raises
        ------
        ElfcoreError
            For a model with no shipped long-range correction (the crystal model, most zoo entries).
        """
        from elfcore.longrange import predicted_correction, resolve_longrange

        if training != "fluid":
            raise ElfcoreError("the predicted long-range correction exists for the fluid zoo models only")
        spec = f"zoo:rcut={float(r_cut)},lmax={int(l_max)}"
        return predicted_correction(pred, resolve_longrange("auto", spec), ref=ref)

    def correct(self, pred: xr.DataArray, ref: xr.DataArray, n_shells: int, k_max: float = 0.0) -> xr.DataArray:
        """The corrected field of :meth:`correction`."""
        return self.correction(pred, ref, n_shells, k_max=k_max).corrected

    def metrics(self, pred: xr.DataArray, ref: xr.DataArray) -> dict[str, float]:
        """MAE, RMSE and R² of ``pred`` against ``ref`` over all voxels."""
        out = train.metrics(np.asarray(pred.values), np.asarray(ref.values))
        return {k: float(out[k]) for k in ("mae", "rmse", "r2")}

    def topology(self, fld: xr.DataArray) -> dict[str, float]:
        """Networking value φ and molecularity of an ELF field."""
        out = topology.topology_summary(fld, bcp=False)

        def num(x):
            return float("nan") if x is None else float(x)

        return {"phi": num(out.get("networking_value")), "molecularity": num(out.get("molecularity"))}


# --------------------------------------------------------------------------- pipeline
def example_screening() -> Path | None:
    """The shipped example screening database (``assets/screening``), or None when there is none."""
    folder = assets.screening_dir()
    found = sorted(folder.glob("*.db")) if folder.is_dir() else []
    return found[0] if found else None


def _hash_bytes(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


def bundled_cases(data_dir: Path = DATA_DIR) -> list[Path]:
    """The bundled case files, sorted by name."""
    if not data_dir.is_dir():
        return []
    return sorted(p for p in data_dir.glob("*.nc") if p.is_file())


@dataclass
class Pipeline:
    """Cached elfcore results for the app, keyed by hashable settings.

    Parameters
    ----------
    engine : ElfcoreEngine
        Does the actual work.
    data_dir : pathlib.Path
        Where the bundled cases are.
    max_items : int
        Size of the result cache.
    """

    engine: Any = dc_field(default_factory=ElfcoreEngine)
    data_dir: Path = DATA_DIR
    max_items: int = 96
    cases: dict[str, xr.Dataset] = dc_field(default_factory=dict)
    infos: dict[str, CaseInfo] = dc_field(default_factory=dict)

    def __post_init__(self):
        self.cache = LRUCache(self.max_items)
        self._cases_lock = threading.Lock()
        self._scanned = False

    # cases ----------------------------------------------------------------
    def scan(self) -> list[CaseInfo]:
        """Register the bundled cases (metadata only is read eagerly)."""
        with self._cases_lock:
            if not self._scanned:
                for path in bundled_cases(self.data_dir):
                    try:
                        info = self._bundled_info(path)
                    except (ElfcoreError, OSError, ValueError) as exc:
                        log.warning("skipping bundled case %s: %s", path.name, exc)
                        continue
                    self.infos[info.key] = info
                self._scanned = True
        return [i for i in self.infos.values() if i.key.startswith("bundled:")]

    def _bundled_info(self, path: Path) -> CaseInfo:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            attrs = dict(ds.attrs)
            has_ref = "elf_ref" in ds
        info = CaseInfo(
            key=f"bundled:{path.name}",
            label=path.stem,
            pressure_gpa=_finite(attrs.get("pressure_gpa")),
            family=str(attrs.get("family", "")),
            role=str(attrs.get("role", "")),
            has_reference=has_ref,
            name=str(attrs.get("name") or path.stem),
            target_pressure_gpa=_finite(attrs.get("target_pressure_gpa")),
            n_atoms=int(attrs["natoms"]) if _finite(attrs.get("natoms")) is not None else None,
        )
        return replace(info, label=case_label(info))

    def add_case(self, ds: xr.Dataset, *, label: str, key: str | None = None, **info) -> CaseInfo:
        """Register an in-memory case (an upload, or a test case); returns its info."""
        from elfcore.grid import validate_case

        validate_case(ds)
        if key is None:
            key = "upload:" + _hash_bytes(_case_bytes(ds))
        ci = CaseInfo(key=key, label=label, has_reference="elf_ref" in ds, **info)
        with self._cases_lock:
            self.cases[key] = ds
            self.infos[key] = ci
        return ci

    def case(self, key: str) -> xr.Dataset:
        """The case Dataset for ``key`` (bundled cases are read on first use)."""
        with self._cases_lock:
            if key in self.cases:
                return self.cases[key]
        if not key.startswith("bundled:"):
            raise ElfcoreError(f"unknown case {key!r}")
        path = self.data_dir / key.split(":", 1)[1]
        ds = self.cache.get(("case", key), lambda: self.engine.read_case(path))
        return ds

    # derived fields ----------------------------------------------------------
    def reference(self, key: str) -> xr.DataArray | None:
        """The DFT ELF of case ``key`` or ``None``."""
        from elfcore.grid import case_field

        ds = self.case(key)
        if "elf_ref" not in ds:
            return None
        return self.cache.get(("ref", key), lambda: case_field(ds, "elf_ref"))

    def structure(self, key: str, squeeze: float = 1.0):
        """The structure of case ``key``, its cell scaled by ``squeeze`` (atoms move with it)."""
        from elfcore.grid import case_atoms

        atoms = case_atoms(self.case(key))
        if squeeze != 1.0:
            atoms.set_cell(np.asarray(atoms.cell[:]) * float(squeeze), scale_atoms=True)
        return atoms

    def grid_shape(self, key: str, spacing: float = 0.1, max_points: int = 96) -> tuple[int, int, int]:
        """Grid of the case's reference, or one with ``spacing`` Å (8 to ``max_points`` per axis,
        :func:`elfcore.predict.grid_shape_for_spacing`)."""
        ds = self.case(key)
        if all(d in ds.sizes for d in ("a", "b", "c")):
            return (ds.sizes["a"], ds.sizes["b"], ds.sizes["c"])
        return predict.grid_shape_for_spacing(ds["cell"].values, spacing, min_points=8, max_points=max_points)

    def prediction(self, key: str, r_cut: float, l_max: int, squeeze: float = 1.0, training: str = "fluid"):
        """Cached ``(mean, std or None)`` prediction for the settings (``training``: see
        :meth:`ElfcoreEngine.predict`)."""
        k = ("pred", key, float(r_cut), int(l_max), round(float(squeeze), 4), training)

        def compute():
            atoms = self.structure(key, squeeze)
            return self.engine.predict(atoms, float(r_cut), int(l_max), self.grid_shape(key), training=training)

        return self.cache.get(k, compute)

    def correction(
        self, key: str, r_cut: float, l_max: int, n_shells: int, *, k_max: float = 0.0, training: str = "fluid",
        source: str = "reference",
    ):
        """Cached k-correction (``corrected`` and ``info``).

        ``source = "reference"``: the oracle fit to the DFT ELF (:meth:`ElfcoreEngine.correction`) on
        the first ``n_shells`` shells, or on ``|G| ≤ k_max`` (Å⁻¹) when ``k_max`` > 0; ``None``
        without a reference or when both are 0. ``source = "predicted"``: the long-range correction
        predicted from the structure (:meth:`ElfcoreEngine.predicted_correction`; needs no reference,
        ignores ``n_shells`` and ``k_max``).
        """
        ref = self.reference(key)
        if source == "predicted":
            pred, _ = self.prediction(key, r_cut, l_max, training=training)
            k = ("corr", key, float(r_cut), int(l_max), training, "predicted")
            return self.cache.get(
                k, lambda: self.engine.predicted_correction(pred, float(r_cut), int(l_max), training, ref=ref))
        if source != "reference":
            raise ElfcoreError(f"unknown k-correction source {source!r}; use 'reference' or 'predicted'")
        k_max = round(float(k_max), 4)
        if ref is None or (int(n_shells) <= 0 and k_max <= 0):
            return None
        if k_max > 0:
            k = ("corr", key, float(r_cut), int(l_max), training, "k_max", k_max)
        else:
            k = ("corr", key, float(r_cut), int(l_max), training, int(n_shells))
        pred, _ = self.prediction(key, r_cut, l_max, training=training)
        if k_max > 0:
            return self.cache.get(k, lambda: self.engine.correction(pred, ref, 0, k_max=k_max))
        return self.cache.get(k, lambda: self.engine.correction(pred, ref, int(n_shells)))

    def corrected(
        self, key: str, r_cut: float, l_max: int, n_shells: int, *, k_max: float = 0.0, training: str = "fluid",
        source: str = "reference",
    ) -> xr.DataArray | None:
        """The cached corrected prediction of :meth:`correction` (``None`` without a correction)."""
        out = self.correction(key, r_cut, l_max, n_shells, k_max=k_max, training=training, source=source)
        return None if out is None else out.corrected

    def correction_info(
        self, key: str, r_cut: float, l_max: int, n_shells: int, *, k_max: float = 0.0, training: str = "fluid",
        source: str = "reference",
    ) -> dict:
        """The engine's ``info`` of the cached k-correction (``{}`` without a correction)."""
        out = self.correction(key, r_cut, l_max, n_shells, k_max=k_max, training=training, source=source)
        return {} if out is None else dict(out.info)

    def metrics(
        self, key: str, r_cut: float, l_max: int, n_shells: int, *, k_max: float = 0.0, training: str = "fluid",
        source: str = "reference",
    ) -> dict[str, dict[str, float]]:
        """``{"before": {...}, "after": {...} or absent}`` MAE/RMSE/R² against the reference."""
        ref = self.reference(key)
        if ref is None:
            return {}
        pred, _ = self.prediction(key, r_cut, l_max, training=training)
        out = {"before": self.cache.get(("m", key, r_cut, l_max, training), lambda: self.engine.metrics(pred, ref))}
        corr = self.corrected(key, r_cut, l_max, n_shells, k_max=k_max, training=training, source=source)
        if corr is not None:
            k_key = ("predicted",) if source == "predicted" else (n_shells, round(float(k_max), 4))
            out["after"] = self.cache.get(
                ("m", key, r_cut, l_max, training) + k_key, lambda: self.engine.metrics(corr, ref),
            )
        return out

    def topology(self, fld_key: tuple, fld: xr.DataArray) -> dict[str, float]:
        """Cached φ and molecularity of a field identified by ``fld_key``."""
        return self.cache.get(("topo",) + tuple(fld_key), lambda: self.engine.topology(fld))


def _finite(value) -> float | None:
    """``value`` as a float, or ``None`` when missing or not finite."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _case_bytes(ds: xr.Dataset) -> bytes:
    parts = [np.ascontiguousarray(ds[k].values).tobytes() for k in sorted(ds.data_vars)]
    return b"".join(parts)


_DEFAULT: Pipeline | None = None
_DEFAULT_LOCK = threading.Lock()


def default_pipeline() -> Pipeline:
    """The pipeline shared by the sessions of this server process (created on first use).

    The cases come from :func:`elfcore.assets.data_dir` (``assets/data/`` or, when set, the
    folder named by the environment variable ``ELFCORE_DATA_DIR``), looked up when the
    pipeline is created.
    """
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Pipeline(data_dir=assets.data_dir())
        return _DEFAULT
