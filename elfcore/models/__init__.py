"""ELF models (``docs/science.md`` §4) and their pickle-free storage.

``MLP``/``Ensemble`` are in :mod:`elfcore.models.mlp`; ``save_model``/``load_model``
in :mod:`elfcore.models.io`.
"""
from __future__ import annotations

from .io import load_model, read_header, save_model
from .mlp import MLP, Ensemble, ModelSettings

__all__ = ["MLP", "Ensemble", "ModelSettings", "save_model", "load_model", "read_header"]
