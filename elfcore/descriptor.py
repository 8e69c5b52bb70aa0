"""Grid-point-centred SOAP power spectrum for hydrogen (``science.md`` §3).

Public API (stable):

``DescriptorSettings``
    frozen hyperparameters (``r_cut``, ``n_radial``, ``l_max``, ``sigma``...).
``compute_descriptor(atoms, points_cart, settings, *, device, dtype, chunk_size)``
    power spectrum at arbitrary Cartesian points, tensor ``(n_points, n_features)``.
``compute_grid_descriptor(atoms, shape, settings, *, device, dtype, ...)``
    power spectrum at every point of a periodic grid, tensor
    ``(Na*Nb*Nc, n_features)`` in the C order of :func:`elfcore.grid.grid_points_frac`.

The implementation is in progress; see ``docs/descriptor.md``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from .errors import ElfcoreError

__all__ = [
    "DescriptorSettings",
    "compute_descriptor",
    "compute_grid_descriptor",
]


@dataclass(frozen=True)
class DescriptorSettings:
    """Hyperparameters of the grid-point SOAP descriptor.

    Parameters
    ----------
    r_cut : float
        Cutoff radius of the radial basis in Å (> 1, as DScribe's GTO basis needs).
    n_radial : int
        Number of radial basis functions (≥ 1).
    l_max : int
        Largest angular momentum of the real spherical harmonics (0 ≤ l_max ≤ 8).
    sigma : float
        Width (standard deviation, Å) of the Gaussian that smears each atom (> 0).
    """

    r_cut: float = 3.0
    n_radial: int = 10
    l_max: int = 2
    sigma: float = 0.5

    def __post_init__(self) -> None:
        if not (np.isfinite(self.r_cut) and self.r_cut > 1.0):
            raise ElfcoreError(f"r_cut={self.r_cut}; must be > 1 Å")
        if int(self.n_radial) != self.n_radial or self.n_radial < 1:
            raise ElfcoreError(f"n_radial={self.n_radial}; must be an integer ≥ 1")
        if int(self.l_max) != self.l_max or self.l_max < 0:
            raise ElfcoreError(f"l_max={self.l_max}; must be ≥ 0")
        if self.l_max > 8:
            raise ElfcoreError(f"l_max={self.l_max}; must be ≤ 8")
        if not (np.isfinite(self.sigma) and self.sigma > 0):
            raise ElfcoreError(f"sigma={self.sigma}; must be > 0 Å")

    @property
    def n_features(self) -> int:
        """Length of the feature vector: ``n_radial (n_radial + 1) / 2 · (l_max + 1)``."""
        return self.n_radial * (self.n_radial + 1) // 2 * (self.l_max + 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the settings."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DescriptorSettings":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ElfcoreError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ElfcoreError(f"unknown descriptor setting(s) {unknown}; allowed: {sorted(known)}")
        return cls(**dict(data))


def compute_descriptor(
    atoms,
    points_cart,
    settings: DescriptorSettings,
    *,
    device: str | torch.device = "auto",
    dtype: torch.dtype = torch.float32,
    chunk_size: int = 16384,
) -> torch.Tensor:
    """Power spectrum at arbitrary Cartesian points, shape ``(n_points, n_features)``."""
    raise NotImplementedError


def compute_grid_descriptor(
    atoms,
    shape,
    settings: DescriptorSettings,
    *,
    device: str | torch.device = "auto",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Power spectrum on the full grid ``shape``, shape ``(Na*Nb*Nc, n_features)``."""
    raise NotImplementedError
