"""An open screening run in the app: its frames in the order of the run's axis, and what each step shows.

A run is the results database of ``elfcore screen`` (read by :func:`elfcore.screen.read_frames`).
The app steps through its screened frames ("ok" rows); each frame becomes a structure case
(prediction only) when it is first shown. No Panel import: tests use it without a browser.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .pipeline import _finite

__all__ = ["ScreeningRun", "SCREENING_EXTENSIONS", "open_run"]

#: Upload names read as screening databases (SQLite files written by ``elfcore screen``).
SCREENING_EXTENSIONS = (".db", ".sqlite", ".sqlite3")


@dataclass(frozen=True)
class ScreeningRun:
    """The frames of one screening database, sorted along the run's horizontal axis.

    Attributes
    ----------
    name : str
        Shown name (the database's file name).
    run_id : str
        Short identity of the database (part of each frame's case key).
    results : xarray.Dataset
        The screened frames (:func:`elfcore.screen.results_dataset`), in axis order.
    frames : list of ase.Atoms
        Their structures, same order.
    x_name, x_label : str
        The axis (``"pressure"``, ``"time"`` or ``"frame"``) and its label.
    x : numpy.ndarray
        Axis value of each frame (ascending).
    """

    name: str
    run_id: str
    results: object
    frames: list
    x_name: str
    x_label: str
    x: np.ndarray

    @property
    def model(self) -> str:
        """The model the run was screened with (as ``elfcore screen`` recorded it), ``""`` if unknown."""
        import json

        try:
            return str(json.loads(self.results.attrs.get("elfcore_screen", "{}")).get("model", ""))
        except ValueError:
            return ""

    def app_model(self) -> dict:
        """The app's model choice (``training``, ``r_cut``, ``l_max``) that is the run's model, or ``{}``."""
        from elfcore.errors import ElfcoreError
        from elfcore.zoo import BASELINE, CRYSTAL_SPEC, parse_spec

        if self.model == CRYSTAL_SPEC:
            return {"training": "crystals", "r_cut": BASELINE[0], "l_max": BASELINE[1]}
        try:
            r_cut, l_max = parse_spec(self.model)
        except ElfcoreError:
            return {}
        return {"training": "fluid", "r_cut": float(r_cut), "l_max": int(l_max)}

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    def column(self, name: str) -> np.ndarray:
        """A numeric column of the results (``phi``, ``phi_std``, ``threshold_2d``...) per frame."""
        return np.asarray(self.results[name].values, dtype=float)

    def case_key(self, i: int) -> str:
        return f"screen:{self.run_id}:{int(i)}"

    def source(self, i: int) -> str:
        """``file@frame`` of frame ``i``."""
        atoms = self.frames[i]
        return f"{Path(str(atoms.info.get('source', '?'))).name}@{atoms.info.get('frame', i)}"

    def pressure(self, i: int) -> float | None:
        return _finite(self.results["pressure_gpa"].values[i])

    def label(self, i: int) -> str:
        """The case-list label of frame ``i``."""
        p = self.pressure(i)
        at = f", {p:.1f} GPa" if p is not None else ""
        return f"screening {self.name}: frame {i + 1}/{self.n_frames} ({self.source(i)}{at})"

    def nearest(self, x: float) -> int:
        """The frame whose axis value is nearest ``x``."""
        return int(np.argmin(np.abs(self.x - float(x))))

    def summary(self, i: int) -> str:
        """One Markdown line: where frame ``i`` is and what the database holds for it."""
        phi, std = self.column("phi")[i], self.column("phi_std")[i]
        t1, t2 = self.column("threshold_1d")[i], self.column("threshold_2d")[i]
        parts = [f"**Frame {i + 1}/{self.n_frames}** — {self.source(i)}"]
        if self.x_name != "frame":
            parts.append(f"{self.x_label} {self.x[i]:.1f}")
        if math.isfinite(phi):
            model = f" ({self.model})" if self.model else ""
            parts.append(f"φ in the database{model} {phi:.3f}" + (f" ± {std:.3f}" if math.isfinite(std) else ""))
        if math.isfinite(t1) and math.isfinite(t2):
            parts.append(f"1D/2D thresholds {t1:.3f}/{t2:.3f}")
        return " · ".join(parts)


def open_run(name: str, run_id: str, results, frames: list) -> ScreeningRun:
    """A :class:`ScreeningRun` of ``results``/``frames`` (:func:`elfcore.screen.read_frames`), sorted along its axis."""
    from elfcore.screen import x_axis

    x_name, x, x_label = x_axis(results)
    order = np.argsort(x, kind="stable")
    return ScreeningRun(
        name=name, run_id=run_id, results=results.isel(frame=order), frames=[frames[i] for i in order],
        x_name=x_name, x_label=x_label, x=np.asarray(x)[order],
    )
