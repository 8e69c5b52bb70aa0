"""Which cases the app lists and tours, in which order and with which model (no Panel, no param).

Everything here is a pure function of the cases' metadata (:class:`~app.pipeline.CaseInfo`:
name, family, role, measured and target pressure), so it is tested as plain Python:

- :func:`case_label` — the label of a case: its name and measured pressure (and the MD target
  pressure for fluid snapshots), e.g. ``"fluid_p076_t0450 — 67.9 GPa (target 76)"``;
- :func:`sort_cases` — the full case list: fluid test snapshots by pressure, then the test crystals,
  then other cases, training cases last;
- :func:`guided_tour` — the curated tour: one fluid test snapshot at each of the paper's three
  pressures, lowest first, then a few atomic test crystals with the model trained on crystals;
- :func:`preferred_training` / :func:`domain_warning` — the model that fits a case, and the warning
  shown when the chosen model was not trained on that kind of structure;
- :func:`correction_warning` — the warning shown when the k-correction makes a case worse, read
  from the metrics the engine reports with the correction (``KCorrection.info``);
- :func:`default_line_atoms` — the default line scan: atom 0 to its second-nearest atom, across an
  intermolecular contact rather than along its own H₂ bond.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from elfcore.reference import PAPER_PRESSURES_GPA

__all__ = [
    "PAPER_PRESSURES_GPA",
    "TOUR_CRYSTALS",
    "TourStep",
    "is_training",
    "is_atomic_crystal",
    "is_crystal",
    "case_label",
    "sort_cases",
    "guided_tour",
    "preferred_training",
    "domain_warning",
    "default_line_atoms",
    "correction_warning",
]

#: Atomic test crystals the tour shows with the crystal model, in this order (those that are shipped).
#: cubic_sg207 and cubic_sg218 are the cases where the fluid-trained model fails most visibly.
TOUR_CRYSTALS = ("cubic_sg207", "cubic_sg218", "hexagonal_sg176")
_TARGET_TOLERANCE_GPA = 0.5


@dataclass(frozen=True)
class TourStep:
    """One step of the guided tour: the case, the model to show it with, and what to look at."""

    case: str
    training: str
    title: str
    text: str
    pressure_gpa: float | None = None


def _name(info) -> str:
    return getattr(info, "name", "") or str(info.label).split(" ")[0]


def is_training(info) -> bool:
    """A case the models were trained on (``role == "train"`` or ``_train`` in the name)."""
    return info.role == "train" or "_train" in _name(info)


def is_crystal(info) -> bool:
    """A static crystal (atomic or molecular), by family (``cubic…``, ``hexagonal…``)."""
    return str(info.family).startswith(("cubic", "hexagonal"))


def is_atomic_crystal(info) -> bool:
    """An atomic (non-molecular) crystal: the domain of the model trained on fluid + crystals."""
    return is_crystal(info) and "molecular" not in str(info.family) and "_h2_" not in _name(info)


def _fmt_gpa(p: float) -> str:
    return f"{p:.1f}".replace("-", "−")


def case_label(info) -> str:
    """The name and the measured pressure of a case, plus the MD target pressure or a training mark.

    >>> from app.pipeline import CaseInfo
    >>> case_label(CaseInfo(key="k", label="", name="fluid_p076_t0450", pressure_gpa=67.87,
    ...                     target_pressure_gpa=76.0, family="fluid", role="test"))
    'fluid_p076_t0450 — 67.9 GPa (target 76)'
    """
    name = _name(info)
    parts = [name]
    if info.pressure_gpa is not None:
        parts.append(f"{_fmt_gpa(info.pressure_gpa)} GPa")
    label = " — ".join(parts)
    target = getattr(info, "target_pressure_gpa", None)
    if target is not None:
        label += f" (target {target:g})"
    if is_training(info):
        label += " [training case]"
    return label


def _group(info) -> int:
    if is_training(info):
        return 3
    if info.family == "fluid":
        return 0
    if is_crystal(info):
        return 1
    return 2


def sort_cases(infos: Iterable) -> list:
    """Fluid test snapshots by measured pressure, then test crystals (atomic before molecular, by
    family and pressure), then other cases by pressure, training cases last (fluid first, by pressure)."""

    def key(i):
        p = i.pressure_gpa
        return (_group(i), i.family != "fluid", not is_atomic_crystal(i), str(i.family), p is None, p or 0.0,
                _name(i))

    return sorted(infos, key=key)


def _fluid_text(p_target: float, index: int) -> str:
    texts = (
        "Molecular fluid: ELF close to 1 on each H₂ bond and low between molecules. Look at the line scan: "
        "it dips between the two atoms, which belong to different molecules.",
        "Denser fluid: molecules come closer and the low-ELF gaps between them shrink. Compare the slice with "
        "the previous step and watch the residual map.",
        "Highest pressure of the tour: contacts between molecules strengthen; raise the iso value in 3D to see "
        "where the surfaces start to connect.",
    )
    return texts[min(index, len(texts) - 1)]


#: Cells with more atoms than this are a tour step only when no smaller cell is at the pressure.
TOUR_MAX_ATOMS = 200


def _large(info) -> bool:
    n = getattr(info, "n_atoms", None)
    return n is not None and n > TOUR_MAX_ATOMS


def guided_tour(infos: Iterable, crystal_model: bool = True) -> list[TourStep]:
    """The curated tour over the cases ``infos`` (``CaseInfo``), in order.

    1. For each pressure of :data:`PAPER_PRESSURES_GPA` (increasing), the fluid **test** snapshot
       whose MD target is that pressure and whose measured pressure is closest to it, with the
       fluid-trained model; small cells first (a 512-atom cell takes minutes to predict on a CPU).
    2. The atomic test crystals of :data:`TOUR_CRYSTALS` that are present, with the model trained
       on fluid + crystals (``"crystals"``) when ``crystal_model``.

    Training cases are never in the tour. Without any fluid snapshot at the paper's pressures (a
    data folder of other cases), the tour is one non-training case per pressure with a reference,
    lowest pressure first, each with the model that fits it (:func:`preferred_training`).
    """
    infos = [i for i in infos if not is_training(i) and i.has_reference]
    steps: list[TourStep] = []
    fluid = [i for i in infos if i.family == "fluid" and getattr(i, "target_pressure_gpa", None) is not None]
    for n, target in enumerate(PAPER_PRESSURES_GPA):
        at = [i for i in fluid if abs(i.target_pressure_gpa - target) <= _TARGET_TOLERANCE_GPA]
        if not at:
            continue
        best = min(at, key=lambda i: (_large(i), abs((i.pressure_gpa or target) - target), _name(i)))
        steps.append(TourStep(best.key, "fluid", f"Fluid at {target:g} GPa", _fluid_text(target, n),
                              best.pressure_gpa))
    by_name = {_name(i): i for i in infos if is_atomic_crystal(i)}
    for name in TOUR_CRYSTALS:
        info = by_name.get(name)
        if info is None:
            continue
        training = "crystals" if crystal_model else "fluid"
        model = "the model trained on fluid + atomic crystals" if crystal_model else "the fluid-trained model"
        text = (f"Atomic crystal {name}, shown with {model}. No H₂ molecules here: the ELF is spread over the "
                "lattice. Switch 'Model trained on' to fluid to see the fluid-trained model fail on it.")
        steps.append(TourStep(info.key, training, f"Crystal {name}", text, info.pressure_gpa))
    if steps:
        return steps
    by_p: dict[float, object] = {}
    for info in sorted((i for i in infos if i.pressure_gpa is not None), key=lambda i: (i.pressure_gpa, i.key)):
        by_p.setdefault(round(info.pressure_gpa, 1), info)
    return [
        TourStep(i.key, preferred_training(i) if crystal_model else "fluid", f"{p:.1f} GPa",
                 "Compare the prediction with the reference at this pressure.", p)
        for p, i in sorted(by_p.items())
    ]


def preferred_training(info) -> str:
    """``"crystals"`` for atomic crystals, ``"fluid"`` for everything else (fluid, molecular crystals, uploads)."""
    return "crystals" if is_atomic_crystal(info) else "fluid"


def domain_warning(info, training: str, crystal_model: bool = True) -> str:
    """A warning when the model ``training`` was not trained on this kind of case, naming the better one; else ``""``."""
    if training == "fluid" and is_atomic_crystal(info):
        better = ("the model trained on fluid + atomic crystals ('Model trained on: crystals')" if crystal_model
                  else "a model trained on crystals (not shipped here)")
        return (f"{_name(info)} is an atomic crystal, outside the training domain of the fluid-trained model: "
                f"expect large errors. Better: {better}.")
    return ""


def default_line_atoms(positions_cart: Sequence, cell) -> tuple[int, int]:
    """Atom 0 and its second-nearest atom (minimum image): a line across an intermolecular contact.

    The nearest atom of atom 0 is, in molecular hydrogen, its H₂ partner, and the ELF along that
    bond is flat near 1; the second-nearest atom belongs to another molecule, so the line scan
    shows the dip between molecules. With two atoms, ``(0, 1)``.

    >>> default_line_atoms([[0, 0, 0], [0.74, 0, 0], [2.0, 0, 0], [0, 3.5, 0]], np.eye(3) * 7.0)
    (0, 2)
    """
    from elfcore.grid import minimum_image

    pos = np.asarray(positions_cart, dtype=np.float64).reshape(-1, 3)
    if len(pos) < 3:
        return 0, min(1, len(pos) - 1)
    d = np.linalg.norm(minimum_image(pos - pos[0], np.asarray(cell, dtype=np.float64)), axis=1)
    d[0] = np.inf
    order = np.argsort(d, kind="stable")
    return 0, int(order[1])


#: The engine's before/after metrics (``KCorrection.info`` keys ``<name>_before``/``<name>_after``) the
#: correction warning reads, with whether a larger value is better.
_CORRECTION_METRICS = (("mae", "MAE", False), ("rmse", "RMSE", False), ("r2", "R²", True))


def _distinct_pair(before: float, after: float) -> str:
    """``before → after`` with 4 decimals, or as many more (up to 8) as it takes to tell them apart."""
    digits = next((d for d in range(4, 9) if f"{before:.{d}f}" != f"{after:.{d}f}"), 8)
    return f"{before:.{digits}f} → {after:.{digits}f}"


def correction_warning(info: dict, correction: str = "") -> str:
    """A warning when the k-correction made the case worse by any metric the engine reports, else ``""``.

    ``info`` is the ``info`` dict of the engine's correction (:class:`elfcore.kspace.KCorrection`);
    the metrics are compared as reported, nothing is recomputed.

    >>> correction_warning({"mae_before": 0.036, "mae_after": 0.040, "r2_before": 0.9, "r2_after": 0.92}, "2 shells")
    'The k-correction (2 shells) makes this case worse: MAE 0.0360 → 0.0400.'
    >>> correction_warning({"mae_before": 0.016812, "mae_after": 0.016834})
    'The k-correction makes this case worse: MAE 0.01681 → 0.01683.'
    >>> correction_warning({"mae_before": 0.04, "mae_after": 0.03})
    ''
    """
    worse = []
    for key, name, larger_is_better in _CORRECTION_METRICS:
        b, a = info.get(f"{key}_before"), info.get(f"{key}_after")
        if b is None or a is None or not (np.isfinite(a) and np.isfinite(b)):
            continue
        if (a < b) if larger_is_better else (a > b):
            worse.append(f"{name} {_distinct_pair(b, a)}")
    if not worse:
        return ""
    what = f"The k-correction ({correction})" if correction else "The k-correction"
    return f"{what} makes this case worse: {', '.join(worse)}."
