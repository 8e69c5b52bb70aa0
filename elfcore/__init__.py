"""elfcore: predict, correct and analyse the ELF of dense hydrogen from atomic positions.

Pipeline entry points are re-exported here; everything else lives in its module.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import ElfcoreError  # noqa: F401
from .grid import make_case, make_field  # noqa: F401
from .io import read_case, read_field, write_case, write_field  # noqa: F401

__all__ = ["__version__", "ElfcoreError", "make_field", "make_case", "read_field", "write_field", "read_case", "write_case"]
