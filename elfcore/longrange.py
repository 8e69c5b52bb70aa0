"""Predicted long-range correction: the low-k logit residual from geometry alone.

The oracle and sparse corrections of :mod:`elfcore.kspace` need reference ELF. This
module learns the same low-k coefficients from quantities every prediction has: the
atomic structure and the local model's own prediction. For a reciprocal-lattice vector
``G ≠ 0`` of the low-k basis, the complex coefficient of the logit residual
``D(G) = ⟨Δ e^{−iG·r}⟩`` (grid average) is modelled as a sum of *channels*, each a
density convolved with a learned isotropic kernel:

    D(G) = Σ_c f_c(|G|) ρ_c(G),        f_c(k) = Σ_n a_cn exp(−(k − k_n)² / 2w²)

* ``atoms``: ``ρ(G) = (1/V) Σ_j exp(−iG·r_j)``, the atomic number density (Å⁻³);
* ``bonds``: the same for the centres of H–H pairs closer than ``bond_cutoff`` (the
  molecular density);
* ``pred``: ``⟨logit(ELF_pred) e^{−iG·r}⟩``, the low-k content of the prediction.

Because every kernel is real and radial, the correction is a rotation-, translation-
and permutation-invariant real field. The mean (``G = 0``) is modelled as
``b₀ + Σ_i b_i x_i`` with ``x`` the number density, the molecular fraction and the mean
predicted logit. All weights enter linearly and are fitted in closed form by ridge
regression (standardised columns) against the oracle coefficients of training cells, so
a fit is deterministic. The model depends on the local model whose residual it learned:
its identity is stored with the weights.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import ClassVar, Iterable

import numpy as np
import xarray as xr

from .errors import ElfcoreError, FormatError, GridError, SettingsError
from .grid import field_atoms, field_cell
from .settings import Settings
from .kspace import (
    DEFAULT_EPS,
    KCorrection,
    LowKBasis,
    _coeff_array,
    apply_correction,
    cell_info,
    correction_metrics,
    logit,
    lowk_basis,
    project,
)

__all__ = [
    "CHANNELS",
    "LongRangeSettings",
    "LongRangeModel",
    "channel_densities",
    "fit_longrange",
    "predicted_correction",
    "shipped_path",
    "shipped_entries",
    "resolve_longrange",
]

#: Channels a long-range model can use (see the module docstring).
CHANNELS = ("atoms", "bonds", "pred")
#: Features of the mean term besides the intercept.
MEAN_FEATURES = ("density", "molecular_fraction", "pred_mean")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class LongRangeSettings(Settings):
    """What a long-range model uses and how it is fitted.

    Parameters
    ----------
    k_max : float
        Vectors ``0 < |G| ≤ k_max`` (Å⁻¹) are corrected; the mean always is.
    channels : tuple of str
        Densities the kernels act on, a subset of :data:`CHANNELS`.
    n_radial : int
        Gaussian radial functions per channel, centred on ``0 … k_max`` evenly.
    bond_cutoff : float
        H–H distance (Å) below which a pair counts as a bond (``bonds`` channel and the
        molecular fraction).
    ridge : float
        Ridge strength on standardised columns, ``≥ 0``.
    eps : float
        Logit clip, as in :mod:`elfcore.kspace`.
    """

    settings_name: ClassVar[str] = "long-range"

    k_max: float = 1.2
    channels: tuple = ("atoms",)
    n_radial: int = 3
    bond_cutoff: float = 1.0
    ridge: float = 1e-2
    eps: float = DEFAULT_EPS

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(self.channels))
        if not (math.isfinite(self.k_max) and self.k_max > 0):
            raise SettingsError(f"k_max={self.k_max}; must be a finite number > 0 (Å⁻¹)")
        bad = [c for c in self.channels if c not in CHANNELS]
        if bad or not self.channels or len(set(self.channels)) != len(self.channels):
            raise SettingsError(f"channels={self.channels}; choose distinct names from {CHANNELS}")
        if int(self.n_radial) != self.n_radial or not 1 <= self.n_radial <= 16:
            raise SettingsError(f"n_radial={self.n_radial}; must be an integer in [1, 16]")
        if not (math.isfinite(self.bond_cutoff) and 0.3 <= self.bond_cutoff <= 2.0):
            raise SettingsError(f"bond_cutoff={self.bond_cutoff}; must lie in [0.3, 2.0] Å")
        if not (math.isfinite(self.ridge) and self.ridge >= 0):
            raise SettingsError(f"ridge={self.ridge}; must be a finite number ≥ 0")
        if not 0.0 < self.eps < 0.5:
            raise SettingsError(f"eps={self.eps}; must lie in (0, 0.5)")

    @property
    def centres(self) -> np.ndarray:
        """Centres ``k_n`` of the radial functions (Å⁻¹)."""
        return np.linspace(0.0, self.k_max, self.n_radial)

    @property
    def width(self) -> float:
        """Width ``w`` of the radial functions (Å⁻¹): the centre spacing, or k_max for one."""
        return self.k_max / max(self.n_radial - 1, 1)


# --------------------------------------------------------------------------- features
def _bond_centres(atoms, cutoff: float) -> np.ndarray:
    """Cartesian centres of the H–H pairs closer than ``cutoff`` (each pair once)."""
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijD", atoms, cutoff)
    keep = i < j
    return atoms.positions[i[keep]] + 0.5 * d[keep]


def _point_density(points_cart: np.ndarray, cell: np.ndarray, miller: np.ndarray) -> np.ndarray:
    """``(1/V) Σ_j exp(−i 2π m·s_j)`` for every Miller vector ``m`` (complex, Å⁻³)."""
    if len(points_cart) == 0:
        return np.zeros(len(miller), dtype=np.complex128)
    s = np.linalg.solve(cell.T, np.asarray(points_cart, float).T).T
    phase = 2.0 * np.pi * (s @ miller.T.astype(np.float64))
    return np.exp(-1j * phase).sum(0) / abs(np.linalg.det(cell))


def _grid_density(values: np.ndarray, basis: LowKBasis) -> np.ndarray:
    """``⟨v e^{−iG·r}⟩`` for every pair of the basis, from :func:`project` (complex)."""
    c = project(values, basis)
    return (c[1::2] - 1j * c[2::2]) / math.sqrt(2.0)


def channel_densities(pred: xr.DataArray, basis: LowKBasis, settings: LongRangeSettings) -> dict:
    """Densities of every channel at the basis vectors, and the mean-term features.

    Parameters
    ----------
    pred : xarray.DataArray (a, b, c)
        Predicted ELF carrying its structure (``positions``/``numbers`` attributes).
    basis : LowKBasis
        Low-k basis of the field's grid.
    settings : LongRangeSettings

    Returns
    -------
    dict
        ``{channel: complex array (n_g,)}`` for each channel in ``settings.channels``,
        and ``"mean"``: float array of :data:`MEAN_FEATURES`.
    """
    atoms = field_atoms(pred)
    if atoms is None or len(atoms) == 0:
        raise GridError("the predicted field carries no atoms; the long-range correction needs the structure")
    cell = field_cell(pred)
    volume = abs(float(np.linalg.det(cell)))
    centres = _bond_centres(atoms, settings.bond_cutoff)
    lp = logit(pred.values, settings.eps)
    out = {}
    for ch in settings.channels:
        if ch == "atoms":
            out[ch] = _point_density(atoms.positions, cell, basis.miller)
        elif ch == "bonds":
            out[ch] = _point_density(centres, cell, basis.miller)
        else:
            out[ch] = _grid_density(lp, basis)
    out["mean"] = np.array([len(atoms) / volume, 2.0 * len(centres) / len(atoms), float(lp.mean())])
    return out


def _radial(k: np.ndarray, settings: LongRangeSettings) -> np.ndarray:
    """Radial functions at ``k``, shape (len(k), n_radial)."""
    return np.exp(-0.5 * ((np.asarray(k)[:, None] - settings.centres[None, :]) / settings.width) ** 2)


def _design(dens: dict, basis: LowKBasis, settings: LongRangeSettings) -> np.ndarray:
    """Rows: the cos and sin coefficient of each pair (basis order); columns: channel × radial."""
    R = _radial(basis.k, settings)
    cols = []
    for ch in settings.channels:
        rho = dens[ch]
        block = np.empty((2 * len(rho), settings.n_radial))
        block[0::2] = math.sqrt(2.0) * rho.real[:, None] * R
        block[1::2] = -math.sqrt(2.0) * rho.imag[:, None] * R
        cols.append(block)
    return np.hstack(cols) if cols else np.zeros((2 * len(basis.k), 0))


def _ridge_fit(X: np.ndarray, y: np.ndarray, ridge: float, intercept: bool) -> tuple[np.ndarray, float]:
    """Ridge regression on standardised columns; returns weights in the original units and the intercept."""
    mu = X.mean(0) if intercept else np.zeros(X.shape[1])
    y0 = float(y.mean()) if intercept else 0.0
    Xc = X - mu
    scale = np.sqrt(np.mean(Xc**2, axis=0))
    scale[scale == 0] = 1.0
    Z = Xc / scale
    n = len(y)
    A = Z.T @ Z / n + ridge * np.eye(Z.shape[1])
    w = np.linalg.solve(A, Z.T @ (y - y0) / n) / scale
    return w, y0 - float(mu @ w)


# --------------------------------------------------------------------------- model
@dataclass(frozen=True)
class LongRangeModel:
    """Fitted long-range correction (see the module docstring).

    Attributes
    ----------
    settings : LongRangeSettings
    kernel : numpy.ndarray (n_channels, n_radial)
        Radial weights ``a_cn`` per channel (units: logit per channel density unit).
    mean_weights : numpy.ndarray (3,)
        ``b_i`` for :data:`MEAN_FEATURES`.
    mean_intercept : float
        ``b₀``.
    meta : dict
        Provenance: the local model it corrects, the training cells, fit statistics.
    """

    settings: LongRangeSettings
    kernel: np.ndarray
    mean_weights: np.ndarray
    mean_intercept: float
    meta: dict = dc_field(default_factory=dict)

    def basis_for(self, field: xr.DataArray) -> LowKBasis:
        """The low-k basis this model corrects on the grid of ``field``."""
        return lowk_basis(field_cell(field), field.shape, k_max=self.settings.k_max)

    def coefficients(self, pred: xr.DataArray, basis: LowKBasis | None = None) -> np.ndarray:
        """Predicted basis coefficients (logit units, :mod:`elfcore.kspace` basis order)."""
        basis = basis if basis is not None else self.basis_for(pred)
        dens = channel_densities(pred, basis, self.settings)
        c = np.empty(basis.n_basis)
        c[0] = self.mean_intercept + float(dens["mean"] @ self.mean_weights)
        c[1:] = _design(dens, basis, self.settings) @ self.kernel.reshape(-1)
        return c

    def kernel_profile(self, k) -> dict:
        """``f_c(k)`` of every channel at wavenumbers ``k`` (Å⁻¹), for plots and reports."""
        R = _radial(np.atleast_1d(np.asarray(k, float)), self.settings)
        return {ch: R @ self.kernel[i] for i, ch in enumerate(self.settings.channels)}

    def to_dict(self) -> dict:
        """JSON-ready dict (weights as lists)."""
        return {
            "format": "elfcore-longrange",
            "format_version": FORMAT_VERSION,
            "settings": self.settings.to_dict(),
            "kernel": self.kernel.tolist(),
            "mean_weights": self.mean_weights.tolist(),
            "mean_intercept": float(self.mean_intercept),
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "LongRangeModel":
        """Inverse of :meth:`to_dict`; a malformed dict raises :class:`FormatError`."""
        if not isinstance(d, dict) or d.get("format") != "elfcore-longrange":
            raise FormatError("not an elfcore long-range model (missing 'format': 'elfcore-longrange')")
        if d.get("format_version") != FORMAT_VERSION:
            raise FormatError(f"long-range model format_version {d.get('format_version')!r}; "
                              f"this elfcore reads {FORMAT_VERSION}")
        try:
            settings = LongRangeSettings.from_dict(dict(d["settings"]))
            kernel = np.asarray(d["kernel"], dtype=np.float64)
            mean_w = np.asarray(d["mean_weights"], dtype=np.float64)
            b0 = float(d["mean_intercept"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"long-range model: {exc}") from exc
        if kernel.shape != (len(settings.channels), settings.n_radial) or mean_w.shape != (len(MEAN_FEATURES),):
            raise FormatError(f"long-range model: kernel shape {kernel.shape} or mean weights {mean_w.shape} "
                              f"do not match the settings")
        if not (np.all(np.isfinite(kernel)) and np.all(np.isfinite(mean_w)) and math.isfinite(b0)):
            raise FormatError("long-range model: non-finite weights")
        return cls(settings, kernel, mean_w, b0, dict(d.get("meta", {})))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model as JSON (atomically: a failed write leaves no partial file)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LongRangeModel":
        """Read a model written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise FormatError(f"not JSON: {exc}", path=str(path)) from exc
        return cls.from_dict(data)


def fit_longrange(
    samples: Iterable[tuple[xr.DataArray, xr.DataArray]],
    settings: LongRangeSettings | None = None,
    *,
    meta: dict | None = None,
) -> LongRangeModel:
    """Fit a long-range model to the oracle coefficients of training cells.

    Parameters
    ----------
    samples : iterable of (pred, ref)
        Predicted and reference ELF of each training cell (same grid; ``pred`` carries
        the structure). Cells of any size and shape can be mixed.
    settings : LongRangeSettings, optional
    meta : dict, optional
        Provenance stored with the model (e.g. ``{"local_model": "zoo:rcut=3.0,lmax=2"}``).

    Returns
    -------
    LongRangeModel
        ``meta`` gains ``n_cells``, ``n_rows`` and the training-set ``captured`` share
        (fraction of the oracle coefficients' power the fit explains).
    """
    settings = settings or LongRangeSettings()
    rows, targets, mean_x, mean_y = [], [], [], []
    for pred, ref in samples:
        if tuple(pred.shape) != tuple(ref.shape):
            raise GridError(f"pred grid {pred.shape} differs from ref grid {ref.shape}")
        basis = lowk_basis(field_cell(pred), pred.shape, k_max=settings.k_max)
        c = project(logit(ref.values, settings.eps) - logit(pred.values, settings.eps), basis)
        dens = channel_densities(pred, basis, settings)
        rows.append(_design(dens, basis, settings))
        targets.append(c[1:])
        mean_x.append(dens["mean"])
        mean_y.append(c[0])
    if not rows:
        raise GridError("no training cells given")
    X, y = np.vstack(rows), np.concatenate(targets)
    if len(y):
        w, _ = _ridge_fit(X, y, settings.ridge, intercept=False)
    else:
        w = np.zeros(X.shape[1])
    mx, my = np.asarray(mean_x), np.asarray(mean_y)
    if len(my) > 1:
        bw, b0 = _ridge_fit(mx, my, max(settings.ridge, 1e-6), intercept=True)
    else:
        bw, b0 = np.zeros(len(MEAN_FEATURES)), float(my[0])
    info = dict(meta or {})
    info.update(n_cells=len(rows), n_rows=int(len(y)))
    total = float(np.sum(y**2) + np.sum(my**2))
    resid = float(np.sum((X @ w - y) ** 2) + np.sum((mx @ bw + b0 - my) ** 2))
    info["captured_train"] = 1.0 - resid / total if total > 0 else float("nan")
    kernel = w.reshape(len(settings.channels), settings.n_radial)
    return LongRangeModel(settings, kernel, np.asarray(bw, float), float(b0), info)


def predicted_correction(
    pred: xr.DataArray, model: LongRangeModel, *, ref: xr.DataArray | None = None
) -> KCorrection:
    """Correct ``pred`` with the coefficients ``model`` predicts — no reference needed.

    Parameters
    ----------
    pred : xarray.DataArray (a, b, c)
        Predicted ELF carrying its structure.
    model : LongRangeModel
    ref : xarray.DataArray, optional
        Reference ELF on the same grid, only to report metrics (``r2_before``/``r2_after``
        …) and the oracle comparison (``r2_oracle``) in ``info``; it never enters the
        correction.

    Returns
    -------
    KCorrection
        ``info["mode"] == "predicted"``, with ``n_basis``, ``k_last`` and the local model
        the long-range model was fitted for.
    """
    basis = model.basis_for(pred)
    c = model.coefficients(pred, basis)
    corrected = apply_correction(pred, c, basis, eps=model.settings.eps)
    info = {
        "mode": "predicted",
        "eps": float(model.settings.eps),
        "k_max": float(model.settings.k_max),
        "local_model": model.meta.get("local_model"),
    }
    info.update(cell_info(pred, basis))
    if ref is not None:
        if tuple(ref.shape) != tuple(pred.shape):
            raise GridError(f"ref grid {ref.shape} differs from pred grid {pred.shape}")
        info.update(correction_metrics(pred, ref, corrected))
        oracle = project(logit(ref.values, model.settings.eps) - logit(pred.values, model.settings.eps), basis)
        info["r2_oracle"] = correction_metrics(pred, ref, apply_correction(pred, oracle, basis,
                                                                           eps=model.settings.eps))["r2_after"]
        denom = float(np.sum(oracle**2))
        info["coefficient_error"] = float(np.sum((c - oracle) ** 2) / denom) if denom > 0 else float("nan")
    return KCorrection(corrected, _coeff_array(c, basis, mode="predicted", eps=float(model.settings.eps)), info)


# --------------------------------------------------------------------------- shipped models
def shipped_path(model_spec: str) -> Path:
    """File of the shipped long-range model fitted for a zoo entry (``"zoo:rcut=3.0,lmax=2"``).

    ``longrange_rcut{r_cut:.1f}_lmax{l_max}.json`` in :func:`elfcore.assets.models_dir`.
    """
    from .assets import models_dir
    from .zoo import parse_spec

    if not (isinstance(model_spec, str) and model_spec.startswith("zoo:")):
        raise ElfcoreError(f"no shipped long-range model for {model_spec!r}: only zoo entries have one; "
                           "fit one with 'elfcore longrange' and pass its file")
    r_cut, l_max = parse_spec(model_spec)
    return models_dir() / f"longrange_rcut{r_cut:.1f}_lmax{l_max}.json"


def shipped_entries() -> list[tuple[float, int]]:
    """The zoo entries (r_cut, l_max) that have a shipped long-range model, sorted."""
    from .assets import models_dir

    out = []
    for f in models_dir().glob("longrange_rcut*_lmax*.json"):
        m = re.fullmatch(r"longrange_rcut(\d+(?:\.\d+)?)_lmax(\d+)\.json", f.name)
        if m:
            out.append((float(m.group(1)), int(m.group(2))))
    return sorted(out)


def resolve_longrange(spec: str | os.PathLike, model_spec: str | None = None) -> LongRangeModel:
    """Load a long-range model: a JSON file, or ``"auto"`` for the one shipped with ``model_spec``.

    Raises
    ------
    ElfcoreError
        ``"auto"`` for a model that has no shipped long-range correction, or a missing file.
    FormatError
        A file that is not a long-range model.
    """
    path = shipped_path(model_spec) if str(spec) == "auto" else Path(spec)
    if not path.is_file() and str(spec) == "auto":
        have = ", ".join(f"r_cut {r:.1f} Å, l_max {l}" for r, l in shipped_entries())
        raise ElfcoreError(f"no long-range correction is shipped for {model_spec}"
                           f"{'; it is shipped for ' + have if have else ''}; "
                           f"fit one with 'elfcore longrange --model {model_spec}' and pass its file")
    if not path.is_file():
        raise ElfcoreError(f"long-range model {str(path)!r} not found; fit one with 'elfcore longrange'")
    model = LongRangeModel.load(path)
    fitted_for = model.meta.get("local_model")
    if model_spec is not None and fitted_for is not None and str(fitted_for) != str(model_spec):
        import logging

        logging.getLogger(__name__).warning(
            "long-range model %s was fitted to the residual of %s, not of %s", path, fitted_for, model_spec)
    return model
