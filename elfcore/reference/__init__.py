"""Reference DFT data of dense hydrogen and metal hydrides: CP2K MD, ELF/density single points, QE cross-check.

Modules: :mod:`~elfcore.reference.cp2k` (inputs, runner, parsers),
:mod:`~elfcore.reference.structures` (fluid starts, pyxtal crystals),
:mod:`~elfcore.reference.hydrides` (metal-hydride prototypes and random hydrides),
:mod:`~elfcore.reference.builder` (the resumable dataset builder),
:mod:`~elfcore.reference.checks` (convergence, drift, summaries),
:mod:`~elfcore.reference.qe` (Quantum ESPRESSO cross-check).
The CLI is ``elfcore reference {list,md,build,converge,qe,summary}``.
"""
from __future__ import annotations

from .builder import PAPER_PRESSURES_GPA, ReferencePlan, build, plan_cases
from .cp2k import CP2KSettings, MDSettings

__all__ = ["PAPER_PRESSURES_GPA", "ReferencePlan", "build", "plan_cases", "CP2KSettings", "MDSettings"]
