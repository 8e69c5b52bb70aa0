"""The shipped model zoo: one trained MLP per (r_cut, l_max).

The zoo spans r_cut ∈ {1.5, 2.0, 2.5, 3.0, 3.5, 4.0} Å × l_max ∈ {0, 1, 2, 3, 4}
with n_radial = 10 (9 at r_cut = 1.5 Å, see :data:`ZOO_N_RADIAL_AT`) and the default atom width σ (``docs/science.md`` §3–§4). Each
entry is a file in ``assets/models/`` of the source tree, installed with the package
as package data (found through :func:`elfcore.assets.models_dir`; see ``assets/README.md``
for the command that rebuilds it). The baseline entry (r_cut = 3.0 Å, l_max = 2) is trained with
the full paper protocol; :data:`ZOO_SCHEDULE` states the schedule of the others.

A model can be named on the command line as a path or as a zoo spec string
``"zoo:rcut=3.0,lmax=2"`` (:func:`parse_spec`, :func:`resolve_model`).

Besides the zoo (trained on fluid snapshots only, the paper's protocol) one more
model is shipped: :data:`CRYSTAL_MODEL`, ``"zoo:crystals"``, a 3-MLP ensemble at the
baseline descriptor trained on the fluid snapshots plus 80 random atomic training
crystals; use it for crystalline or atomic (non-molecular) hydrogen, where the fluid
models are out of their domain.

Metal hydrides get one more model, :data:`HYDRIDE_MODEL`, ``"zoo:hydrides"``: an MLP on a
several-species descriptor (``DescriptorSettings(species=("H", …))``) trained with
``elfcore train --species auto`` on the hydride reference cases (``docs/hydrides.md``). It is
not shipped until its DFT data exist; naming it before then is a clear error.

:func:`choose_model` picks the model for a structure when the user asks for ``"auto"`` (the
default of ``elfcore predict``, ``netval`` and ``screen``): the default hydrogen entry
(:data:`DEFAULT_SPEC`) for pure hydrogen, ``zoo:hydrides`` when the structure holds other
elements and that model's species cover them, and a :class:`~elfcore.errors.StructureError`
naming the elements no model knows otherwise.
"""
from __future__ import annotations

import logging
import operator
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .assets import models_dir
from .errors import ElfcoreError, FormatError, SettingsError, StructureError

if TYPE_CHECKING:  # torch and the models load lazily: the command line imports this module to build its parser
    import torch
    import xarray as xr

    from .models.mlp import MLP, Ensemble

__all__ = [
    "ZOO_R_CUT",
    "ZOO_L_MAX",
    "ZOO_N_RADIAL",
    "ZOO_N_RADIAL_AT",
    "BASELINE",
    "BASELINE_SPEC",
    "DEFAULT",
    "ZOO",
    "ZOO_SCHEDULE",
    "default_zoo_dir",
    "zoo_path",
    "zoo_settings",
    "zoo_train_settings",
    "load_zoo_model",
    "parse_spec",
    "resolve_model",
    "zoo_entries",
    "build_zoo",
    "CRYSTAL_MODEL",
    "CRYSTAL_SPEC",
    "crystal_model_path",
    "DEFAULT_SPEC",
    "AUTO",
    "HYDRIDE_MODEL",
    "HYDRIDE_SPEC",
    "hydride_model_path",
    "model_species",
    "known_species",
    "ModelChoice",
    "choose_model",
]

log = logging.getLogger(__name__)

ZOO_R_CUT: tuple[float, ...] = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
ZOO_L_MAX: tuple[int, ...] = (0, 1, 2, 3, 4)
ZOO_N_RADIAL = 10
#: r_cut → n_radial where the default cannot be used: ten GTO radial functions
#: packed into 1.5 Å have a singular overlap matrix in float64 (the descriptor
#: refuses them), so the r_cut = 1.5 Å entries use nine.
ZOO_N_RADIAL_AT: dict[float, int] = {1.5: 9}
#: (r_cut, l_max) of the paper's baseline model
BASELINE: tuple[float, int] = (3.0, 2)
#: (r_cut, l_max) of the entry used by default: the most accurate shipped entry on independent snapshots
#: (mean R² over 27 64-atom and 4 512-atom fluid cells no zoo model saw; ``benchmarks/zoo_accuracy.py``,
#: ``docs/results.md`` *Which zoo entry*). The paper's baseline stays one spec away: :data:`BASELINE_SPEC`.
DEFAULT: tuple[float, int] = (2.5, 3)

#: (r_cut Å, l_max) → file name in the zoo directory
ZOO: dict[tuple[float, int], str] = {
    (r, l): f"elf_mlp_rcut{r:.1f}_lmax{l}.safetensors" for r in ZOO_R_CUT for l in ZOO_L_MAX
}

#: training schedule of the zoo (overrides of :class:`~elfcore.train.TrainSettings`):
#: the baseline gets the paper protocol (50,000 voxels per snapshot, 80 epochs);
#: the other entries a shorter one (20,000 voxels per snapshot, 15 epochs) so the
#: whole zoo trains in well under an hour on two shared CPU cores (their accuracy
#: is measured and listed in ``assets/README.md``).
ZOO_SCHEDULE: dict[str, dict[str, Any]] = {
    "baseline": {"epochs": 80, "n_voxels": 50_000},
    "other": {"epochs": 15, "n_voxels": 20_000},
}

#: weights precision of zoo files (float16 keeps each file ≤ ~110 kB)
ZOO_WEIGHTS_DTYPE = "float16"

#: file (in the zoo directory) of the model trained on fluid + atomic training crystals
CRYSTAL_MODEL = "elf_mlp_fluid_crystals.safetensors"
#: spec string that names it (:func:`resolve_model`)
CRYSTAL_SPEC = "zoo:crystals"

#: file (in the zoo directory) of the metal-hydride model (several-species descriptor)
HYDRIDE_MODEL = "elf_mlp_hydrides.safetensors"
#: spec string that names it (:func:`resolve_model`)
HYDRIDE_SPEC = "zoo:hydrides"

#: the hydrogen model every command uses by default (:data:`DEFAULT`, the most accurate shipped entry)
DEFAULT_SPEC = f"zoo:rcut={DEFAULT[0]:.1f},lmax={DEFAULT[1]}"
#: the paper's baseline entry (:data:`BASELINE`; also what ``"zoo:"`` with no settings names)
BASELINE_SPEC = f"zoo:rcut={BASELINE[0]:.1f},lmax={BASELINE[1]}"
#: ``--model`` value that lets :func:`choose_model` pick the model from the structure's elements
AUTO = "auto"

_SPEC = re.compile(r"^zoo:(.*)$")


def default_zoo_dir() -> Path:
    """Folder of the shipped zoo, :func:`elfcore.assets.models_dir` (override with ``directory=``
    or ``ELFCORE_ZOO_DIR``)."""
    return models_dir()


def _key(r_cut: float, l_max: int) -> tuple[float, int]:
    key = (round(float(r_cut), 3), int(l_max))
    if key not in ZOO:
        raise ElfcoreError(
            f"no zoo model for r_cut={r_cut}, l_max={l_max}; "
            f"r_cut ∈ {list(ZOO_R_CUT)} Å, l_max ∈ {list(ZOO_L_MAX)}"
        )
    return key


def zoo_path(r_cut: float, l_max: int, *, directory: str | os.PathLike | None = None) -> Path:
    """File of the zoo entry (``directory`` defaults to :func:`default_zoo_dir`)."""
    return Path(directory or default_zoo_dir()) / ZOO[_key(r_cut, l_max)]


def crystal_model_path(*, directory: str | os.PathLike | None = None) -> Path:
    """File of :data:`CRYSTAL_MODEL` (``directory`` defaults to :func:`default_zoo_dir`)."""
    return Path(directory or default_zoo_dir()) / CRYSTAL_MODEL


def hydride_model_path(*, directory: str | os.PathLike | None = None) -> Path:
    """File of :data:`HYDRIDE_MODEL` (``directory`` defaults to :func:`default_zoo_dir`)."""
    return Path(directory or default_zoo_dir()) / HYDRIDE_MODEL


def _hydride_missing(path: Path) -> ElfcoreError:
    return ElfcoreError(f"{HYDRIDE_SPEC} is not built yet: {HYDRIDE_MODEL} is not in {path.parent} "
                        "(its DFT training data do not exist yet; see assets/README.md, and docs/hydrides.md for training it)")


def zoo_settings(r_cut: float, l_max: int):
    """:class:`~elfcore.descriptor.DescriptorSettings` of a zoo entry."""
    from .descriptor import DescriptorSettings

    r, l = _key(r_cut, l_max)
    return DescriptorSettings(r_cut=r, n_radial=ZOO_N_RADIAL_AT.get(r, ZOO_N_RADIAL), l_max=l)


def zoo_train_settings(r_cut: float, l_max: int, base=None):
    """:class:`~elfcore.train.TrainSettings` of a zoo entry (see :data:`ZOO_SCHEDULE`)."""
    from .train import TrainSettings

    base = base or TrainSettings()
    kind = "baseline" if _key(r_cut, l_max) == BASELINE else "other"
    return replace(base, **ZOO_SCHEDULE[kind])


def load_zoo_model(
    r_cut: float, l_max: int, *, directory: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> MLP | Ensemble:
    """Load the zoo model for (r_cut Å, l_max).

    Raises
    ------
    ElfcoreError
        If (r_cut, l_max) is not in the zoo or its file has not been built.
    """
    from .models import load_model

    path = zoo_path(r_cut, l_max, directory=directory)
    if not path.exists():
        raise ElfcoreError(f"zoo model {path.name} is missing in {path.parent}; build it with `elfcore zoo build`")
    return load_model(path, descriptor_settings=zoo_settings(r_cut, l_max), device=device)


def parse_spec(spec: str) -> tuple[float, int]:
    """Parse ``"zoo:rcut=3.0,lmax=2"`` into ``(3.0, 2)``.

    ``rcut`` and ``lmax`` may come in any order; a missing one takes the baseline
    value. Spaces are ignored.

    Examples
    --------
    >>> parse_spec("zoo:rcut=2.5,lmax=4")
    (2.5, 4)
    >>> parse_spec("zoo:")
    (3.0, 2)
    """
    m = _SPEC.match(spec.replace(" ", ""))
    if not m:
        raise ElfcoreError(f"model spec {spec!r} does not start with 'zoo:'; e.g. 'zoo:rcut=3.0,lmax=2'")
    values: dict[str, str] = {}
    for part in filter(None, m.group(1).split(",")):
        if "=" not in part:
            raise ElfcoreError(f"model spec {spec!r}: {part!r} is not key=value")
        k, v = part.split("=", 1)
        if k not in ("rcut", "lmax"):
            raise ElfcoreError(f"model spec {spec!r}: unknown key {k!r}; allowed: rcut, lmax")
        values[k] = v
    try:
        r_cut = float(values.get("rcut", BASELINE[0]))
        l_max_f = float(values.get("lmax", BASELINE[1]))
    except ValueError as exc:
        raise ElfcoreError(f"model spec {spec!r}: {exc}") from exc
    if l_max_f != int(l_max_f):
        raise ElfcoreError(f"model spec {spec!r}: lmax must be an integer")
    return _key(r_cut, int(l_max_f))


def resolve_model(
    model: str | os.PathLike, *, directory: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> MLP | Ensemble:
    """Load a model named by a file path or a zoo spec (``"zoo:rcut=3.0,lmax=2"``,
    ``"zoo:crystals"`` for :data:`CRYSTAL_MODEL`, ``"zoo:hydrides"`` for :data:`HYDRIDE_MODEL`).

    ``"auto"`` is not a model: pick one for a structure with :func:`choose_model` first.

    Raises
    ------
    ElfcoreError
        An unknown zoo spec, a zoo file that is missing (``zoo:hydrides``: not built yet),
        or ``"auto"``.
    """
    from .models import load_model

    if isinstance(model, str) and model.strip() == AUTO:
        raise ElfcoreError("model 'auto' needs a structure to choose for (elfcore.zoo.choose_model); "
                           f"name a model file or zoo spec, e.g. {DEFAULT_SPEC}")
    if isinstance(model, str) and model.replace(" ", "") == HYDRIDE_SPEC:
        path = hydride_model_path(directory=directory)
        if not path.exists():
            raise _hydride_missing(path)
        return load_model(path, device=device)
    if isinstance(model, str) and model.replace(" ", "") == CRYSTAL_SPEC:
        path = crystal_model_path(directory=directory)
        if not path.exists():
            raise ElfcoreError(f"{CRYSTAL_MODEL} is missing in {path.parent}; see assets/README.md to rebuild it")
        return load_model(path, device=device)
    if isinstance(model, str) and model.startswith("zoo:"):
        return load_zoo_model(*parse_spec(model), directory=directory, device=device)
    return load_model(model, device=device)


@dataclass(frozen=True)
class ModelChoice:
    """The model :func:`choose_model` settled on.

    Parameters
    ----------
    spec : str
        Model file or zoo spec, ready for :func:`resolve_model`.
    reason : str
        Why: ``"as given"`` for a model the user named, ``"chosen for H, La"`` (the
        structure's elements) for ``"auto"``.
    """

    spec: str
    reason: str

    @property
    def automatic(self) -> bool:
        """True when ``"auto"`` chose the model (False for a model the user named)."""
        return self.reason != "as given"


def _element_names(atoms_or_species) -> tuple[str, ...]:
    """Distinct chemical symbols of an ase.Atoms or of an iterable of symbols / atomic numbers,
    by increasing atomic number."""
    from ase.data import atomic_numbers, chemical_symbols

    if hasattr(atoms_or_species, "get_atomic_numbers"):
        items = [int(z) for z in atoms_or_species.get_atomic_numbers()]
    elif isinstance(atoms_or_species, str):
        items = [atoms_or_species]
    else:
        try:
            items = list(atoms_or_species)
        except TypeError:
            kind = type(atoms_or_species).__name__
            raise StructureError(f"expected a structure or a list of elements, got {kind}") from None
    names = set()
    for item in items:
        if isinstance(item, str):
            if item not in atomic_numbers or item == "X":
                raise StructureError(f"{item!r} is not a chemical symbol")
            names.add(item)
            continue
        try:
            z = operator.index(item) if not isinstance(item, bool) else -1
        except TypeError:
            raise StructureError(f"{item!r} is neither a chemical symbol nor an atomic number") from None
        if not 0 < z < len(chemical_symbols):
            raise StructureError(f"{item!r} is not the atomic number of an element")
        names.add(chemical_symbols[z])
    return tuple(sorted(names, key=lambda sym: atomic_numbers[sym]))


def _listing(symbols: Iterable[str]) -> str:
    return ", ".join(symbols)


def model_species(model: str | os.PathLike, *, directory: str | os.PathLike | None = None) -> tuple[str, ...]:
    """Elements a model's descriptor describes, read from its file header (no weights loaded).

    Parameters
    ----------
    model : str or os.PathLike
        Model file or zoo spec.
    directory : path-like, optional
        Zoo folder for zoo specs (default :func:`default_zoo_dir`).

    Returns
    -------
    tuple of str
        Chemical symbols in canonical order, ``("H",)`` for the hydrogen models.

    Raises
    ------
    ElfcoreError
        The file is missing (``zoo:hydrides``: not built yet) or its header is not an
        elfcore model's.
    """
    from .descriptor import DescriptorSettings
    from .models import read_header

    name = os.fspath(model)
    compact = name.replace(" ", "")
    if compact == HYDRIDE_SPEC:
        path = hydride_model_path(directory=directory)
        if not path.exists():
            raise _hydride_missing(path)
    elif compact == CRYSTAL_SPEC:
        path = crystal_model_path(directory=directory)
    elif compact.startswith("zoo:"):
        return zoo_settings(*parse_spec(compact)).species
    else:
        path = Path(name)
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    header = read_header(path)
    try:
        return DescriptorSettings.from_dict(header.get("descriptor", {})).species
    except (ElfcoreError, TypeError) as exc:
        raise FormatError(f"invalid descriptor settings in model header: {exc}", path=str(path)) from None


def known_species(*, directory: str | os.PathLike | None = None) -> dict[str, tuple[str, ...] | None]:
    """What the shipped models know: spec → elements of its descriptor.

    ``DEFAULT_SPEC`` (the hydrogen zoo and ``zoo:crystals``) knows H only; ``zoo:hydrides``
    maps to its species, or None while its file is not built.
    """
    path = hydride_model_path(directory=directory)
    return {DEFAULT_SPEC: ("H",),
            HYDRIDE_SPEC: model_species(HYDRIDE_SPEC, directory=directory) if path.exists() else None}


def choose_model(atoms_or_species, model: str | os.PathLike = AUTO, *,
                 directory: str | os.PathLike | None = None) -> ModelChoice:
    """The model for a structure: the one given, or with ``"auto"`` one whose species cover it.

    Parameters
    ----------
    atoms_or_species : ase.Atoms or iterable of str or int
        The structure, or its elements (symbols or atomic numbers; repeats are fine).
    model : str or os.PathLike
        A model file or zoo spec (returned unchanged, reason ``"as given"``), or
        ``"auto"``: hydrogen only → :data:`DEFAULT_SPEC`; any other element →
        :data:`HYDRIDE_SPEC` when its file exists and its descriptor species cover every
        element of the structure.
    directory : path-like, optional
        Zoo folder (default :func:`default_zoo_dir`, ``ELFCORE_ZOO_DIR`` overrides it).

    Returns
    -------
    ModelChoice
        ``spec`` for :func:`resolve_model` and ``reason`` (``"chosen for H, La"``).

    Raises
    ------
    StructureError
        With ``"auto"``, the structure holds an element no model knows; the message
        names it and lists what each model covers.

    Examples
    --------
    >>> choose_model(["H", "H"])
    ModelChoice(spec='zoo:rcut=2.5,lmax=3', reason='chosen for H')
    >>> choose_model(["H", "La"], "my_model.safetensors").reason
    'as given'
    """
    if not (isinstance(model, str) and model.strip() == AUTO):
        return ModelChoice(os.fspath(model), "as given")
    elements = _element_names(atoms_or_species)
    others = [sym for sym in elements if sym != "H"]
    reason = f"chosen for {_listing(elements or ('H',))}"
    if not others:
        return ModelChoice(DEFAULT_SPEC, reason)
    hydride_species = known_species(directory=directory)[HYDRIDE_SPEC]
    if hydride_species is not None and set(elements) <= set(hydride_species):
        return ModelChoice(HYDRIDE_SPEC, reason)
    unknown = [sym for sym in others if hydride_species is None or sym not in hydride_species]
    if hydride_species is None:
        hydrides = (f"{HYDRIDE_SPEC} is not built yet ({HYDRIDE_MODEL} is not in "
                    f"{hydride_model_path(directory=directory).parent}; see assets/README.md)")
    else:
        hydrides = f"{HYDRIDE_SPEC} covers {_listing(hydride_species)}"
    raise StructureError(f"the structure holds {_listing(unknown)}, which no model knows: {hydrides}; "
                         f"the hydrogen zoo ({DEFAULT_SPEC}, {CRYSTAL_SPEC}) covers H")


def zoo_entries(directory: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """One row per zoo entry: r_cut, l_max, file, present, size, schedule and stored validation metrics."""
    from .models import read_header

    rows = []
    for (r, l), name in ZOO.items():
        path = Path(directory or default_zoo_dir()) / name
        row: dict[str, Any] = {"r_cut": r, "l_max": l, "file": name, "present": path.exists()}
        if path.exists():
            row["bytes"] = path.stat().st_size
            try:
                training = read_header(path).get("training", {})
            except ElfcoreError as exc:
                row["error"] = str(exc)
                training = {}
            hist = training.get("history") or [{}]
            row["epochs"] = training.get("train_settings", {}).get("epochs")
            row["val_r2"] = hist[-1].get("val_r2")
            row["val_mae"] = hist[-1].get("val_mae")
            row["data_key"] = training.get("data_key")
        rows.append(row)
    return rows


def _data_key(cases: list[tuple[str, xr.DataArray]], seed: int, base, override=None) -> str:
    import hashlib
    import json

    import numpy as np

    h = hashlib.sha256(json.dumps([base.to_dict(), ZOO_SCHEDULE, int(seed), override or {}], sort_keys=True).encode())
    for name, field in cases:
        h.update(name.encode())
        h.update(np.ascontiguousarray(field.values, dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


def build_zoo(
    cases: Iterable[tuple[str, xr.DataArray]],
    *,
    directory: str | os.PathLike | None = None,
    entries: Iterable[tuple[float, int]] | None = None,
    base=None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    resume: bool = True,
    progress: bool = True,
    override: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Train and save zoo models (resumable).

    Parameters
    ----------
    cases : iterable of (name, field)
        Training snapshots (reference ELF fields).
    directory : path-like, optional
        Output directory (default :func:`default_zoo_dir`).
    entries : iterable of (r_cut, l_max), optional
        Subset to build (default: all 30, baseline first).
    base : TrainSettings, optional
        Protocol before the :data:`ZOO_SCHEDULE` overrides (default: the paper's).
    seed : int
        Sampling and training seed (same for every entry).
    cache_dir : path-like, optional
        Descriptor cache.
    resume : bool
        Skip entries whose file exists and was trained on the same data, seed and
        protocol (recorded as ``data_key`` in the model header).
    override : dict, optional
        TrainSettings fields applied after :data:`ZOO_SCHEDULE` to every entry
        (e.g. ``{"epochs": 10, "n_voxels": 10000}`` for a quick provisional build).

    Returns
    -------
    list of dict
        One row per entry: r_cut, l_max, file, status (``"trained"``, ``"kept"``
        or ``"failed"`` with ``error``), validation R² and MAE.
    """
    from .train import TrainSettings

    cases = list(cases)
    if not cases:
        raise SettingsError("no training data given")
    base = base or TrainSettings()
    out_dir = Path(directory or default_zoo_dir())
    key = _data_key(cases, seed, base, override)
    todo = [_key(*e) for e in entries] if entries is not None else [BASELINE] + [k for k in ZOO if k != BASELINE]
    kept = _kept_entries(todo, out_dir, key) if resume else {}
    needs = [e for e in todo if e not in kept]
    # the baseline alone (paper protocol); the other entries of one r_cut in one
    # joint pass (one descriptor computation, members with nested feature masks)
    groups: dict[float, list[int]] = {}
    for r, l in needs:
        if (r, l) != BASELINE:
            groups.setdefault(r, []).append(l)
    results: dict[tuple[float, int], Any] = {}
    for r, l in needs:
        if (r, l) in results:
            continue
        ls = [l] if (r, l) == BASELINE else groups[r]
        results.update(_build_group(cases, r, ls, base, override, key, out_dir, seed=seed, cache_dir=cache_dir,
                                    device=device, progress=progress))
    return [_zoo_row(r, l, kept, results) for r, l in todo]


def _kept_entries(todo, out_dir: Path, key: str) -> dict[tuple[float, int], dict]:
    """Entries whose file exists and was trained on the data/protocol ``key``: their last history row."""
    from .models import read_header

    kept: dict[tuple[float, int], dict] = {}
    for r, l in todo:
        path = out_dir / ZOO[(r, l)]
        if path.exists():
            try:
                training = read_header(path).get("training", {})
            except ElfcoreError:
                training = {}
            if training.get("data_key") == key:
                kept[(r, l)] = (training.get("history") or [{}])[-1]
    return kept


def _build_group(cases, r: float, ls: list[int], base, override, key: str, out_dir: Path, *, seed, cache_dir,
                 device, progress) -> dict[tuple[float, int], Any]:
    """Train and save the entries (r, l) for l in ``ls``; per entry its last history row, or the error."""
    from .models import save_model
    from .train import train_on_fields

    ts = zoo_train_settings(r, ls[0], base)
    if override:
        ts = replace(ts, **override)
    try:
        log.info("zoo r_cut=%.1f l_max=%s: training (%d epochs, batch %d, %d voxels per case)",
                 r, ls, ts.epochs, ts.batch_size, ts.n_voxels)
        if len(ls) == 1:
            models = {ls[0]: train_on_fields(cases, zoo_settings(r, ls[0]), ts, seed=seed, cache_dir=cache_dir,
                                             device=device, progress=progress)}
        else:
            models = _train_group(cases, r, ls, ts, seed=seed, cache_dir=cache_dir, device=device,
                                  progress=progress)
    except ElfcoreError as exc:
        log.error("zoo r_cut=%.1f l_max=%s: failed: %s", r, ls, exc)
        return {(r, ll): exc for ll in ls}
    results: dict[tuple[float, int], Any] = {}
    for ll, model in models.items():
        model.metadata["data_key"] = key
        model.metadata["zoo_entry"] = {"r_cut": r, "l_max": ll}
        save_model(model.cpu(), out_dir / ZOO[(r, ll)], weights_dtype=ZOO_WEIGHTS_DTYPE)
        results[(r, ll)] = model.metadata["history"][-1]
    return results


def _zoo_row(r: float, l: int, kept: dict, results: dict) -> dict[str, Any]:
    """The :func:`build_zoo` row of entry (r, l): kept, failed (with the error) or trained."""
    row: dict[str, Any] = {"r_cut": r, "l_max": l, "file": ZOO[(r, l)]}
    if (r, l) in kept:
        hist = kept[(r, l)]
        row.update(status="kept", val_r2=hist.get("val_r2"), val_mae=hist.get("val_mae"))
    elif isinstance(results.get((r, l)), Exception):
        row.update(status="failed", error=str(results[(r, l)]))
    else:
        hist = results[(r, l)]
        row.update(status="trained", val_r2=hist.get("val_r2"), val_mae=hist.get("val_mae"))
    return row


def _train_group(cases, r_cut: float, l_list: list[int], ts, *, seed, cache_dir, device, progress) -> dict:
    """Train the zoo entries (r_cut, l) for every l in ``l_list`` in one pass.

    Descriptors are computed once at the largest l_max; member ``m`` of a stacked
    ensemble sees only the features of ``l_list[m]`` (``feature_masks``) and is cut
    down to a stand-alone MLP of that descriptor (:func:`elfcore.train.masked_member`).
    Voxels, seeds and the validation split are those of
    :func:`elfcore.train.train_on_fields`; member ``m`` uses seed ``seed + m``.
    """
    import torch

    from .descriptor import feature_labels
    from .train import masked_member, train_model, voxel_samples

    top = zoo_settings(r_cut, max(l_list))
    Xs, ys, info = [], [], []
    for i, (name, field) in enumerate(cases):
        X, y, _ = voxel_samples(field, top, ts.n_voxels, seed=seed + 1000 * i, storage_dtype=ts.storage_dtype,
                                cache_dir=cache_dir, device=device)
        Xs.append(X)
        ys.append(y)
        info.append({"name": name, "n_voxels": len(y), "sampling_seed": seed + 1000 * i,
                     **{k: field.attrs[k] for k in ("pressure_gpa", "family", "role") if k in field.attrs}})
    pos = {lab: i for i, lab in enumerate(feature_labels(top))}
    columns = [[pos[lab] for lab in feature_labels(zoo_settings(r_cut, l))] for l in l_list]
    masks = torch.zeros(len(l_list), top.n_features, dtype=torch.bool)
    for m, cols in enumerate(columns):
        masks[m, cols] = True
    ens = train_model(torch.cat(Xs), torch.cat(ys), top, ts, seed=seed, n_members=len(l_list),
                      feature_masks=masks, device=device, progress=progress).cpu()
    out = {}
    for m, l in enumerate(l_list):
        mlp = masked_member(ens, m, columns[m], zoo_settings(r_cut, l))
        meta = {k: v for k, v in ens.metadata.items() if k != "history"}
        meta.update(seed=seed + m, n_members=1, trained_jointly_with_l_max=list(l_list), training_cases=info)
        meta["history"] = [
            {"epoch": h["epoch"], "train_loss_all_members": h["train_loss"],
             **({"val_r2": h["val_r2_members"][m], "val_mae": h["val_mae_members"][m]} if "val_r2_members" in h else {})}
            for h in ens.metadata["history"]
        ]
        mlp.metadata = meta
        out[l] = mlp
    return out
