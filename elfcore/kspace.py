"""k-space analysis and correction of ELF residuals (``docs/science.md`` §6, ``docs/kspace.md``).

The error of a strictly local ELF model is smooth and long-wavelength. This module
works with the *logit residual*

    Δ(r) = logit(ELF_ref(r)) − logit(ELF_pred(r)),   logit(x) = ln(x / (1 − x)),

with both fields clipped to ``[eps, 1 − eps]`` first (default ``eps = 1e-4``, so
|logit| ≤ 9.21). Δ is expanded in a truncated *low-k basis* of the periodic cell:
real plane waves of the reciprocal lattice vectors ``G = m₁b₁ + m₂b₂ + m₃b₃``
(``bᵢ·aⱼ = 2π δᵢⱼ``, so ``|G|`` is an angular wavenumber in Å⁻¹), grouped into
*shells* of equal ``|G|`` and selected either by the number of non-zero shells
``n_shells`` or by ``k_max``. ``G = 0`` (the mean) is always part of the basis and is
*not* counted as a shell: ``n_shells = 0`` is a pure offset in logit space.

Basis functions are orthonormal with respect to the grid *average*
``⟨u, v⟩ = (1/N) Σ_grid u v``:

    φ₀ = 1,   φ_G^cos = √2 cos(G·r),   φ_G^sin = √2 sin(G·r)

with one (cos, sin) pair per ±G pair, so coefficients are amplitudes in logit
units that do not depend on the grid resolution, and ``n_basis = 1 + #{G ≠ 0}``.

* :func:`oracle_correction` — project Δ onto the basis exactly on the grid (FFT,
  keep the selected Fourier coefficients), add it back in logit space, sigmoid.
* :func:`sparse_correction` / :func:`fit_coefficients` — fit the same coefficients
  by (ridge-regularised) least squares from M reference values only, then apply
  them to the whole field.
* :func:`power_spectrum`, :func:`low_k_fraction`, :func:`autocorrelation`,
  :func:`correlation_length` — the spectral primitives. The reports and scans built on
  them (``residual_analysis``, ``shell_scan``, ``sparse_scan``, ``ensemble_shell_scan``)
  live in :mod:`elfcore.reproduce.kscans`.
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field as dc_field
from typing import NamedTuple, Sequence

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike

from .errors import ElfcoreError, GridError, SettingsError
from .settings import Settings
from .grid import field_cell, make_field, validate_field

__all__ = [
    "DEFAULT_EPS",
    "KSpaceSettings",
    "IllConditionedError",
    "IllConditionedWarning",
    "LowKBasis",
    "KCorrection",
    "logit",
    "sigmoid",
    "logit_residual",
    "reciprocal_cell",
    "reciprocal_shells",
    "lowk_basis",
    "basis_matrix",
    "basis_fields",
    "project",
    "synthesize",
    "fit_coefficients",
    "apply_correction",
    "oracle_correction",
    "sparse_correction",
    "power_spectrum",
    "low_k_fraction",
    "autocorrelation",
    "correlation_length",
    "correction_metrics",
    "check_same_grid",
    "k_magnitudes",
    "cell_info",
    "residual_analysis",
]

log = logging.getLogger(__name__)

#: Default clip of ELF values before the logit: ``[eps, 1 - eps]``.
DEFAULT_EPS = 1e-4
#: Default relative tolerance for two ``|G|`` to belong to the same shell.
DEFAULT_SHELL_TOL = 1e-5
#: Largest condition number of the sparse design matrix accepted without regularisation.
DEFAULT_COND_MAX = 1e6
#: Ridge strength used by ``ridge="auto"`` when the fit is ill-conditioned
#: (relative to the unit-variance basis, see :func:`fit_coefficients`).
AUTO_RIDGE = 1e-3


class IllConditionedError(ElfcoreError):
    """A sparse fit is under-determined or ill-conditioned and no regularisation was allowed."""


class IllConditionedWarning(UserWarning):
    """A sparse fit was ill-conditioned and was regularised automatically."""


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class KSpaceSettings(Settings):
    """How the low-k basis is truncated and the logit is clipped.

    Parameters
    ----------
    n_shells : int, optional
        Number of non-zero reciprocal-lattice shells (``G = 0`` is always added and is
        not counted). Exactly one of ``n_shells`` and ``k_max`` must be given.
    k_max : float, optional
        Keep every ``G`` with ``|G| ≤ k_max`` (Å⁻¹, angular: ``2π/λ``).
    eps : float
        ELF clip ``[eps, 1 − eps]`` before the logit, ``0 < eps < 0.5``.
    shell_tol : float
        Relative tolerance for two ``|G|`` to form one shell.

    Examples
    --------
    >>> KSpaceSettings(n_shells=3).to_dict()["n_shells"]
    3
    """

    n_shells: int | None = None
    k_max: float | None = None
    eps: float = DEFAULT_EPS
    shell_tol: float = DEFAULT_SHELL_TOL

    def __post_init__(self):
        if (self.n_shells is None) == (self.k_max is None):
            raise SettingsError(
                f"n_shells={self.n_shells}, k_max={self.k_max}; give exactly one of them"
            )
        if self.n_shells is not None and (int(self.n_shells) != self.n_shells or self.n_shells < 0):
            raise SettingsError(f"n_shells={self.n_shells}; must be an integer ≥ 0")
        if self.k_max is not None and not (math.isfinite(self.k_max) and self.k_max >= 0):
            raise SettingsError(f"k_max={self.k_max}; must be a finite number ≥ 0 (Å⁻¹)")
        if not 0.0 < self.eps < 0.5:
            raise SettingsError(f"eps={self.eps}; must lie in (0, 0.5)")
        if not 0.0 <= self.shell_tol < 0.1:
            raise SettingsError(f"shell_tol={self.shell_tol}; must lie in [0, 0.1)")


# --------------------------------------------------------------------------- logit
def _check_eps(eps: float) -> float:
    eps = float(eps)
    if not 0.0 < eps < 0.5:
        raise SettingsError(f"eps={eps}; must lie in (0, 0.5)")
    return eps


def logit(x: ArrayLike, eps: float = DEFAULT_EPS) -> np.ndarray:
    """``ln(x / (1 − x))`` of ``x`` clipped to ``[eps, 1 − eps]`` (float64).

    >>> float(np.round(logit(0.5), 12)), float(np.round(logit(1.0, eps=1e-4), 4))
    (0.0, 9.2102)
    """
    eps = _check_eps(eps)
    x = np.clip(np.asarray(x, dtype=np.float64), eps, 1.0 - eps)
    return np.log(x) - np.log1p(-x)


def sigmoid(z: ArrayLike) -> np.ndarray:
    """``1 / (1 + exp(−z))`` (float64, overflow-safe)."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def check_same_grid(pred: xr.DataArray, ref: xr.DataArray) -> None:
    """Raise :class:`GridError` unless both are valid fields on one grid shape and cell."""
    validate_field(pred)
    validate_field(ref)
    if pred.shape != ref.shape:
        raise GridError(f"predicted grid {pred.shape} differs from reference grid {ref.shape}")
    if not np.allclose(field_cell(pred), field_cell(ref), atol=1e-4):
        raise GridError(
            f"predicted and reference cells differ:\n{field_cell(pred)}\nvs\n{field_cell(ref)}"
        )


def logit_residual(pred: xr.DataArray, ref: xr.DataArray, *, eps: float = DEFAULT_EPS) -> xr.DataArray:
    """Logit residual ``Δ = logit(ref) − logit(pred)`` as a field named ``"residual"``.

    Parameters
    ----------
    pred, ref : xarray.DataArray, dims (a, b, c)
        Predicted and reference ELF on the same grid and cell (dimensionless, [0, 1]).
    eps : float
        Clip ``[eps, 1 − eps]`` applied to both before the logit.

    Returns
    -------
    xarray.DataArray
        float64, dims (a, b, c), attrs of ``pred`` plus ``eps`` and ``space="logit"``.
    """
    check_same_grid(pred, ref)
    delta = logit(ref.values, eps) - logit(pred.values, eps)
    attrs = {k: v for k, v in pred.attrs.items() if k not in ("cell", "positions", "numbers")}
    attrs.update(eps=float(eps), space="logit")
    return make_field(
        delta, field_cell(pred), pred.attrs.get("positions"), pred.attrs.get("numbers"),
        name="residual", attrs=attrs,
    )


# --------------------------------------------------------------------------- lattice
def reciprocal_cell(cell: ArrayLike) -> np.ndarray:
    """Reciprocal lattice vectors as rows, ``B = 2π (cell⁻¹)ᵀ`` so ``aᵢ·bⱼ = 2π δᵢⱼ`` (Å⁻¹).

    >>> np.round(reciprocal_cell(np.eye(3) * 2 * np.pi), 12)[0]
    array([1., 0., 0.])
    """
    cell = np.asarray(cell, dtype=np.float64)
    if cell.shape != (3, 3) or abs(np.linalg.det(cell)) < 1e-8:
        raise GridError(f"cell must be a (3, 3) matrix of non-zero volume, got shape {cell.shape}")
    return 2.0 * np.pi * np.linalg.inv(cell).T


def _enumerate_g(cell: np.ndarray, k_lim: float) -> tuple[np.ndarray, np.ndarray]:
    """All integer ``m`` with ``|m @ B| ≤ k_lim``, half space only (m ≠ 0, first non-zero > 0).

    Complete for any triclinic cell: ``mᵢ = G·aᵢ / 2π`` so ``|mᵢ| ≤ k_lim |aᵢ| / 2π``.
    """
    B = reciprocal_cell(cell)
    nmax = np.floor(k_lim * np.linalg.norm(cell, axis=1) / (2.0 * np.pi)).astype(int)
    if np.prod(2 * nmax + 1) > 5e7:
        raise GridError(f"k_max={k_lim:.3g} Å⁻¹ needs {np.prod(2 * nmax + 1):.3g} lattice vectors; too many")
    axes = [np.arange(-n, n + 1) for n in nmax]
    m = np.stack([x.reshape(-1) for x in np.meshgrid(*axes, indexing="ij")], axis=1)
    first = np.where(m[:, 0] != 0, m[:, 0], np.where(m[:, 1] != 0, m[:, 1], m[:, 2]))
    m = m[first > 0]
    k = np.linalg.norm(m @ B, axis=1)
    keep = k <= k_lim
    return m[keep], k[keep]


def _group_shells(k: np.ndarray, tol: float) -> np.ndarray:
    """Shell index (1-based) of each sorted ``k``; a new shell starts when ``k`` exceeds the
    first ``k`` of the current shell by more than ``tol`` relative."""
    shell = np.zeros(len(k), dtype=int)
    current, start = 0, -np.inf
    for i, ki in enumerate(k):
        if ki - start > tol * max(ki, 1e-12):
            current += 1
            start = ki
        shell[i] = current
    return shell


def reciprocal_shells(
    cell: ArrayLike, *, n_shells: int | None = None, k_max: float | None = None, shell_tol: float = DEFAULT_SHELL_TOL
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reciprocal-lattice vectors of the first shells, ordered by ``|G|``.

    Parameters
    ----------
    cell : array_like (3, 3)
        Lattice vectors as rows, Å; any triclinic cell.
    n_shells, k_max
        Exactly one: number of non-zero shells, or the cut-off ``|G| ≤ k_max`` in Å⁻¹.
    shell_tol : float
        Relative tolerance for equal ``|G|``.

    Returns
    -------
    miller : numpy.ndarray (n_g, 3) int
        One representative ``m`` of each ±G pair (first non-zero component > 0),
        sorted by ``|G|`` then lexicographically; ``G = 0`` is not included.
    k : numpy.ndarray (n_g,) float64
        ``|G|`` in Å⁻¹.
    shell : numpy.ndarray (n_g,) int
        Shell index, 1 for the shortest non-zero ``|G|``.
    """
    settings = KSpaceSettings(n_shells=n_shells, k_max=k_max, shell_tol=shell_tol)
    cell = np.asarray(cell, dtype=np.float64)
    B = reciprocal_cell(cell)
    if settings.n_shells is not None:
        if settings.n_shells == 0:
            return np.zeros((0, 3), int), np.zeros(0), np.zeros(0, int)
        # the multiples 1..n of the shortest bᵢ are n distinct shells, so the n-th
        # shell lies at or below n·min|bᵢ|; enumerate slightly beyond to keep it whole
        k_lim = settings.n_shells * float(np.min(np.linalg.norm(B, axis=1)))
    else:
        k_lim = float(settings.k_max)
    m, k = _enumerate_g(cell, k_lim * (1.0 + 4.0 * settings.shell_tol) + 1e-12)
    order = np.lexsort((m[:, 2], m[:, 1], m[:, 0], k))
    m, k = m[order], k[order]
    shell = _group_shells(k, settings.shell_tol)
    if settings.n_shells is not None:
        keep = shell <= settings.n_shells
    else:
        # a shell is kept whole if its first member is within k_max
        first_k = {s: k[np.argmax(shell == s)] for s in np.unique(shell)}
        keep = np.array([first_k[s] <= settings.k_max * (1.0 + settings.shell_tol) for s in shell], bool)
    return m[keep], k[keep], shell[keep]


# --------------------------------------------------------------------------- basis
@dataclass(frozen=True, eq=False)
class LowKBasis:
    """A truncated real plane-wave basis of a periodic grid.

    Attributes
    ----------
    cell : numpy.ndarray (3, 3)
        Lattice vectors (rows, Å).
    shape : tuple of int
        Grid ``(Na, Nb, Nc)`` the basis is orthonormal on.
    miller : numpy.ndarray (n_g, 3) int
        One ``m`` per ±G pair, ordered by ``|G|``.
    k : numpy.ndarray (n_g,)
        ``|G|`` in Å⁻¹.
    shell : numpy.ndarray (n_g,) int
        Shell index (1-based) of each pair.
    n_shells : int
        Number of non-zero shells.
    settings : KSpaceSettings
        The selection that built it.

    Notes
    -----
    Basis function order (length ``n_basis = 1 + 2 n_g``): the constant, then for each
    pair ``√2 cos(2π m·s)`` and ``√2 sin(2π m·s)`` (``s`` fractional coordinates).
    """

    cell: np.ndarray
    shape: tuple
    miller: np.ndarray
    k: np.ndarray
    shell: np.ndarray
    n_shells: int
    settings: KSpaceSettings = dc_field(repr=False)

    @property
    def n_basis(self) -> int:
        """Number of real basis functions, ``1 + 2 n_g``."""
        return 1 + 2 * len(self.miller)

    @property
    def shell_k(self) -> np.ndarray:
        """``|G|`` of each shell, index 0 = the mean term (0 Å⁻¹), shape (n_shells + 1,)."""
        out = np.zeros(self.n_shells + 1)
        for s in range(1, self.n_shells + 1):
            out[s] = float(self.k[self.shell == s].min())
        return out

    @property
    def shell_counts(self) -> np.ndarray:
        """Number of reciprocal-lattice vectors (counting +G and −G) per shell, index 0 = 1."""
        out = np.ones(self.n_shells + 1, dtype=int)
        for s in range(1, self.n_shells + 1):
            out[s] = 2 * int(np.sum(self.shell == s))
        return out

    @property
    def k_last(self) -> float:
        """``|G|`` of the last shell in Å⁻¹ (0 for the mean-only basis)."""
        return float(self.k.max()) if len(self.k) else 0.0

    def coords(self) -> dict:
        """Coordinates of the ``basis`` dimension (for coefficient DataArrays)."""
        kind = ["const"] + ["cos", "sin"] * len(self.miller)
        m = np.vstack([np.zeros((1, 3), int), np.repeat(self.miller, 2, axis=0)])
        return {
            "kind": ("basis", np.array(kind)),
            "shell": ("basis", np.concatenate([[0], np.repeat(self.shell, 2)]).astype(int)),
            "k": ("basis", np.concatenate([[0.0], np.repeat(self.k, 2)])),
            "m_a": ("basis", m[:, 0]),
            "m_b": ("basis", m[:, 1]),
            "m_c": ("basis", m[:, 2]),
        }


def lowk_basis(
    cell: ArrayLike,
    shape: Sequence[int],
    *,
    n_shells: int | None = None,
    k_max: float | None = None,
    shell_tol: float = DEFAULT_SHELL_TOL,
) -> LowKBasis:
    """Build the low-k basis of a cell on a grid.

    Parameters
    ----------
    cell : array_like (3, 3)
        Lattice vectors as rows, Å (any triclinic cell).
    shape : sequence of 3 int
        Grid shape ``(Na, Nb, Nc)``.
    n_shells, k_max
        Exactly one: number of non-zero shells (``G = 0`` always added), or ``|G| ≤ k_max``
        (Å⁻¹).
    shell_tol : float
        Relative tolerance for equal ``|G|``.

    Returns
    -------
    LowKBasis

    Raises
    ------
    GridError
        If a selected ``G`` is not resolved by the grid without aliasing: every
        component must satisfy ``2|mᵢ| < Nᵢ`` (strictly below Nyquist, so that ``+G``
        and ``−G`` are distinct grid functions).

    Examples
    --------
    >>> b = lowk_basis(np.eye(3) * 5.0, (8, 8, 8), n_shells=3)
    >>> b.shell_counts.tolist(), b.n_basis
    ([1, 6, 12, 8], 27)
    """
    settings = KSpaceSettings(n_shells=n_shells, k_max=k_max, shell_tol=shell_tol)
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise GridError(f"grid shape {shape}; expected three positive integers")
    cell = np.asarray(cell, dtype=np.float64)
    m, k, shell = reciprocal_shells(cell, n_shells=n_shells, k_max=k_max, shell_tol=shell_tol)
    bad = np.any(2 * np.abs(m) >= np.asarray(shape), axis=1)
    if np.any(bad):
        s = int(shell[bad].min())
        raise GridError(
            f"shell {s} (|k| = {k[shell == s].min():.3f} Å⁻¹, m = {m[bad][0].tolist()}) is at or "
            f"beyond the Nyquist limit of the {shape} grid; use fewer shells or a finer grid"
        )
    n = int(shell.max()) if len(shell) else 0
    if settings.n_shells is not None and n < settings.n_shells:
        raise GridError(f"only {n} shells found for n_shells={settings.n_shells}")  # pragma: no cover
    return LowKBasis(cell=cell, shape=shape, miller=m, k=k, shell=shell, n_shells=n, settings=settings)


def basis_matrix(basis: LowKBasis, points_frac: ArrayLike) -> np.ndarray:
    """Evaluate every basis function at fractional points.

    Parameters
    ----------
    basis : LowKBasis
    points_frac : array_like (M, 3)
        Fractional coordinates (any periodic image).

    Returns
    -------
    numpy.ndarray (M, n_basis) float64
        Columns in basis order (constant, then cos/sin per ±G pair).
    """
    s = np.asarray(points_frac, dtype=np.float64).reshape(-1, 3)
    theta = 2.0 * np.pi * (s @ basis.miller.T.astype(np.float64))
    out = np.empty((len(s), basis.n_basis))
    out[:, 0] = 1.0
    out[:, 1::2] = math.sqrt(2.0) * np.cos(theta)
    out[:, 2::2] = math.sqrt(2.0) * np.sin(theta)
    return out


def basis_fields(basis: LowKBasis) -> np.ndarray:
    """All basis functions on the grid, shape ``(n_basis, Na, Nb, Nc)`` (for tests and plots)."""
    from .grid import grid_points_frac

    A = basis_matrix(basis, grid_points_frac(basis.shape))
    return A.T.reshape((basis.n_basis,) + basis.shape)


def _fft_index(basis: LowKBasis) -> tuple:
    idx = np.mod(basis.miller, np.asarray(basis.shape))
    return idx[:, 0], idx[:, 1], idx[:, 2]


def _check_grid(delta: np.ndarray, basis: LowKBasis) -> None:
    if tuple(delta.shape) != tuple(basis.shape):
        raise GridError(f"field grid {delta.shape} differs from the basis grid {basis.shape}")


def project(delta: xr.DataArray | ArrayLike, basis: LowKBasis) -> np.ndarray:
    """Coefficients of the orthogonal projection of a grid field onto the basis (exact, FFT).

    Parameters
    ----------
    delta : xarray.DataArray or array (Na, Nb, Nc)
        Field on the basis grid (e.g. the logit residual).
    basis : LowKBasis

    Returns
    -------
    numpy.ndarray (n_basis,)
        ``c_j = ⟨Δ, φ_j⟩`` (grid average); with ``F = fftn(Δ)`` and ``N`` points:
        ``c₀ = F[0]/N``, ``c_cos = √2 Re F[m]/N``, ``c_sin = −√2 Im F[m]/N``.
    """
    arr = np.asarray(getattr(delta, "values", delta), dtype=np.float64)
    _check_grid(arr, basis)
    F = np.fft.fftn(arr)
    n = arr.size
    c = np.empty(basis.n_basis)
    c[0] = F.flat[0].real / n
    Fm = F[_fft_index(basis)]
    c[1::2] = math.sqrt(2.0) * Fm.real / n
    c[2::2] = -math.sqrt(2.0) * Fm.imag / n
    return c


def synthesize(coefficients: xr.DataArray | ArrayLike, basis: LowKBasis) -> np.ndarray:
    """Grid field ``Σ_j c_j φ_j`` of shape ``basis.shape`` (inverse of :func:`project`, via FFT)."""
    c = np.asarray(getattr(coefficients, "values", coefficients), dtype=np.float64).reshape(-1)
    if len(c) != basis.n_basis:
        raise GridError(f"{len(c)} coefficients for a basis of {basis.n_basis} functions")
    n = int(np.prod(basis.shape))
    F = np.zeros(basis.shape, dtype=np.complex128)
    F.flat[0] = c[0] * n
    Fm = n * (c[1::2] - 1j * c[2::2]) / math.sqrt(2.0)
    F[_fft_index(basis)] = Fm
    neg = np.mod(-basis.miller, np.asarray(basis.shape))
    F[neg[:, 0], neg[:, 1], neg[:, 2]] = np.conj(Fm)
    return np.fft.ifftn(F).real


def _coeff_array(c: np.ndarray, basis: LowKBasis, **attrs) -> xr.DataArray:
    a = dict(
        n_shells=basis.n_shells, k_last=basis.k_last, n_basis=basis.n_basis,
        normalisation="orthonormal w.r.t. the grid average; units: logit",
    )
    a.update(attrs)
    return xr.DataArray(c, dims=("basis",), coords=basis.coords(), name="coefficients", attrs=a)


# --------------------------------------------------------------------------- metrics
def _metrics(pred: np.ndarray, ref: np.ndarray) -> dict:
    """R², MAE, RMSE of ``pred`` against ``ref`` over all values (ELF units).

    Uses the project-wide definition :func:`elfcore.train.metrics`.
    """
    from .train import metrics

    m = metrics(pred, ref)
    return {"r2": m["r2"], "mae": m["mae"], "rmse": m["rmse"]}


def correction_metrics(pred: xr.DataArray | ArrayLike, ref: xr.DataArray | ArrayLike,
                       corrected: xr.DataArray | ArrayLike) -> dict:
    """``r2/mae/rmse_before`` (pred vs ref) and ``..._after`` (corrected vs ref), ELF units."""
    b = _metrics(np.asarray(getattr(pred, "values", pred)), np.asarray(getattr(ref, "values", ref)))
    a = _metrics(np.asarray(getattr(corrected, "values", corrected)), np.asarray(getattr(ref, "values", ref)))
    out = {f"{k}_before": v for k, v in b.items()}
    out.update({f"{k}_after": v for k, v in a.items()})
    return out


# --------------------------------------------------------------------------- corrections
class KCorrection(NamedTuple):
    """Result of a k-space correction: ``corrected, coefficients, info = ...``.

    ``corrected`` is the corrected ELF field; ``coefficients`` a DataArray over dim
    ``basis`` (coords kind, shell, k, m_a, m_b, m_c); ``info`` a JSON-ready dict with
    the metrics before/after, ``n_basis``, ``n_shells``, ``k_last``, cell lengths...
    """

    corrected: xr.DataArray
    coefficients: xr.DataArray
    info: dict


def _basis_for(field: xr.DataArray, basis, n_shells, k_max, shell_tol) -> LowKBasis:
    if basis is not None:
        if n_shells is not None or k_max is not None:
            raise SettingsError("give either basis or n_shells/k_max, not both")
        if tuple(basis.shape) != tuple(field.shape) or not np.allclose(basis.cell, field_cell(field), atol=1e-4):
            raise GridError(f"basis built for grid {basis.shape}, field grid is {field.shape} (or cells differ)")
        return basis
    if n_shells is None and k_max is None:
        raise SettingsError("give n_shells or k_max (or a basis)")
    return lowk_basis(field_cell(field), field.shape, n_shells=n_shells, k_max=k_max, shell_tol=shell_tol)


def apply_correction(
    pred: xr.DataArray, coefficients: xr.DataArray | ArrayLike, basis: LowKBasis, *, eps: float = DEFAULT_EPS
) -> xr.DataArray:
    """Corrected ELF ``sigmoid(logit(pred) + Σ_j c_j φ_j)`` on the grid of ``pred``.

    Returns a field named ``"elf_corr"`` with the attrs of ``pred`` plus the correction settings.
    """
    validate_field(pred)
    corr = synthesize(coefficients, basis)
    _check_grid(corr, basis)
    values = sigmoid(logit(pred.values, eps) + corr)
    attrs = {k: v for k, v in pred.attrs.items() if k not in ("cell", "positions", "numbers")}
    attrs.update(kspace_n_shells=basis.n_shells, kspace_k_last=basis.k_last, kspace_eps=float(eps))
    return make_field(
        values.astype(pred.dtype),
        field_cell(pred), pred.attrs.get("positions"), pred.attrs.get("numbers"),
        name="elf_corr", attrs=attrs,
    )


def cell_info(field: xr.DataArray, basis: LowKBasis) -> dict:
    """Cell lengths, volume, grid and the basis size (``n_shells``, ``n_basis``, ``k_last``, ``k_first_shell``)."""
    cell = field_cell(field)
    return {
        "cell_lengths": [float(x) for x in np.linalg.norm(cell, axis=1)],
        "volume": float(abs(np.linalg.det(cell))),
        "grid": [int(n) for n in field.shape],
        "n_shells": int(basis.n_shells),
        "n_basis": int(basis.n_basis),
        "k_last": float(basis.k_last),
        "k_first_shell": float(reciprocal_shells(cell, n_shells=1)[1][0]),
    }


def oracle_correction(
    pred: xr.DataArray,
    ref: xr.DataArray,
    *,
    n_shells: int | None = None,
    k_max: float | None = None,
    basis: LowKBasis | None = None,
    eps: float = DEFAULT_EPS,
    shell_tol: float = DEFAULT_SHELL_TOL,
) -> KCorrection:
    """Correct ``pred`` with the low-k part of the true logit residual (an analysis, needs ``ref``).

    Parameters
    ----------
    pred, ref : xarray.DataArray (a, b, c)
        Predicted and reference ELF on the same grid and cell.
    n_shells, k_max, basis
        Basis selection (see :func:`lowk_basis`), or a prebuilt basis.
    eps : float
        Logit clip.

    Returns
    -------
    KCorrection
        ``corrected = sigmoid(logit(pred) + P Δ)`` with ``P`` the orthogonal projection
        onto the basis on the grid; coefficients ``c = ⟨Δ, φ⟩``; info with metrics
        (``r2_before``, ``r2_after``, ``mae_before``, ``mae_after``, ``rmse_*``), ``n_basis``,
        ``n_shells``, ``k_last``, cell lengths, and ``captured_fraction`` (share of the mean
        square of Δ carried by the basis).
    """
    check_same_grid(pred, ref)
    basis = _basis_for(pred, basis, n_shells, k_max, shell_tol)
    delta = logit(ref.values, eps) - logit(pred.values, eps)
    c = project(delta, basis)
    corrected = apply_correction(pred, c, basis, eps=eps)
    info = {"mode": "oracle", "eps": float(eps)}
    info.update(cell_info(pred, basis))
    info.update(correction_metrics(pred, ref, corrected))
    ms = float(np.mean(delta**2))
    info["residual_logit_ms"] = ms
    info["captured_fraction"] = float(np.sum(c**2) / ms) if ms > 0 else float("nan")
    return KCorrection(corrected, _coeff_array(c, basis, mode="oracle", eps=float(eps)), info)


def fit_coefficients(
    points_frac: ArrayLike,
    values: ArrayLike,
    basis: LowKBasis,
    *,
    ridge: float | str = "auto",
    cond_max: float = DEFAULT_COND_MAX,
) -> tuple[np.ndarray, dict]:
    """Least-squares basis coefficients from values at scattered points.

    Minimises ``(1/M) Σ_i (Σ_j A_ij c_j − y_i)² + λ Σ_j c_j²`` with ``A = basis_matrix``.
    Since the basis has unit mean square, ``AᵀA/M → 1`` for many random points and
    ``λ`` is a dimensionless shrinkage relative to that.

    Parameters
    ----------
    points_frac : array_like (M, 3)
        Fractional coordinates of the reference values.
    values : array_like (M,)
        Values to fit there (the logit residual).
    basis : LowKBasis
    ridge : float or "auto"
        ``λ ≥ 0``. ``"auto"``: ``λ = 0`` when ``M ≥ n_basis`` and the condition number of
        ``A`` is ≤ ``cond_max``; otherwise ``λ = 1e-3`` and an :class:`IllConditionedWarning`.
    cond_max : float
        Condition-number threshold for ``"auto"`` and for an explicit ``λ = 0``.

    Returns
    -------
    coefficients : numpy.ndarray (n_basis,)
    info : dict
        ``n_samples``, ``n_basis``, ``condition_number`` (of ``A``; inf if ``M < n_basis``),
        ``ridge`` (the λ used), ``fit_rmse`` (on the sampled values).

    Raises
    ------
    IllConditionedError
        With ``ridge=0`` when ``M < n_basis`` or the condition number exceeds ``cond_max``.
    """
    A = basis_matrix(basis, points_frac)
    y = np.asarray(values, dtype=np.float64).reshape(-1)
    M, P = A.shape
    if len(y) != M:
        raise GridError(f"{len(y)} values for {M} points")
    if M == 0:
        raise IllConditionedError("no sample points given")
    U, s, Vt = np.linalg.svd(A, full_matrices=False)
    cond = float(s[0] / s[-1]) if (M >= P and s[-1] > 0) else float("inf")
    bad = M < P or cond > cond_max
    if ridge == "auto":
        lam = 0.0
        if bad:
            lam = AUTO_RIDGE
            warnings.warn(
                f"sparse k-fit with {M} samples for {P} basis functions (condition number "
                f"{cond:.3g}); using ridge λ={lam:g}. Use more samples or fewer shells.",
                IllConditionedWarning,
                stacklevel=2,
            )
    else:
        lam = float(ridge)
        if not (math.isfinite(lam) and lam >= 0):
            raise SettingsError(f"ridge={ridge!r}; must be a number ≥ 0 or 'auto'")
        if lam == 0.0 and bad:
            raise IllConditionedError(
                f"sparse k-fit is ill-posed: {M} samples for {P} basis functions, condition "
                f"number {cond:.3g} (max {cond_max:g}); give more samples, fewer shells or ridge > 0"
            )
    filt = s / (s**2 + M * lam) if lam > 0 else 1.0 / s
    c = Vt.T @ (filt * (U.T @ y))
    fit_rmse = float(np.sqrt(np.mean((A @ c - y) ** 2)))
    return c, {"n_samples": int(M), "n_basis": int(P), "condition_number": cond, "ridge": lam, "fit_rmse": fit_rmse}


def _sample_indices(shape, n_samples, indices, seed) -> np.ndarray:
    n_total = int(np.prod(shape))
    if indices is not None:
        idx = np.asarray(indices)
        if idx.ndim == 2 and idx.shape[1] == 3:
            idx = np.ravel_multi_index(tuple(np.mod(idx.T.astype(int), np.asarray(shape)[:, None])), shape)
        idx = idx.reshape(-1).astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n_total):
            raise GridError(f"sample indices out of range [0, {n_total})")
        return idx
    if n_samples is None:
        raise SettingsError("give n_samples (with a seed) or indices")
    n = int(n_samples)
    if not 1 <= n <= n_total:
        raise SettingsError(f"n_samples={n_samples}; must lie in [1, {n_total}]")
    if seed is None:
        raise SettingsError("random sampling needs an explicit seed")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=n, replace=False))


def sparse_correction(
    pred: xr.DataArray,
    ref: xr.DataArray,
    *,
    n_samples: int | None = None,
    indices: ArrayLike | None = None,
    seed: int | None = None,
    n_shells: int | None = None,
    k_max: float | None = None,
    basis: LowKBasis | None = None,
    eps: float = DEFAULT_EPS,
    ridge: float | str = "auto",
    cond_max: float = DEFAULT_COND_MAX,
    shell_tol: float = DEFAULT_SHELL_TOL,
) -> KCorrection:
    """Correct the whole field from the residual at M reference voxels only.

    Parameters
    ----------
    pred, ref : xarray.DataArray (a, b, c)
        Predicted ELF, and the reference; only ``ref`` at the sampled voxels enters the
        fit (the full ``ref`` is used for the reported metrics).
    n_samples, seed : int
        Draw ``n_samples`` distinct voxels uniformly with ``numpy.random.default_rng(seed)``.
    indices : array_like, optional
        Instead: flat C-order voxel indices (M,) or integer grid indices (M, 3).
    n_shells, k_max, basis, eps
        As in :func:`oracle_correction`.
    ridge, cond_max
        See :func:`fit_coefficients`.

    Returns
    -------
    KCorrection
        As :func:`oracle_correction`; ``info`` adds ``n_samples``, ``sample_fraction``,
        ``condition_number``, ``ridge``, ``fit_rmse`` and ``r2_after_unsampled`` (R² on the
        voxels not used in the fit).
    """
    check_same_grid(pred, ref)
    basis = _basis_for(pred, basis, n_shells, k_max, shell_tol)
    idx = _sample_indices(pred.shape, n_samples, indices, seed)
    ijk = np.stack(np.unravel_index(idx, pred.shape), axis=1)
    pts = ijk / np.asarray(pred.shape, dtype=np.float64)
    p_flat = pred.values.reshape(-1)[idx]
    r_flat = ref.values.reshape(-1)[idx]
    y = logit(r_flat, eps) - logit(p_flat, eps)
    c, fit_info = fit_coefficients(pts, y, basis, ridge=ridge, cond_max=cond_max)
    corrected = apply_correction(pred, c, basis, eps=eps)
    info = {"mode": "sparse", "eps": float(eps)}
    info.update(cell_info(pred, basis))
    info.update(correction_metrics(pred, ref, corrected))
    info.update(fit_info)
    info["sample_fraction"] = float(len(idx) / pred.size)
    mask = np.ones(pred.size, bool)
    mask[idx] = False
    if mask.any():
        info["r2_after_unsampled"] = _metrics(corrected.values.reshape(-1)[mask], ref.values.reshape(-1)[mask])["r2"]
    return KCorrection(corrected, _coeff_array(c, basis, mode="sparse", eps=float(eps), **{
        "n_samples": fit_info["n_samples"], "ridge": fit_info["ridge"],
        "condition_number": fit_info["condition_number"]}), info)


# --------------------------------------------------------------------------- spectrum
def k_magnitudes(cell: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``|G|`` (Å⁻¹) of every FFT frequency of the grid, shape ``shape``."""
    B = reciprocal_cell(cell)
    g = B @ B.T
    m = [np.fft.fftfreq(n, d=1.0 / n) for n in shape]
    ma, mb, mc = np.meshgrid(*m, indexing="ij", sparse=True)
    k2 = (
        g[0, 0] * ma**2 + g[1, 1] * mb**2 + g[2, 2] * mc**2
        + 2 * g[0, 1] * ma * mb + 2 * g[0, 2] * ma * mc + 2 * g[1, 2] * mb * mc
    )
    return np.sqrt(np.maximum(k2, 0.0))


def power_spectrum(field: xr.DataArray, *, dk: float | None = None) -> xr.Dataset:
    """Radially averaged power spectrum of a periodic field.

    Per-mode power ``p(G) = |F(G)/N|²`` with ``F = fftn(field)`` over the ``N`` grid
    points, so that ``Σ_G p(G) = mean(field²)`` (Parseval). Modes are binned by
    ``|G|`` in bins ``[(j − ½) dk, (j + ½) dk)``; bin 0 holds ``G = 0`` only when
    ``dk`` is at most the shortest ``|G|``.

    Parameters
    ----------
    field : xarray.DataArray (a, b, c)
        e.g. the logit residual.
    dk : float, optional
        Bin width in Å⁻¹ (default: half the shortest reciprocal vector ``min|bᵢ|``).

    Returns
    -------
    xarray.Dataset
        dim ``k`` (bin centres, Å⁻¹); variables ``power`` (sum of ``p`` in the bin, field
        units²; sums to the mean square), ``n_modes``, ``power_per_mode``, ``cumulative``
        (fraction of the total power at or below the bin). attrs: ``dk``, ``mean_square``,
        ``variance``, ``cell_lengths``, ``k_first`` (shortest non-zero ``|G|``).
    """
    validate_field(field)
    cell = field_cell(field)
    arr = np.asarray(field.values, dtype=np.float64)
    p = np.abs(np.fft.fftn(arr)) ** 2 / arr.size**2
    kg = k_magnitudes(cell, arr.shape)
    k_first = float(np.min(kg[kg > 0])) if np.any(kg > 0) else 0.0
    if dk is None:
        dk = 0.5 * float(np.min(np.linalg.norm(reciprocal_cell(cell), axis=1)))
    if not dk > 0:
        raise SettingsError(f"dk={dk}; must be > 0 (Å⁻¹)")
    b = np.floor(kg / dk + 0.5).astype(np.int64).reshape(-1)
    nb = int(b.max()) + 1
    power = np.bincount(b, weights=p.reshape(-1), minlength=nb)
    modes = np.bincount(b, minlength=nb)
    total = float(power.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        per_mode = np.where(modes > 0, power / np.maximum(modes, 1), np.nan)
    ds = xr.Dataset(
        {
            "power": ("k", power),
            "n_modes": ("k", modes),
            "power_per_mode": ("k", per_mode),
            "cumulative": ("k", np.cumsum(power) / total if total > 0 else np.full(nb, np.nan)),
        },
        coords={"k": np.arange(nb) * dk},
        attrs={
            "dk": float(dk),
            "mean_square": total,
            "variance": total - float(p.flat[0]),
            "cell_lengths": np.linalg.norm(cell, axis=1),
            "k_first": k_first,
            "units_k": "1/Å (angular, 2π/λ)",
        },
    )
    return ds


def low_k_fraction(field: xr.DataArray, k_cut: float = 1.0) -> dict:
    """Share of a field's power at ``|G| ≤ k_cut`` (Å⁻¹), exact per mode (no binning).

    Returns
    -------
    dict
        ``fraction`` (of the mean square, ``G = 0`` included), ``fraction_fluct`` (of the
        variance, ``G = 0`` excluded), ``k_cut``, ``n_modes`` (non-zero ``G`` at or below
        ``k_cut``), ``k_first`` (shortest non-zero ``|G|``).
    """
    validate_field(field)
    arr = np.asarray(field.values, dtype=np.float64)
    p = np.abs(np.fft.fftn(arr)) ** 2 / arr.size**2
    kg = k_magnitudes(field_cell(field), arr.shape)
    low = kg <= k_cut * (1 + 1e-9)
    total = float(p.sum())
    var = total - float(p.flat[0])
    below = float(p[low].sum())
    return {
        "k_cut": float(k_cut),
        "fraction": below / total if total > 0 else float("nan"),
        "fraction_fluct": (below - float(p.flat[0])) / var if var > 0 else float("nan"),
        "n_modes": int(np.sum(low)) - 1,
        "k_first": float(np.min(kg[kg > 0])) if np.any(kg > 0) else 0.0,
    }


def _min_image_distance_grid(cell: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Minimum-image length (Å) of every grid displacement vector, shape ``shape``."""
    f = [np.fft.fftfreq(n) for n in shape]  # fractional displacement in [-1/2, 1/2)
    fa, fb, fc = np.meshgrid(*f, indexing="ij")
    best = np.full(tuple(shape), np.inf)
    for i in (-1, 0, 1):
        for j in (-1, 0, 1):
            for k in (-1, 0, 1):
                x = (fa + i)[..., None] * cell[0] + (fb + j)[..., None] * cell[1] + (fc + k)[..., None] * cell[2]
                best = np.minimum(best, np.einsum("...i,...i->...", x, x))
    return np.sqrt(best)


def autocorrelation(field: xr.DataArray, *, dr: float | None = None) -> xr.DataArray:
    """Radially averaged, normalised periodic autocorrelation of the fluctuation of a field.

    ``C(d) = ⟨δf(r) δf(r + d)⟩ / ⟨δf²⟩`` with ``δf = f − mean(f)``, computed with FFTs
    over all grid displacements ``d`` and averaged in bins of the minimum-image length
    ``|d|`` (width ``dr``, default the largest grid spacing). Only ``|d|`` up to the
    inscribed radius of the Wigner–Seitz cell (half the shortest lattice vector) is
    returned: beyond it the bins are incomplete and periodic images interfere.

    Returns
    -------
    xarray.DataArray
        dim ``r`` (bin centres, Å), ``C(0) = 1``; attrs ``dr``, ``r_max``.
    """
    validate_field(field)
    cell = field_cell(field)
    arr = np.asarray(field.values, dtype=np.float64)
    F = np.fft.fftn(arr - arr.mean())
    var = float(np.mean((arr - arr.mean()) ** 2))
    if var <= 0:
        raise GridError("field is constant; its autocorrelation is undefined")
    C = np.fft.ifftn(np.abs(F) ** 2).real / arr.size / var
    d = _min_image_distance_grid(cell, arr.shape)
    spacing = np.linalg.norm(cell, axis=1) / np.asarray(arr.shape)
    if dr is None:
        dr = float(spacing.max())
    r_max = 0.5 * float(_shortest_lattice_vector(cell))
    b = np.floor(d / dr + 0.5).astype(np.int64).reshape(-1)
    nb = int(np.floor(r_max / dr + 0.5)) + 1
    sel = b < nb
    s = np.bincount(b[sel], weights=C.reshape(-1)[sel], minlength=nb)
    n = np.bincount(b[sel], minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(n > 0, s / np.maximum(n, 1), np.nan)
    r = np.arange(nb) * dr
    ok = n > 0
    return xr.DataArray(c[ok], dims=("r",), coords={"r": r[ok]}, name="autocorrelation",
                        attrs={"dr": float(dr), "r_max": r_max})


def _shortest_lattice_vector(cell: np.ndarray) -> float:
    best = np.inf
    for i in range(-2, 3):
        for j in range(-2, 3):
            for k in range(-2, 3):
                if i == j == k == 0:
                    continue
                best = min(best, float(np.linalg.norm(i * cell[0] + j * cell[1] + k * cell[2])))
    return best


def correlation_length(field: xr.DataArray, *, dr: float | None = None) -> float:
    """Distance (Å) at which the radially averaged autocorrelation first falls to ``1/e``.

    Linear interpolation between bins of :func:`autocorrelation`. Returns ``nan`` if
    ``C`` stays above ``1/e`` up to the inscribed radius of the cell (then the correlation
    length is longer than the cell can show; the bound is ``autocorrelation(...).r_max``).
    """
    c = autocorrelation(field, dr=dr)
    r, v = c["r"].values, c.values
    below = np.nonzero(v < 1.0 / math.e)[0]
    if len(below) == 0:
        return float("nan")
    i = int(below[0])
    if i == 0:
        return 0.0  # pragma: no cover - C(0) = 1
    t = (v[i - 1] - 1.0 / math.e) / (v[i - 1] - v[i])
    return float(r[i - 1] + t * (r[i] - r[i - 1]))


def residual_analysis(
    pred: xr.DataArray,
    ref: xr.DataArray,
    *,
    shells: Sequence[int] = (1, 2, 3, 8),
    sparse_fractions: Sequence[float] = (0.01, 0.001),
    sparse_shells: int = 3,
    k_cut: float = 1.0,
    seed: int = 0,
) -> dict:
    """How long-wavelength a prediction's error is (docs/science.md §6), in one dict.

    Returns
    -------
    dict
        ``r2_before``; ``low_k_fraction`` and ``low_k_fraction_fluct`` (share of the logit
        residual's mean square / variance at ``|G| ≤ k_cut``), ``n_modes_below`` and
        ``k_first`` (:func:`low_k_fraction`); ``xi`` (:func:`correlation_length`, Å);
        ``oracle`` {n shells: R² after :func:`oracle_correction`}; ``sparse`` {fraction:
        R² after :func:`sparse_correction` with ``sparse_shells`` shells from that share of
        the voxels, drawn with ``seed``}.
    """
    check_same_grid(pred, ref)
    delta = logit_residual(pred, ref)
    low = low_k_fraction(delta, k_cut)
    out = {"r2_before": _metrics(np.asarray(pred.values), np.asarray(ref.values))["r2"], "k_cut": float(k_cut),
           "low_k_fraction": low["fraction"], "low_k_fraction_fluct": low["fraction_fluct"],
           "n_modes_below": low["n_modes"], "k_first": low["k_first"], "xi": correlation_length(delta),
           "oracle": {}, "sparse": {}}
    for n in shells:
        out["oracle"][int(n)] = float(oracle_correction(pred, ref, n_shells=int(n)).info["r2_after"])
    for frac in sparse_fractions:
        m = max(int(round(float(frac) * pred.size)), 1)
        kc = sparse_correction(pred, ref, n_samples=m, seed=seed, n_shells=sparse_shells)
        out["sparse"][float(frac)] = float(kc.info["r2_after"])
    return out
