"""The one exception family of elfcore.

Every error a user can cause (bad file, bad setting, bad structure) is an
:class:`ElfcoreError`; the CLI turns it into a one-line message and exit code 1.
"""
from __future__ import annotations

__all__ = [
    "ElfcoreError",
    "FormatError",
    "UnknownFormatError",
    "GridError",
    "SettingsError",
    "SettingsMismatchError",
    "StructureError",
    "DFTError",
    "OutputError",
]


class ElfcoreError(Exception):
    """Base class of every error elfcore raises on purpose."""


class FormatError(ElfcoreError):
    """A file does not follow its format.

    Parameters
    ----------
    message : str
        What is wrong (value received, value expected).
    path : str, optional
        The file, when known.
    line : int, optional
        1-based line number, when known.
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f":{line}"
            where += ": "
        super().__init__(where + message)


class UnknownFormatError(ElfcoreError):
    """The file format could not be determined or is not supported."""


class GridError(ElfcoreError):
    """A field, cell or grid is invalid (zero size, zero volume, wrong dims, NaN...)."""


class SettingsError(ElfcoreError, ValueError):
    """A setting has a value outside its allowed range or set (the message names both).

    Also a :class:`ValueError`, so code that catches ``ValueError`` from settings
    validation keeps working.
    """


class SettingsMismatchError(ElfcoreError):
    """A model was given descriptors (or settings) other than the ones it was trained with."""


class StructureError(ElfcoreError):
    """An atomic structure is unusable (empty, NaN positions, unsupported species...)."""


class DFTError(ElfcoreError):
    """An external DFT run (CP2K, Quantum ESPRESSO) is missing, crashed or did not converge."""


class OutputError(ElfcoreError):
    """A result cannot be written (missing or read-only directory, disk full, file-size limit...)."""
