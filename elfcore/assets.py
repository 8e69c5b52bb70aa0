"""Where the shipped models and reference cases are: the one place that locates them.

elfcore ships two kinds of files beside its code:

- ``models`` — the model zoo (:mod:`elfcore.zoo`), a few MB of safetensors files. The
  wheel carries them as package data (``elfcore/_assets/models``), so ``zoo:`` names work
  after a plain ``pip install``.
- ``data`` — the reference cases (one netCDF file per DFT calculation, tens to hundreds
  of MB). They live in the source tree's ``assets/data`` only; the wheel does not carry
  them. To use them from an installed package, point ``ELFCORE_ASSETS`` at a copy of the
  repository's ``assets/`` folder (or ``ELFCORE_DATA_DIR`` at a folder of cases).
- ``screening`` — example results databases of ``elfcore screen`` over shipped cases (the
  app opens them); like ``data``, in the source tree only.

Each kind is looked up in this order, the first that applies wins:

1. the kind's own environment variable (``ELFCORE_ZOO_DIR``, ``ELFCORE_DATA_DIR``,
   ``ELFCORE_SCREENING_DIR``), taken as is;
2. ``$ELFCORE_ASSETS/<kind>`` when ``ELFCORE_ASSETS`` is set;
3. ``assets/<kind>`` of the source checkout this package is imported from (an editable install);
4. ``elfcore/_assets/<kind>`` installed with the package (the wheel).

When nothing is found the answer is the checkout's path (for ``models``, the package-data
path when there is no checkout), so that messages name a sensible place.
"""
from __future__ import annotations

import os
from pathlib import Path
from .errors import SettingsError

__all__ = ["ASSETS_ENV", "KIND_ENV", "KINDS", "assets_dirs", "asset_dir", "models_dir", "data_dir", "screening_dir"]

#: environment variable naming a folder laid out like the repository's ``assets/``
ASSETS_ENV = "ELFCORE_ASSETS"
#: kind → environment variable naming that kind's folder directly
KIND_ENV: dict[str, str] = {"models": "ELFCORE_ZOO_DIR", "data": "ELFCORE_DATA_DIR",
                            "screening": "ELFCORE_SCREENING_DIR"}
#: the kinds of shipped files
KINDS: tuple[str, ...] = tuple(KIND_ENV)

_PACKAGE = Path(__file__).resolve().parent
#: package data written into the wheel by the build (see setup.py)
_PACKAGE_ASSETS = _PACKAGE / "_assets"


def _checkout_assets() -> Path | None:
    """``assets/`` of the source checkout this package is imported from, or None when installed."""
    root = _PACKAGE.parent
    if (root / "pyproject.toml").is_file() and (root / "assets").is_dir():
        return root / "assets"
    return None


def assets_dirs(kind: str) -> list[Path]:
    """Candidate folders of one kind of shipped file, in lookup order (see the module docstring).

    Parameters
    ----------
    kind : str
        One of :data:`KINDS` (``"models"``, ``"data"`` or ``"screening"``).

    Raises
    ------
    ValueError
        For an unknown kind.
    """
    if kind not in KIND_ENV:
        raise SettingsError(f"asset kind {kind!r}; must be one of {list(KINDS)}")
    out = []
    env = os.environ.get(ASSETS_ENV)
    if env:
        out.append(Path(env) / kind)
    checkout = _checkout_assets()
    if checkout is not None:
        out.append(checkout / kind)
    out.append(_PACKAGE_ASSETS / kind)
    return out


def asset_dir(kind: str) -> Path:
    """The folder of one kind of shipped file (see the module docstring for the order).

    >>> asset_dir("models").name
    'models'
    """
    candidates = assets_dirs(kind)
    direct = os.environ.get(KIND_ENV[kind])
    if direct:
        return Path(direct)
    for path in candidates:
        if path.is_dir():
            return path
    checkout = _checkout_assets()
    return checkout / kind if checkout is not None else candidates[-1]


def models_dir() -> Path:
    """Folder of the shipped model zoo (``ELFCORE_ZOO_DIR`` overrides it)."""
    return asset_dir("models")


def data_dir() -> Path:
    """Folder of the shipped reference cases (``ELFCORE_DATA_DIR`` overrides it; not in the wheel)."""
    return asset_dir("data")


def screening_dir() -> Path:
    """Folder of the example screening databases (``ELFCORE_SCREENING_DIR`` overrides it; not in the wheel)."""
    return asset_dir("screening")
