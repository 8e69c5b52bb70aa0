"""Every user choice of the app in one :class:`AppState` (no Panel import).

One ``AppState`` exists per browser session. Its parameters are the choices
(case, model, k-shells, iso value, slice, line, squeeze...); its
``@param.depends`` methods derive what the views draw, by asking the cached
:class:`~app.pipeline.Pipeline` (elfcore does the computing). The class is
plain Python: tests drive it without a browser.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import param
import xarray as xr

from elfcore.errors import ElfcoreError
from elfcore.zoo import BASELINE as ZOO_BASELINE, DEFAULT as ZOO_DEFAULT

from .catalog import correction_warning, default_line_atoms, domain_warning, guided_tour, sort_cases
from .pipeline import MAX_UPLOAD_BYTES, CaseInfo, Pipeline, default_pipeline
from .screening import SCREENING_EXTENSIONS, ScreeningRun, open_run

__all__ = [
    "AppState",
    "FieldSet",
    "SliceData",
    "LineData",
    "FIELD_KINDS",
    "FIELD_EXTENSIONS",
    "STRUCTURE_EXTENSIONS",
]

log = logging.getLogger(__name__)


def _display_name(filename) -> str:
    """The uploaded file's base name as shown to the user: no control characters, at most 80 characters."""
    text = re.sub(r"[\x00-\x1f\x7f]", "", str(filename or ""))
    text = re.split(r"[/\\]", text)[-1].strip() or "upload"
    return text if len(text) <= 80 else text[:38] + "…" + text[-38:]


def _file_name(name: str) -> str:
    """A safe local file name that keeps what tells the format (extension, ELFCAR/POSCAR...) at either end."""
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", name.replace("…", "_")).lstrip(".") or "upload"
    return safe if len(safe) <= 120 else safe[:60] + safe[-60:]


#: The ELF fields a view can show.
FIELD_KINDS = ("prediction", "reference", "corrected")
#: Upload names read as ELF fields (prediction + residual against them).
FIELD_EXTENSIONS = (".cube", ".cub", ".xsf", ".nc", ".elfcar", ".vasp")
#: Upload names read as structures (prediction only).
STRUCTURE_EXTENSIONS = (".cif", ".xyz", ".extxyz", ".poscar", ".contcar", ".pdb", ".traj", ".in")
_VASP_NAMES = ("ELFCAR", "CHGCAR", "POSCAR", "CONTCAR", "LOCPOT", "PARCHG")

#: How the k-basis is truncated.
K_BASES = ("shells", "k_max")
#: Where the k-correction comes from: the oracle fit to the DFT reference (k-basis sliders), or the long-range
#: correction predicted from the structure alone (``elfcore.longrange``; no reference needed).
K_SOURCES = ("reference", "predicted")
#: Training data of the model: fluid snapshots (the zoo), fluid + atomic crystals (``zoo:crystals``) or metal
#: hydrides (``zoo:hydrides``, chosen by the structure's elements; offered when its file exists).
TRAINING_SETS = ("fluid", "crystals", "hydrides")
#: Where the line-scan end points come from.
LINE_SOURCES = ("atoms", "points")

#: State parameters every derived field depends on (case, model, k-correction, squeeze);
#: the views watch these plus their own (:data:`SLICE_DEPS`, :data:`LINE_DEPS`).
FIELD_DEPS = ("case", "r_cut", "l_max", "training", "n_shells", "k_max", "k_basis", "k_source", "squeeze")
#: State parameters of :meth:`AppState.slice_data`.
SLICE_DEPS = (*FIELD_DEPS, "view_field", "slice_mode", "slice_position", "plane_atom_1", "plane_atom_2",
              "plane_atom_3", "near_plane")
#: State parameters of :meth:`AppState.line_data`.
LINE_DEPS = (*FIELD_DEPS, "line_atom_1", "line_atom_2", "line_source", "line_start", "line_end")
#: Choices whose change makes the last message stale (it is cleared; an action that sets a message
#: after changing them, such as an upload or a tour step, writes its own).
MESSAGE_RESET_DEPS = ("case", "training", "r_cut", "l_max", "n_shells", "k_max", "k_source", "view_field",
                      "squeeze")

#: The model the app opens with: the zoo's most accurate entry (:data:`elfcore.zoo.DEFAULT`); the paper's
#: baseline (:data:`elfcore.zoo.BASELINE`) is one click away (:meth:`AppState.use_entry`).
DEFAULT_R_CUTS = [ZOO_DEFAULT[0]]
DEFAULT_L_MAXS = [ZOO_DEFAULT[1]]


@dataclass(frozen=True)
class FieldSet:
    """The fields of one set of choices (all over the same grid).

    Attributes
    ----------
    prediction, std, reference, corrected : xarray.DataArray or None
        Predicted ELF, its ensemble standard deviation, DFT ELF, k-corrected ELF.
    residual, residual_corrected : xarray.DataArray or None
        ``ELF_pred − ELF_ref`` and ``ELF_corr − ELF_ref``.
    atoms : ase.Atoms or None
        The structure these fields belong to (squeezed when ``squeezed``).
    squeezed : bool
        The cell was scaled: prediction only, no reference.
    error : str
        A readable message when the prediction could not be made.
    """

    prediction: xr.DataArray | None = None
    std: xr.DataArray | None = None
    reference: xr.DataArray | None = None
    corrected: xr.DataArray | None = None
    residual: xr.DataArray | None = None
    residual_corrected: xr.DataArray | None = None
    atoms: Any = None
    squeezed: bool = False
    error: str = ""

    def get(self, kind: str) -> xr.DataArray | None:
        """The ELF field named ``kind`` (one of :data:`FIELD_KINDS`)."""
        return {"prediction": self.prediction, "reference": self.reference, "corrected": self.corrected}[kind]


@dataclass(frozen=True)
class SliceData:
    """A 2D cut, ready to draw.

    Attributes
    ----------
    elf, residual : numpy.ndarray (nx, ny) or None
        ELF of the chosen kind and ``ELF_pred − ELF_ref`` on the plane; axis 0 is x.
    x, y : numpy.ndarray
        In-plane coordinates, Å.
    xlabel, ylabel, title : str
    atoms_xy : numpy.ndarray (m, 2)
        In-plane positions (Å) of the atoms within ``near`` of the plane.
    atoms_index : numpy.ndarray (m,)
        Their indices.
    kind : str
        The ELF kind shown.
    origin : numpy.ndarray (3,)
        Cartesian point (Å) of the in-plane coordinates (0, 0).
    axes : numpy.ndarray (2, 3)
        Cartesian unit vectors of the x and y axes; see :meth:`to_cartesian`.
    """

    elf: np.ndarray | None
    residual: np.ndarray | None
    x: np.ndarray
    y: np.ndarray
    xlabel: str
    ylabel: str
    title: str
    atoms_xy: np.ndarray
    atoms_index: np.ndarray
    kind: str = "prediction"
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))
    axes: np.ndarray = field(default_factory=lambda: np.eye(3)[:2])

    def to_cartesian(self, x: float, y: float) -> np.ndarray:
        """The Cartesian point (Å, shape (3,)) drawn at in-plane coordinates ``(x, y)`` (Å)."""
        axes = np.asarray(self.axes, float)
        return np.asarray(self.origin, float) + float(x) * axes[0] + float(y) * axes[1]

    def to_plane(self, points) -> tuple[np.ndarray, np.ndarray]:
        """In-plane coordinates (m, 2) of Cartesian ``points`` (m, 3) and their distances (Å) from the plane."""
        pts = np.asarray(points, float).reshape(-1, 3) - np.asarray(self.origin, float)
        axes = np.asarray(self.axes, float)
        xy = np.linalg.lstsq(axes.T, pts.T, rcond=None)[0].T  # the axes need not be orthogonal (skewed cells)
        off = np.linalg.norm(pts - xy @ axes, axis=1)
        return xy, off


@dataclass(frozen=True)
class LineData:
    """ELF along a line: ``s`` (Å) and one curve per available field; ``band`` = ±1 σ of the ensemble."""

    s: np.ndarray
    curves: dict
    band: tuple | None
    title: str


class AppState(param.Parameterized):
    """All choices of one app session, and the results derived from them."""

    case = param.Selector(default=None, objects=[], doc="case shown (bundled or uploaded)")
    view_field = param.Selector(default="prediction", objects=list(FIELD_KINDS), doc="ELF drawn in 3D and in the slice")
    r_cut = param.Selector(default=ZOO_DEFAULT[0], objects=list(DEFAULT_R_CUTS),
                           doc="descriptor cutoff r_cut of the zoo model, Å")
    l_max = param.Selector(default=ZOO_DEFAULT[1], objects=list(DEFAULT_L_MAXS),
                           doc="angular order l_max of the zoo model")
    training = param.Selector(
        default="fluid", objects=list(TRAINING_SETS),
        doc="training data of the model: the fluid snapshots (zoo, paper protocol) or fluid + 80 atomic crystals "
        "(r_cut 3.0 Å, l_max 2 only; for atomic or crystalline hydrogen)",
    )
    n_shells = param.Integer(default=0, bounds=(0, 8), doc="k-space correction: reciprocal shells (0 = none)")
    k_max = param.Number(
        default=0.0, bounds=(0.0, 4.0), step=0.05, doc="k-space correction: keep |G| ≤ k_max, Å⁻¹ (0 = none)"
    )
    k_basis = param.Selector(
        default="shells", objects=list(K_BASES),
        doc="k-basis truncation by number of shells or by k_max (follows the slider moved last)",
    )
    k_source = param.Selector(
        default="reference", objects=list(K_SOURCES),
        doc="k-correction fitted to the DFT reference (oracle, k-basis sliders) or predicted from the structure "
        "(long-range model, no reference; its own basis)",
    )
    iso = param.Number(default=0.75, bounds=(0.05, 0.95), step=0.01, doc="ELF iso value of the 3D surface")
    show_residual = param.Boolean(default=False, doc="also draw the residual isosurfaces ±residual_iso")
    residual_iso = param.Number(default=0.1, bounds=(0.02, 0.4), step=0.01, doc="|ELF_pred − ELF_ref| of the residual isosurfaces")
    show_atoms = param.Boolean(default=True)
    show_cell = param.Boolean(default=True)
    slice_mode = param.Selector(default="c", objects=["a", "b", "c", "atoms"], doc="plane along a lattice axis or through three atoms")
    slice_position = param.Number(default=0.5, bounds=(0.0, 1.0), step=0.01, doc="fractional position of the plane along its axis")
    plane_atom_1 = param.Selector(default=0, objects=[0])
    plane_atom_2 = param.Selector(default=0, objects=[0])
    plane_atom_3 = param.Selector(default=0, objects=[0])
    line_atom_1 = param.Selector(default=0, objects=[0], doc="start atom of the line scan")
    line_atom_2 = param.Selector(default=0, objects=[0], doc="end atom of the line scan")
    line_source = param.Selector(
        default="atoms", objects=list(LINE_SOURCES), doc="line scan between the two atoms or two clicked points"
    )
    line_start = param.NumericTuple(default=None, length=3, allow_None=True, doc="first clicked point, Cartesian Å")
    line_end = param.NumericTuple(default=None, length=3, allow_None=True, doc="second clicked point, Cartesian Å")
    pending_point = param.NumericTuple(
        default=None, length=3, allow_None=True, doc="a clicked point waiting for the second click, Cartesian Å"
    )
    near_plane = param.Number(default=0.6, bounds=(0.05, 3.0), doc="atoms within this distance (Å) of the plane are marked")
    squeeze = param.Number(default=1.0, bounds=(0.8, 1.2), step=0.01, doc="scale factor of the cell (prediction only)")
    teaching = param.Boolean(default=False, doc="show the guided explanations")
    preset = param.Integer(default=0, bounds=(0, None), doc="index of the guided-tour step")
    message = param.String(default="", doc="last message for the user (errors from uploads...)")
    screening = param.String(default="", doc="name of the open screening database ('' when none)")
    screen_frame = param.Integer(default=0, bounds=(0, None), doc="frame of the open screening run shown")

    pipeline = param.Parameter(default=None, doc="cached elfcore results (shared per server)", precedence=-1)

    def __init__(self, pipeline: Pipeline | None = None, **params):
        super().__init__(pipeline=pipeline or default_pipeline(), **{k: v for k, v in params.items() if k != "case"})
        self._labels: dict[str, str] = {}
        self._refresh_zoo()
        self._refresh_cases()
        if params.get("case") is not None:
            self.case = params["case"]
        self._on_case()
        self.param.watch(lambda *_: setattr(self, "message", ""), list(MESSAGE_RESET_DEPS))
        self.param.watch(lambda *_: self._on_case(), "case")
        self.param.watch(lambda *_: self._on_training(), "training")
        self.param.watch(lambda *_: self._on_descriptor(), ["r_cut", "l_max"])
        self.param.watch(lambda *_: setattr(self, "k_basis", "shells"), "n_shells")
        self.param.watch(lambda *_: setattr(self, "k_basis", "k_max"), "k_max")
        self.param.watch(lambda *_: setattr(self, "line_source", "atoms"), ["line_atom_1", "line_atom_2"])
        self.param.watch(lambda *_: self._show_frame(), "screen_frame")

    # ---------------------------------------------------------------- setup
    def _refresh_zoo(self) -> None:
        try:
            r_cuts, l_maxs = self.pipeline.engine.zoo_axes()
        except ElfcoreError as exc:
            self.message = str(exc)
            return
        offered = ["fluid"]
        for name, has in (("crystals", "has_crystal_model"), ("hydrides", "has_hydride_model")):
            try:
                if getattr(self.pipeline.engine, has)():
                    offered.append(name)
            except ElfcoreError:
                pass
        self.param.training.objects = offered
        if r_cuts and l_maxs:
            self.param.r_cut.objects = list(r_cuts)
            self.param.l_max.objects = list(l_maxs)
            if self.r_cut not in r_cuts:  # the default entry, else the baseline, else the middle one
                self.r_cut = next((r for r in (ZOO_DEFAULT[0], ZOO_BASELINE[0]) if r in r_cuts), r_cuts[len(r_cuts) // 2])
            if self.l_max not in l_maxs:
                self.l_max = next((l for l in (ZOO_DEFAULT[1], ZOO_BASELINE[1]) if l in l_maxs), l_maxs[0])

    def use_entry(self, which: str) -> None:
        """Switch to the fluid zoo's ``"default"`` entry (the most accurate, :data:`elfcore.zoo.DEFAULT`) or the
        paper's ``"baseline"`` (:data:`elfcore.zoo.BASELINE`), when the zoo has it."""
        r_cut, l_max = {"default": ZOO_DEFAULT, "baseline": ZOO_BASELINE}[which]
        if r_cut not in self.param.r_cut.objects or l_max not in self.param.l_max.objects:
            self.message = f"The zoo has no entry r_cut {r_cut} Å, l_max {l_max}."
            return
        self.param.update(training="fluid", r_cut=r_cut, l_max=l_max)

    def _crystals_off_baseline(self) -> bool:
        """Crystal model chosen while r_cut / l_max are not the baseline descriptor, the only one it has."""
        from elfcore.zoo import BASELINE

        return self.training == "crystals" and (float(self.r_cut), int(self.l_max)) != BASELINE

    def _on_training(self) -> None:
        """The crystal model exists at the baseline descriptor only: move the sliders there."""
        if self._crystals_off_baseline():
            from elfcore.zoo import BASELINE

            self.param.update(r_cut=BASELINE[0], l_max=BASELINE[1])
            self.message = ("The model trained on fluid + atomic crystals exists at r_cut 3.0 Å, l_max 2: "
                            "sliders moved there.")

    def _on_descriptor(self) -> None:
        """Other descriptor settings than the baseline exist in the fluid zoo only."""
        if self._crystals_off_baseline():
            self.training = "fluid"
            self.message = "Other r_cut / l_max: back to the fluid-trained zoo model."

    def _refresh_cases(self, *, keep_current: bool = False) -> None:
        """List the cases in the case menu; ``keep_current``: the caller sets the case right after
        (a screening frame), so the shown one is not replaced by the first case in between."""
        bundled = sort_cases(self.pipeline.scan())  # fluid by pressure, crystals, training cases last
        infos = bundled + [
            i for k, i in self.pipeline.infos.items() if k in getattr(self, "_uploads", set())
        ]
        frame_case = getattr(self, "_frame_case", None)
        if frame_case in self.pipeline.infos:  # the screening frame shown last (not every frame of the run)
            infos.append(self.pipeline.infos[frame_case])
        keys = [i.key for i in infos]
        if keep_current and self.case in self.pipeline.infos and self.case not in keys:
            # the frame shown until the caller sets the next one: a menu whose value it does not list falls
            # back to its first case, which would be drawn in between
            infos.append(self.pipeline.infos[self.case])
        self.param.case.objects = {i.label: i.key for i in infos}
        self._labels = {i.key: i.label for i in infos}
        if self.case not in keys and not keep_current:
            self.case = self._first_case(infos)

    @staticmethod
    def _first_case(infos: list[CaseInfo]) -> str | None:
        """The case shown first: the lowest-pressure fluid snapshot with a reference (the models' domain),
        else the lowest-pressure case with a reference, else the first case."""
        if not infos:
            return None
        with_p = [i for i in infos if i.pressure_gpa is not None and i.has_reference]
        fluid = [i for i in with_p if i.family == "fluid"]
        return (fluid or with_p or infos)[0].key

    def _on_case(self) -> None:
        """Effect of a case change: atom lists follow the new structure.

        All follow-up values are set in one batch, so every view redraws once for them
        (one at a time, each would redraw the 3D scene, slices and line scan again).
        """
        n = self.n_atoms
        atoms = list(range(max(n, 1)))
        values: dict = {}
        for name, default in (
            ("plane_atom_1", 0), ("plane_atom_2", 1), ("plane_atom_3", 2), ("line_atom_1", 0), ("line_atom_2", 1)
        ):
            self.param[name].objects = atoms
            values[name] = min(default, len(atoms) - 1)
        if n >= 2:
            structure = self.pipeline.structure(self.case)
            values["line_atom_1"], values["line_atom_2"] = default_line_atoms(
                structure.get_positions(), structure.cell[:]
            )
        # clicked points belong to the previous structure
        values.update(line_source="atoms", line_start=None, line_end=None, pending_point=None)
        if self.view_field != "prediction" and not self.case_info().has_reference:
            values["view_field"] = "prediction"
        note = self._model_for_case(values)
        self.param.update(**values)
        if note:  # after the update: a change of training clears the message
            self.message = note

    def _model_for_case(self, values: dict) -> str:
        """Put the training set the case's elements need into ``values``; the message to show (or ``""``).

        A structure with elements besides H gets the hydride model when it covers them (and a
        message naming the choice), or a message naming the elements no model knows; a pure
        hydrogen case leaves the hydride model for the fluid zoo.
        """
        if self.case is None or self.n_atoms == 0:
            return ""
        try:
            training, reason = self.pipeline.engine.training_for(self.pipeline.structure(self.case))
        except ElfcoreError as exc:
            return f"No model for this structure: {exc}"
        if training is not None:
            values["training"] = training
            return f"Model: the {training} model ({reason})."
        if self.training == "hydrides":
            values["training"] = "fluid"
        return ""

    # ---------------------------------------------------------------- info
    @property
    def n_atoms(self) -> int:
        if self.case is None:
            return 0
        return int(self.pipeline.case(self.case).sizes.get("atom", 0))

    def case_info(self) -> CaseInfo:
        """Metadata of the current case."""
        if self.case is None:
            return CaseInfo(key="", label="(no case)", has_reference=False)
        return self.pipeline.infos[self.case]

    def has_crystal_model(self) -> bool:
        """Whether the model trained on fluid + crystals is offered."""
        return "crystals" in self.param.training.objects

    @param.depends("case", "training")
    def domain_warning(self) -> str:
        """A warning when the chosen model was not trained on this kind of case (naming the better one), else ``""``."""
        if self.case is None:
            return ""
        return domain_warning(self.case_info(), self.training, self.has_crystal_model())

    def case_label(self, key: str | None = None) -> str:
        key = self.case if key is None else key
        return self._labels.get(key, str(key))

    # ---------------------------------------------------------------- uploads
    def upload(self, filename: str, data: bytes) -> bool:
        """Read an uploaded file, add it as a case and select it.

        A field file (ELFCAR, cube, XSF, netCDF) gives a case with reference
        (prediction + residual); a structure file gives prediction only. On
        any problem the reason goes to :attr:`message` and ``False`` is
        returned; the session keeps its previous case.
        """
        name = _display_name(filename)
        try:
            return self._upload(name, data)
        except Exception as exc:  # every failure is a message in the page, never a dead session
            detail = " ".join(str(exc).split())[:300] or type(exc).__name__
            self.message = f"Could not use '{name}': {detail}"
            log.warning("upload %s failed: %s: %s", name, type(exc).__name__, detail)
            return False

    def _upload(self, name: str, data: bytes) -> bool:
        if not data:
            self.message = f"Upload '{name}' is empty."
            return False
        if len(data) > MAX_UPLOAD_BYTES:
            self.message = (
                f"Upload '{name}' is {len(data) / 2**20:.1f} MiB; the limit is {MAX_UPLOAD_BYTES / 2**20:.0f} MiB."
            )
            return False
        suffix = Path(name).suffix.lower()
        if suffix in SCREENING_EXTENSIONS:
            with tempfile.TemporaryDirectory(prefix="elfcore-upload-") as tmp:
                path = Path(tmp) / _file_name(name)
                path.write_bytes(data)
                return self.open_screening(path, name=name)
        known = FIELD_EXTENSIONS + STRUCTURE_EXTENSIONS + SCREENING_EXTENSIONS
        if suffix not in known and not any(v in name.upper() for v in _VASP_NAMES):
            self.message = (
                f"Upload '{name}': unknown file type '{suffix or name}'. Accepted: ELFCAR, POSCAR/CONTCAR, "
                + ", ".join(known)
                + "."
            )
            return False
        with tempfile.TemporaryDirectory(prefix="elfcore-upload-") as tmp:
            path = Path(tmp) / _file_name(name)
            path.write_bytes(data)
            try:
                ds = self.pipeline.engine.read_upload(path)
                info = self.pipeline.add_case(ds, label=f"upload: {name}", family="upload", role="upload")
            except (ElfcoreError, ValueError, KeyError, IndexError, OSError, UnicodeDecodeError) as exc:
                self.message = f"Could not use '{name}': {' '.join(str(exc).split())[:300]}"
                log.info("upload %s refused: %s", name, exc)
                return False
        if not hasattr(self, "_uploads"):
            self._uploads: set[str] = set()
        self._uploads.add(info.key)
        self._refresh_cases()
        self.case = info.key
        note = self._model_for_case({})  # the model note _on_case showed, which this message replaces
        kind = "ELF field: prediction and residual" if info.has_reference else "structure: prediction only"
        self.message = f"Loaded '{name}' ({self.n_atoms} atoms, {kind})." + (f" {note}" if note else "")
        return True

    # ---------------------------------------------------------------- screening runs
    @property
    def run(self) -> ScreeningRun | None:
        """The open screening run, or ``None``."""
        return getattr(self, "_run", None)

    def open_screening(self, path: str | os.PathLike, *, name: str | None = None) -> bool:
        """Open the results database of ``elfcore screen`` and show its first frame.

        The frames are read at once (the file may go afterwards) and sorted along the
        run's axis (pressure, else MD time, else frame number). On any problem the
        reason goes to :attr:`message` and ``False`` is returned.
        """
        import hashlib

        name = _display_name(name or Path(path).name)
        try:
            results, frames = self.pipeline.engine.read_screening(path)
            if not frames:
                self.message = f"'{name}' holds no screened frame (status 'ok'): nothing to show."
                return False
            with open(path, "rb") as fh:
                run_id = hashlib.sha1(fh.read()).hexdigest()[:12]
            run = open_run(name, run_id, results, frames)
        except (ElfcoreError, OSError, ValueError) as exc:
            self.message = f"Could not open '{name}': {' '.join(str(exc).split())[:300]}"
            log.info("screening database %s refused: %s", name, exc)
            return False
        self._run = run
        choice = {k: v for k, v in run.app_model().items() if v in self.param[k].objects}
        if len(choice) != 3:  # show the frames with the model the run was screened with, when the app has it
            choice = {}
        self.param.screen_frame.bounds = (0, run.n_frames - 1)
        same_name = self.screening == name
        # the first frame and the run's model in one update: the views draw that frame once, with that
        # model (one at a time, the case shown before would first be predicted again with the new model)
        self._show_frame_case(0, screen_frame=0, screening=name, **choice)
        if same_name:
            self.param.trigger("screening")  # another database of the same name: the views redraw
        model = f", shown with its model {run.model}" if len(choice) == 3 else ""
        self.message = (f"Opened the screening run '{name}': {run.n_frames} frames along {run.x_label}{model}. "
                        "Step with the Frame player, or click the φ plot.")
        return True

    def _show_frame(self) -> None:
        """Make frame :attr:`screen_frame` of the open run the shown case (a structure case, prediction only)."""
        if self.run is not None:
            self._show_frame_case(int(self.screen_frame))

    def _show_frame_case(self, index: int, **values) -> None:
        """Show frame ``index`` of the open run, with ``values`` of other parameters set in the same update;
        the case shown before leaves the case menu once the frame is shown."""
        self.param.update(case=self._frame_key(index), **values)
        self._refresh_cases()

    def _frame_key(self, index: int) -> str:
        """Register frame ``index`` of the open run as a case (once) and list it in the case menu; its key."""
        run = self.run
        i = int(min(max(index, 0), run.n_frames - 1))
        key = run.case_key(i)
        if key not in self.pipeline.infos:
            ds = self.pipeline.engine.structure_case(run.frames[i], source=run.source(i))
            self.pipeline.add_case(ds, label=run.label(i), key=key, family="screening", role="screening",
                                   pressure_gpa=run.pressure(i))
        self._frame_case = key
        self._refresh_cases(keep_current=True)
        return key

    def step_frame(self, delta: int) -> int:
        """Move the shown frame by ``delta`` (clamped to the run); returns the new index."""
        if self.run is not None:
            self.screen_frame = int(min(max(self.screen_frame + int(delta), 0), self.run.n_frames - 1))
        return self.screen_frame

    def pick_frame_at(self, x: float) -> int:
        """Show the frame nearest ``x`` on the run's axis (a click on the φ plot); returns its index."""
        if self.run is not None:
            self.screen_frame = self.run.nearest(x)
        return self.screen_frame

    @param.depends("screen_frame", "screening", "case")
    def frame_summary(self) -> str:
        """Markdown: the frame shown and its numbers from the database (empty when no run is open)."""
        run = self.run
        if run is None:
            return ""
        text = run.summary(int(self.screen_frame))
        if self.case != run.case_key(int(self.screen_frame)):
            text += " — *another case is shown now; move the Frame player to come back*"
        return text

    # ---------------------------------------------------------------- k-correction
    def k_args(self) -> tuple[int, float]:
        """``(n_shells, k_max)`` of the active k-basis truncation; the other one is 0 (both 0 = no correction)."""
        if self.k_basis == "k_max":
            return 0, round(float(self.k_max), 4)
        return int(self.n_shells), 0.0

    def k_key(self) -> tuple:
        """Hashable key of the active k-correction: ``("predicted",)`` or ``(n_shells, k_max)``."""
        return ("predicted",) if self.k_source == "predicted" else self.k_args()

    def correction_label(self) -> str:
        """The k-correction setting in words (``"2 shells"``, ``"k_max = 1.50 Å⁻¹"``, ``"predicted, no
        reference"``, ``"none"``; no ``|``: tables)."""
        if self.k_source == "predicted":
            return "predicted, no reference"
        n_shells, k_max = self.k_args()
        if n_shells > 0:
            return f"{n_shells} shell{'s' if n_shells != 1 else ''}"
        if k_max > 0:
            return f"k_max = {k_max:.2f} Å⁻¹"
        return "none"

    # ---------------------------------------------------------------- line scan by clicks
    def pick_point(self, x: float, y: float) -> tuple | None:
        """A click at in-plane coordinates ``(x, y)`` (Å) of the current slice.

        The first click is kept in :attr:`pending_point`; the second one makes
        the line scan run between the two clicked points (``line_source =
        "points"``). Returns the Cartesian point (Å) or ``None`` when there is
        no slice to click on.
        """
        sd = self.slice_data()
        if isinstance(sd, str):
            self.message = f"Line scan: no slice to pick points on ({sd})"
            return None
        p = tuple(float(v) for v in sd.to_cartesian(x, y))
        first = self.pending_point
        if first is None:
            self.pending_point = p
            self.message = (
                f"Line scan: first point ({p[0]:.2f}, {p[1]:.2f}, {p[2]:.2f}) Å; click a second point on the slice."
            )
            return p
        if np.linalg.norm(np.subtract(p, first)) < 1e-6:
            self.message = "Line scan: the second point is the first one; click another point."
            return p
        self.param.update(line_start=first, line_end=p, pending_point=None, line_source="points")
        self.message = f"Line scan between the clicked points ({np.linalg.norm(np.subtract(p, first)):.2f} Å)."
        return p

    # ---------------------------------------------------------------- derived
    @param.depends(*FIELD_DEPS)
    def fields(self) -> FieldSet:
        """All fields for the current choices (cached per setting)."""
        if self.case is None:
            return FieldSet(error="No case available. Upload a structure or field file.")
        p = self.pipeline
        squeezed = abs(self.squeeze - 1.0) > 1e-9
        try:
            atoms = p.structure(self.case, self.squeeze)
            pred, std = p.prediction(self.case, self.r_cut, self.l_max, self.squeeze, training=self.training)
        except ElfcoreError as exc:
            ref = None if squeezed else p.reference(self.case)
            return FieldSet(reference=ref, atoms=p.structure(self.case), error=f"No prediction: {exc}")
        if squeezed:
            return FieldSet(prediction=pred, std=std, atoms=atoms, squeezed=True)
        ref = p.reference(self.case)
        n_shells, k_max = self.k_args()
        corr = None
        if ref is not None or self.k_source == "predicted":  # the predicted correction needs no reference
            try:
                corr = p.corrected(self.case, self.r_cut, self.l_max, n_shells, k_max=k_max, training=self.training,
                                   source=self.k_source)
            except ElfcoreError as exc:
                self.message = f"No k-correction: {exc}"
        if ref is None:
            return FieldSet(prediction=pred, std=std, corrected=corr, atoms=atoms)
        key = (self.case, self.r_cut, self.l_max, self.training)
        res = p.cache.get(("res",) + key, lambda: _difference(pred, ref, "residual"))
        res_c = None
        if corr is not None:
            res_c = p.cache.get(("resc",) + key + self.k_key(), lambda: _difference(corr, ref, "residual"))
        return FieldSet(
            prediction=pred, std=std, reference=ref, corrected=corr, residual=res, residual_corrected=res_c,
            atoms=atoms,
        )

    def shown_kind(self, fs: FieldSet | None = None) -> str:
        """The ELF kind actually drawn: the chosen one, or the prediction when that is missing."""
        fs = self.fields() if fs is None else fs
        if fs.get(self.view_field) is not None:
            return self.view_field
        for kind in ("prediction", "reference"):
            if fs.get(kind) is not None:
                return kind
        return self.view_field

    @param.depends(*FIELD_DEPS)
    def metrics(self) -> dict:
        """MAE/RMSE/R² before/after correction and φ/molecularity of reference, prediction and correction.

        ``correction_warning`` is a sentence when the k-correction makes any metric the engine reports
        with it worse (:func:`app.catalog.correction_warning`), else ``""``.
        """
        fs = self.fields()
        out: dict[str, Any] = {"errors": {}, "topology": {}, "note": ""}
        if fs.error:
            out["note"] = fs.error
        if fs.squeezed:
            out["note"] = "Squeezed cell: prediction only, no DFT reference."
        p = self.pipeline
        n_shells, k_max = self.k_args()
        if fs.reference is not None and fs.prediction is not None:
            try:
                out["errors"] = p.metrics(self.case, self.r_cut, self.l_max, n_shells, k_max=k_max,
                                          training=self.training, source=self.k_source)
            except ElfcoreError as exc:
                out["note"] = f"No metrics: {exc}"
            try:
                info = p.correction_info(self.case, self.r_cut, self.l_max, n_shells, k_max=k_max,
                                         training=self.training, source=self.k_source)
            except ElfcoreError:
                info = {}
            out["correction_warning"] = correction_warning(info, self.correction_label())
        keys = {
            "reference": (self.case, "ref"),
            "prediction": (self.case, "pred", self.r_cut, self.l_max, self.training, round(self.squeeze, 4)),
            "corrected": (self.case, "corr", self.r_cut, self.l_max, self.training) + self.k_key(),
        }
        for kind, k in keys.items():
            fld = fs.get(kind)
            if fld is None:
                continue
            try:
                out["topology"][kind] = p.topology(k, fld)
            except ElfcoreError as exc:
                out["note"] = f"No topology: {exc}"
                break
        return out

    @param.depends(*SLICE_DEPS)
    def slice_data(self) -> SliceData | str:
        """The 2D cut of the shown ELF and of the residual, or a message string.

        The last result is kept for the same choices: the slice view and the slice plane of
        the 3D view both ask for it after one change.
        """
        key = tuple(getattr(self, name) for name in SLICE_DEPS)
        last = getattr(self, "_slice_memo", None)
        if last is not None and last[0] == key:
            return last[1]
        out = self._slice_data()
        self._slice_memo = (key, out)
        return out

    def _slice_data(self) -> SliceData | str:
        from elfcore.grid import field_cell, lattice_slice, plane_slice, slice_atoms, slice_geometry

        fs = self.fields()
        kind = self.shown_kind(fs)
        elf = fs.get(kind)
        if elf is None:
            return fs.error or "Nothing to show."
        res = fs.residual_corrected if (kind == "corrected" and fs.residual_corrected is not None) else fs.residual
        if self.slice_mode == "atoms":
            trio = (self.plane_atom_1, self.plane_atom_2, self.plane_atom_3)
            if len(set(trio)) < 3:
                return "Choose three different atoms for the plane."
            spacing = float(np.min(np.linalg.norm(field_cell(elf), axis=1) / np.asarray(elf.shape)))
            try:
                e2 = plane_slice(elf, atoms=trio, resolution=spacing, order=1)
                r2 = None if res is None else plane_slice(res, atoms=trio, resolution=spacing, order=1)
            except ElfcoreError as exc:
                return f"No plane: {exc}"
            labels = ("u (Å)", "v (Å)", f"plane through atoms {trio[0]}, {trio[1]}, {trio[2]}")
        else:
            axis = self.slice_mode
            e2 = lattice_slice(elf, axis, self.slice_position)
            r2 = None if res is None else lattice_slice(res, axis, self.slice_position)
            other = [d for d in ("a", "b", "c") if d != axis]
            title = f"plane {axis} = {e2.attrs['slice_position']:.3f}"
            labels = (f"along {other[0]} (Å)", f"along {other[1]} (Å)", title)
        geometry = slice_geometry(e2)
        xy, idx = slice_atoms(e2, self.near_plane)
        return SliceData(
            np.asarray(e2.values), None if r2 is None else np.asarray(r2.values), geometry.x, geometry.y,
            *labels, xy, idx, kind, origin=geometry.origin, axes=geometry.axes,
        )

    @param.depends(*LINE_DEPS)
    def line_data(self) -> LineData | str:
        """ELF of every available field along the line (two atoms or two clicked points), or a message."""
        from elfcore.grid import line_profile

        fs = self.fields()
        by_points = self.line_source == "points" and self.line_start is not None and self.line_end is not None
        if by_points:
            ends = dict(start=np.asarray(self.line_start), end=np.asarray(self.line_end), minimum_image_path=False)
            a, b = self.line_start, self.line_end
            what = f"({a[0]:.2f}, {a[1]:.2f}, {a[2]:.2f}) → ({b[0]:.2f}, {b[1]:.2f}, {b[2]:.2f}) Å"
        else:
            i, j = int(self.line_atom_1), int(self.line_atom_2)
            if i == j:
                return "Choose two different atoms for the line scan."
            ends = dict(atoms=(i, j))
            what = f"atom {i} → atom {j}"
        curves = {}
        s = None
        n = 160
        for kind in FIELD_KINDS:
            fld = fs.get(kind)
            if fld is None:
                continue
            prof = line_profile(fld, n=n, order=1, **ends)
            s = np.asarray(prof.coords["s"])
            curves[kind] = np.asarray(prof.values)
        if s is None:
            return fs.error or "Nothing to show."
        band = None
        if fs.std is not None and "prediction" in curves:
            sd = np.asarray(line_profile(fs.std, n=n, order=1, **ends).values)
            band = (curves["prediction"] - sd, curves["prediction"] + sd)
        return LineData(s, curves, band, f"{what} ({s[-1]:.2f} Å)")

    # ---------------------------------------------------------------- teaching
    def presets(self) -> list[dict]:
        """The guided tour (:func:`app.catalog.guided_tour`): the fluid test snapshots at the paper's
        pressures, lowest first, then a few atomic test crystals with the crystal model."""
        crystals = self.has_crystal_model()
        return [
            {"case": st.case, "label": f"{st.title}: {self.case_label(st.case)}", "pressure_gpa": st.pressure_gpa,
             "training": st.training if st.training in self.param.training.objects else "fluid", "text": st.text}
            for st in guided_tour(self.pipeline.scan(), crystal_model=crystals)
        ]

    def apply_preset(self, index: int) -> dict | None:
        """Show step ``index`` (modulo the number of steps) of the guided tour; returns it.

        The step sets the case and the model that fits it (and the squeeze back to 1); the iso value,
        the k-correction and the views are left as they are. The message names the step, the model
        and what to look at.
        """
        presets = self.presets()
        if not presets:
            self.message = "No bundled cases to tour."
            return None
        i = index % len(presets)
        pr = presets[i]
        moved = pr["training"] == "crystals" and self._crystals_off_baseline_for(pr["training"])
        self.param.update(case=pr["case"], training=pr["training"], squeeze=1.0, preset=i)
        self._touring = True
        model = ("model trained on fluid + atomic crystals" if pr["training"] == "crystals"
                 else "model trained on the fluid")
        note = " (r_cut and l_max moved to 3.0 Å and 2, the only ones it has)" if moved else ""
        self.message = f"Tour {i + 1}/{len(presets)} — {pr['label']}, {model}{note}. {pr['text']}"
        return pr

    def _crystals_off_baseline_for(self, training: str) -> bool:
        from elfcore.zoo import BASELINE

        return training == "crystals" and (float(self.r_cut), int(self.l_max)) != BASELINE

    def next_preset(self) -> dict | None:
        """Step to the next step of the guided tour; the first call of a session shows step 1."""
        return self.apply_preset(self.preset + 1 if getattr(self, "_touring", False) else 0)

    # ---------------------------------------------------------------- export
    def export_stem(self) -> str:
        """The case part of an export's file name (case file stem, upload, or screening run and frame)."""
        stem = Path(self.case_label()).stem.split(" ")[0].replace("upload:", "upload")
        if self.run is not None and self.case == self.run.case_key(self.screen_frame):
            stem = f"{_file_name(Path(self.run.name).stem)}_frame{int(self.screen_frame) + 1}"
        return stem

    def export_tag(self, kind: str) -> str:
        """The settings part of an export's file name: ``r{r_cut}_l{l_max}``, the training set when it is
        not the fluid, and the k-correction for a corrected field."""
        n_shells, k_max = self.k_args()
        k_tag = "_klongrange" if self.k_source == "predicted" else f"_k{n_shells}" if n_shells else f"_kmax{k_max:g}"
        t_tag = "_crystals" if self.training == "crystals" and kind != "reference" else ""
        return f"r{self.r_cut:g}_l{self.l_max}{t_tag}{k_tag if kind == 'corrected' else ''}"

    def png_name(self, view: str) -> str:
        """File name of a picture export: case, view (``slice`` with its plane, or ``3d`` with its iso
        value), the field shown and the settings, e.g. ``fluid_p076_t0350_slice_c0.50_prediction_r2.5_l3.png``."""
        kind = self.shown_kind()
        if view == "slice":
            where = "atoms" if self.slice_mode == "atoms" else f"{self.slice_mode}{self.slice_position:.2f}"
            view = f"slice_{where}"
        elif view == "3d":
            view = f"3d_iso{self.iso:.2f}"
        return f"{self.export_stem()}_{view}_{kind}_{self.export_tag(kind)}.png"

    def export_title(self) -> str:
        """One line naming what a picture export shows: case, field, model and correction."""
        kind = self.shown_kind()
        model = f"r_cut {self.r_cut:g} Å, l_max {self.l_max}, trained on {self.training}"
        text = f"{self.case_label()} · {kind} ELF · {model}"
        if kind == "corrected":
            text += f" · k-correction {self.correction_label()}"
        return text

    def export_field(self, kind: str, suffix: str) -> tuple[str, bytes]:
        """The field ``kind`` (``prediction``, ``reference``, ``corrected``, ``residual``) as file bytes.

        ``suffix`` is ``.cube`` or ``.nc`` (written by :func:`elfcore.io.write_field`).
        """
        from elfcore.io import write_field

        fs = self.fields()
        fld = fs.residual if kind == "residual" else fs.get(kind)
        if fld is None:
            raise ElfcoreError(f"no {kind} field for the current choices")
        name = f"{self.export_stem()}_{kind}_{self.export_tag(kind)}{suffix}"
        with tempfile.TemporaryDirectory(prefix="elfcore-export-") as tmp:
            path = os.path.join(tmp, name)
            write_field(fld, path)
            with open(path, "rb") as fh:
                return name, fh.read()


def _difference(a: xr.DataArray, b: xr.DataArray, name: str) -> xr.DataArray:
    out = a - b
    out.attrs = dict(a.attrs)
    out.name = name
    return out

