"""Grid-point-centred SOAP power spectrum for hydrogen and metal hydrides (``docs/science.md`` §3).

For every point r₀ (a voxel of the ELF grid, or any Cartesian point) the hydrogen
density around it,

    ρ(r) = Σ_i Σ_T exp(−|r − R_i − T|² / 2σ²)        (all periodic images T),

is expanded in orthonormal radial functions g_nl and real spherical harmonics Y_lm,

    c_nlm(r₀) = ∫ ρ(r₀ + x) g_nl(|x|) Y_lm(x̂) d³x,

and the rotation-invariant power spectrum is

    p_nn'l(r₀) = π √(8 / (2l + 1)) Σ_m c_nlm(r₀) c_n'lm(r₀),   n ≤ n'.

The radial basis is DScribe's orthonormalised GTO basis (``rbf="gto"``), so with
matching settings the result equals ``dscribe.descriptors.SOAP(species=["H"],
r_cut, n_max=n_radial, l_max, sigma, rbf="gto", periodic=True).create(atoms,
centers=points)``. The basis, the prefactors and the two algorithms are written
out in ``docs/descriptor.md``.

Metal hydrides: ``DescriptorSettings(species=("H", "La", …))`` gives every element its
own density ρ_Z and coefficients c^Z_nlm; the power spectrum pairs them (all species
pairs, or a compressed variant chosen by ``compression``), as DScribe's
``SOAP(species=[...], compression={"mode": …})`` does (``docs/descriptor.md``,
*Several species*). Both algorithms below handle several species.

Two algorithms compute the same quantity:

*direct* (:func:`compute_descriptor`)
    neighbour sum over the atoms (and periodic images) within ``r_include`` of each
    point; the Gaussian–GTO overlap integrals are analytic. Any points, cost
    ∝ n_points × n_neighbours. Used for random voxel samples (training) and as
    the reference.
*fft* (:func:`compute_grid_descriptor`, :func:`iter_grid_descriptor`)
    for a full periodic grid: the c_nlm are a convolution of the smeared density
    with the kernels g_nl Y_lm, so in reciprocal space ĉ_nlm(G) = ρ̂(G) ĥ_nlm(−G)
    with an analytic Hankel transform and the exact structure factor of the
    atoms on the reciprocal lattice vectors where the kernel is not negligible.
    Pruned inverse transforms along the three axes (dense products of exact
    phases for cells up to a few thousand atoms, FFTs beyond, whichever is
    faster) bring each a-slab of the grid back to real space, and the power
    spectrum is formed slab by slab, so memory stays bounded. Cost does not
    depend on r_cut and is ~linear in the number of voxels and of atoms.

References: A. P. Bartók, R. Kondor, G. Csányi, Phys. Rev. B 87, 184115 (2013);
L. Himanen et al., Comput. Phys. Commun. 247, 106949 (2020) (DScribe).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
import torch

from .device import resolve
from .errors import ElfcoreError, GridError, SettingsError
from .settings import Settings

__all__ = [
    "COMPRESSION_MODES",
    "DescriptorSettings",
    "compute_descriptor",
    "compute_grid_descriptor",
    "iter_grid_descriptor",
    "feature_labels",
    "radial_basis",
    "default_r_include",
    "dscribe_r_include",
]

#: DScribe's decay threshold of the primitive GTOs and of the atom Gaussians
_THRESHOLD = 1e-3


#: Power-spectrum variants for several species (``DescriptorSettings.compression``), named as
#: DScribe names them (Darby, Kermode & Csányi, npj Comput. Mater. 8, 166 (2022)); see
#: ``docs/descriptor.md``, *Several species*.
COMPRESSION_MODES = ("off", "mu1nu1", "crossover", "mu2")


def _canonical_species(species) -> tuple[str, ...]:
    """Validated species tuple in canonical order (increasing atomic number)."""
    from ase.data import atomic_numbers, chemical_symbols

    if isinstance(species, str) or not isinstance(species, (tuple, list)):
        raise ElfcoreError(f"species={species!r}; must be a list of chemical symbols, e.g. ['H', 'La']")
    known = set(chemical_symbols[1:])
    out = []
    for sym in species:
        if not isinstance(sym, str) or sym not in known:
            raise ElfcoreError(f"species entry {sym!r} is not a chemical symbol (H … {chemical_symbols[-1]})")
        out.append(sym)
    if len(set(out)) != len(out):
        raise ElfcoreError(f"species={list(species)}; each element may be listed once")
    if "H" not in out:
        raise ElfcoreError(f"species={list(species)}; must include 'H'")
    return tuple(sorted(out, key=lambda sym: atomic_numbers[sym]))


@dataclass(frozen=True)
class DescriptorSettings(Settings):
    """Hyperparameters of the grid-point SOAP descriptor.

    Parameters
    ----------
    r_cut : float
        Radial cutoff in Å (> 1): the primitive GTOs of the radial basis decay to
        10⁻³ at distances spread evenly over [1, r_cut] Å (DScribe convention).
    n_radial : int
        Number of radial basis functions (≥ 1), DScribe's ``n_max``.
    l_max : int
        Largest angular momentum of the real spherical harmonics (0 ≤ l_max ≤ 8).
    sigma : float
        Standard deviation in Å of the Gaussian that smears each atom (> 0).
    species : tuple of str
        Chemical symbols whose neighbour densities are described, ``("H",)`` by
        default. Must include ``"H"``; stored in canonical order (increasing atomic
        number, DScribe's order), so ``("La", "H")`` becomes ``("H", "La")``.
        Structures holding any other element are refused.
    compression : {"off", "mu1nu1", "crossover", "mu2"}
        How the species densities are combined (irrelevant for one species except
        ``"mu1nu1"``; ``docs/descriptor.md``, *Several species*): ``"off"`` the
        full species-pair power spectrum; ``"mu1nu1"`` each species' density
        against the sum of all; ``"crossover"`` same-species pairs only;
        ``"mu2"`` one density with every atom weighted by its atomic number.

    Examples
    --------
    >>> s = DescriptorSettings(r_cut=3.0, n_radial=10, l_max=2)
    >>> s.n_features
    165
    >>> DescriptorSettings.from_dict(s.to_dict()) == s
    True
    >>> h_la = DescriptorSettings(species=("La", "H"))
    >>> h_la.species, h_la.n_features
    (('H', 'La'), 630)
    """

    settings_name: ClassVar[str] = "descriptor"

    r_cut: float = 3.0
    n_radial: int = 10
    l_max: int = 2
    sigma: float = 0.5
    species: tuple[str, ...] = ("H",)
    compression: str = "off"

    def __post_init__(self) -> None:
        for name in ("r_cut", "sigma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SettingsError(f"{name}={value!r}; must be a number in Å")
        for name in ("n_radial", "l_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise SettingsError(f"{name}={value!r}; must be an integer")
        if not (math.isfinite(self.r_cut) and self.r_cut > 1.0):
            raise SettingsError(f"r_cut={self.r_cut}; must be > 1 Å")
        if self.n_radial < 1:
            raise SettingsError(f"n_radial={self.n_radial}; must be ≥ 1")
        if self.l_max < 0:
            raise SettingsError(f"l_max={self.l_max}; must be ≥ 0")
        if self.l_max > 8:
            raise SettingsError(f"l_max={self.l_max}; must be ≤ 8")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise SettingsError(f"sigma={self.sigma}; must be > 0 Å")
        object.__setattr__(self, "species", _canonical_species(self.species))
        if self.compression not in COMPRESSION_MODES:
            raise SettingsError(f"compression={self.compression!r}; must be one of {list(COMPRESSION_MODES)}")

    @property
    def n_features(self) -> int:
        """Length of the feature vector.

        With S species, f₁ = n_radial (n_radial + 1) / 2 · (l_max + 1) (one species
        with itself) and f₂ = n_radial² (l_max + 1) (two different densities):
        ``"off"`` S f₁ + S(S−1)/2 f₂; ``"mu1nu1"`` S f₂; ``"crossover"`` S f₁;
        ``"mu2"`` f₁. One species (the default) with ``"off"``: f₁, 165 for the
        baseline.
        """
        n, n_l, n_s = self.n_radial, self.l_max + 1, len(self.species)
        same, cross = n * (n + 1) // 2 * n_l, n * n * n_l
        if self.compression == "off":
            return n_s * same + n_s * (n_s - 1) // 2 * cross
        if self.compression == "mu1nu1":
            return n_s * cross
        if self.compression == "crossover":
            return n_s * same
        return same

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the settings.

        ``species`` and ``compression`` are left out at their defaults (``("H",)``,
        ``"off"``), so a hydrogen descriptor has the same dict (and the same model
        headers, hashes and cache keys) as before several species existed.
        """
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.species == ("H",):
            del out["species"]
        else:
            out["species"] = list(self.species)
        if self.compression == "off":
            del out["compression"]
        return out


def dscribe_r_include(settings: DescriptorSettings) -> float:
    """DScribe's atom inclusion radius in Å: ``r_cut + σ √(2 ln 10³)``.

    DScribe drops atoms farther than this from a centre. The GTO basis does not
    vanish there: the truncation changes features by up to a few % and makes them
    jump when an atom crosses the radius; pass this as ``r_include`` only to
    reproduce DScribe.
    """
    return float(settings.r_cut + settings.sigma * math.sqrt(-2.0 * math.log(_THRESHOLD)))


def default_r_include(settings: DescriptorSettings, tol: float = 1e-9) -> float:
    """Default atom inclusion radius of the direct path in Å.

    The smallest distance beyond which the contribution of one atom to every
    c_nlm, ``Σ_k β_lnk π^{3/2} (η+α_lk)^{-3/2} (η/(η+α_lk))^l R^l e^{−γ_lk R²}``,
    stays below ``tol`` times its maximum over R. The descriptor elfcore defines is
    the sum over *all* atoms and images (what the fft path computes); with this
    radius the direct path's truncation changes it by ≲10⁻⁸ relative, so it is
    smooth for all practical purposes (r_cut ≈ 3 Å, σ = 0.5 Å gives ≈ 7.5 Å).
    """
    return _default_r_include(settings, float(tol))


@functools.lru_cache(maxsize=64)
def _default_r_include(settings: DescriptorSettings, tol: float) -> float:
    r = np.linspace(0.0, 40.0, 40001)
    contrib = np.abs(_atom_contribution(settings, r))
    peak = contrib.max(axis=-1, keepdims=True)
    above = (contrib > tol * peak).any(axis=(0, 1))
    return float(r[min(np.where(above)[0].max() + 1, len(r) - 1)])


def _atom_contribution(settings: DescriptorSettings, r: np.ndarray) -> np.ndarray:
    """Radial factor I_nl(R) of one atom at distance R: (l_max+1, n_radial, len(r))."""
    b = _basis(settings)
    eta = b.eta
    out = np.zeros((settings.l_max + 1, settings.n_radial, len(r)))
    for l in range(settings.l_max + 1):
        a = b.alphas[l]
        gam = eta * a / (eta + a)
        pref = math.pi**1.5 * (eta + a) ** -1.5 * (eta / (eta + a)) ** l
        out[l] = (b.betas[l] * pref[None, :]) @ np.exp(-gam[:, None] * r[None, :] ** 2) * r[None, :] ** l
    return out


# --------------------------------------------------------------------------- basis
@dataclass(frozen=True)
class _Basis:
    """Primitive exponents and orthonormalisation of the GTO basis (float64 numpy)."""

    alphas: np.ndarray  # (l_max+1, n_radial) α_lk in Å⁻²
    betas: np.ndarray  # (l_max+1, n_radial, n_radial) β_l[n, k]
    eta: float  # 1 / (2σ²)


@functools.lru_cache(maxsize=64)
def _basis(settings: DescriptorSettings) -> _Basis:
    from scipy.linalg import inv, sqrtm
    from scipy.special import gamma

    n, lmax = settings.n_radial, settings.l_max
    a = np.linspace(1.0, settings.r_cut, n)
    alphas = np.zeros((lmax + 1, n))
    betas = np.zeros((lmax + 1, n, n))
    for l in range(lmax + 1):
        alpha = -np.log(_THRESHOLD / np.power(a, l)) / a**2
        summed = alpha[:, None] + alpha[None, :]
        overlap = 0.5 * gamma(l + 1.5) * summed ** (-l - 1.5)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            beta = sqrtm(inv(overlap))
        if np.iscomplexobj(beta) or not np.all(np.isfinite(beta)):
            # float64 cannot invert S (DScribe gives up here); do the Löwdin step in 60 digits
            beta = _lowdin_mp(alpha, l)
        if np.abs(beta).max() > 1e12:
            raise ElfcoreError(
                f"the GTO radial basis with n_radial={n}, r_cut={settings.r_cut} Å, l={l} is too "
                f"ill-conditioned (orthonormalisation coefficients up to {np.abs(beta).max():.1e}) to be "
                "evaluated in float64; use fewer radial functions or a larger r_cut"
            )
        alphas[l] = alpha
        betas[l] = beta
    return _Basis(alphas=alphas, betas=betas, eta=1.0 / (2.0 * settings.sigma**2))


def _lowdin_mp(alpha: np.ndarray, l: int) -> np.ndarray:
    """S^(−1/2) of the primitive GTO overlap in 60-digit arithmetic (mpmath), as float64."""
    import mpmath

    with mpmath.workdps(60):
        a = [mpmath.mpf(float(x)) for x in alpha]
        n = len(a)
        half = mpmath.mpf(3) / 2
        overlap = mpmath.matrix(n, n)
        for i in range(n):
            for j in range(n):
                overlap[i, j] = mpmath.gamma(l + half) / 2 * (a[i] + a[j]) ** (-l - half)
        evals, evecs = mpmath.eigsy(overlap)
        if min(evals) <= 0:
            raise ElfcoreError(f"GTO overlap matrix for l={l} is too ill-conditioned (not positive definite in 60 digits)")
        beta = evecs * mpmath.diag([1 / mpmath.sqrt(e) for e in evals]) * evecs.T
        return np.array(beta.tolist(), dtype=np.float64)


def radial_basis(settings: DescriptorSettings, r, l: int = 0) -> np.ndarray:
    """Evaluate the orthonormal radial functions g_nl(r).

    Parameters
    ----------
    settings : DescriptorSettings
    r : array_like, shape (m,)
        Distances in Å.
    l : int
        Angular momentum (0 ≤ l ≤ l_max); the GTO basis depends on l.

    Returns
    -------
    numpy.ndarray, shape (n_radial, m)
        ``g_nl(r) = Σ_k β_l[n, k] r^l exp(−α_lk r²)``, orthonormal with weight r².
    """
    if not 0 <= l <= settings.l_max:
        raise ElfcoreError(f"l={l}; must be in [0, {settings.l_max}]")
    b = _basis(settings)
    r = np.asarray(r, dtype=np.float64).reshape(-1)
    prim = r[None, :] ** l * np.exp(-b.alphas[l][:, None] * r[None, :] ** 2)
    return b.betas[l] @ prim


def feature_labels(settings: DescriptorSettings) -> list[tuple]:
    """The label of every feature, in output order.

    One density (one species, or ``compression="mu2"``): ``(n, n', l)``, l outermost
    (0 … l_max), then n (0 … n_radial−1), then n' (n … n_radial−1), the order DScribe
    uses for one species. Several species: ``(A, B, n, n', l)`` with chemical symbols
    A, B (B = ``"*"``, the sum over all species, for ``"mu1nu1"``), grouped by species
    pair in DScribe's order ((H, H), (H, M₁), …, (M₁, M₁), … for ``"off"``), and
    within a pair l outermost, then n, then n' (n' ≥ n when A = B, all n' otherwise).
    One species with ``"mu1nu1"``: ``(n, n', l)`` with all n'.

    Examples
    --------
    >>> feature_labels(DescriptorSettings(n_radial=2, l_max=1))
    [(0, 0, 0), (0, 1, 0), (1, 1, 0), (0, 0, 1), (0, 1, 1), (1, 1, 1)]
    >>> feature_labels(DescriptorSettings(n_radial=2, l_max=0, species=("Ca", "H")))[2:7]
    [('H', 'H', 1, 1, 0), ('H', 'Ca', 0, 0, 0), ('H', 'Ca', 0, 1, 0), ('H', 'Ca', 1, 0, 0), ('H', 'Ca', 1, 1, 0)]
    """
    n, lmax, species = settings.n_radial, settings.l_max, settings.species
    same = [(i, j, l) for l in range(lmax + 1) for i in range(n) for j in range(i, n)]
    cross = [(i, j, l) for l in range(lmax + 1) for i in range(n) for j in range(n)]
    if settings.compression == "mu2":
        return same
    if len(species) == 1:
        return cross if settings.compression == "mu1nu1" else same
    if settings.compression == "mu1nu1":
        return [(a, "*") + t for a in species for t in cross]
    out = []
    for ia, a in enumerate(species):
        for b in species[ia:]:
            if a == b:
                out += [(a, b) + t for t in same]
            elif settings.compression == "off":
                out += [(a, b) + t for t in cross]
    return out


# --------------------------------------------------------------------------- harmonics
def _solid_harmonics(xyz: torch.Tensor, l_max: int) -> torch.Tensor:
    """Real regular solid harmonics r^l Y_lm(r̂), shape (..., (l_max+1)²).

    Column ``l² + l + m`` holds m = −l … l (cos(mφ) for m > 0, sin(|m|φ) for m < 0),
    orthonormal on the unit sphere. Polynomials in x, y, z, so well defined at r = 0.
    """
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    r2 = x * x + y * y + z * z
    # (x + iy)^m = A_m + i B_m
    A = [torch.ones_like(x)]
    B = [torch.zeros_like(x)]
    for m in range(1, l_max + 1):
        A.append(A[-1] * x - B[-1] * y)
        B.append(A[-2] * y + B[-1] * x)
    # F[l][m]: r^l P_l^m(cos θ) = F_l^m (x² + y²)^{m/2}, without the Condon–Shortley phase
    F = [[None] * (l_max + 1) for _ in range(l_max + 1)]
    for m in range(l_max + 1):
        F[m][m] = torch.full_like(x, float(np.prod(np.arange(2 * m - 1, 0, -2)) if m > 0 else 1.0))
        if m + 1 <= l_max:
            F[m + 1][m] = (2 * m + 1) * z * F[m][m]
        for l in range(m + 2, l_max + 1):
            F[l][m] = ((2 * l - 1) * z * F[l - 1][m] - (l + m - 1) * r2 * F[l - 2][m]) / (l - m)
    out = []
    for l in range(l_max + 1):
        for m in range(-l, l + 1):
            am = abs(m)
            norm = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - am) / math.factorial(l + am))
            if m == 0:
                out.append(norm * F[l][0])
            elif m > 0:
                out.append(math.sqrt(2.0) * norm * F[l][am] * A[am])
            else:
                out.append(math.sqrt(2.0) * norm * F[l][am] * B[am])
    return torch.stack(out, dim=-1)


# --------------------------------------------------------------------------- input
def _read_structure(atoms, species: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated (cell (3,3), positions (n,3)) in Å and atomic numbers (n,) from an ase.Atoms.

    :func:`elfcore.io.validate.check_atoms`: a periodic cell of non-zero volume, finite
    positions and, when ``species`` is given, only those elements (any number of atoms).
    """
    from .io.validate import check_atoms

    return check_atoms(atoms, species=species, require_cell=True, species_of="descriptor's")


def _species_index(numbers: np.ndarray, species: tuple[str, ...]) -> np.ndarray:
    """Index into ``species`` of every atom (all of them among ``species``: see :func:`_read_structure`)."""
    from ase.data import atomic_numbers

    allowed = np.array([atomic_numbers[sym] for sym in species])
    return np.searchsorted(allowed, numbers) if len(numbers) else np.zeros(0, dtype=np.int64)


def _structure(atoms, species: tuple[str, ...] = ("H",)) -> tuple[np.ndarray, np.ndarray]:
    """Validated (cell (3,3), positions (n,3)) in Å from an ase.Atoms holding only ``species``."""
    cell, positions, _ = _read_structure(atoms, species)
    return cell, positions


def _density_weights(atoms, settings: DescriptorSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Cell, positions and the weight of every atom in each density channel.

    Returns ``(cell, positions, weights)``: ``weights`` is None for one species (one
    unweighted density, the hydrogen descriptor), else float64 (n_atoms, C): one
    channel per species (one-hot) or, for ``compression="mu2"``, one channel with
    the atomic number of each atom.
    """
    cell, positions, numbers = _read_structure(atoms, settings.species)
    index = _species_index(numbers, settings.species)
    if len(settings.species) == 1:
        return cell, positions, None
    if settings.compression == "mu2":
        return cell, positions, numbers.astype(np.float64)[:, None]
    weights = np.zeros((len(numbers), len(settings.species)))
    weights[np.arange(len(numbers)), index] = 1.0
    return cell, positions, weights


def _n_channels(settings: DescriptorSettings) -> int:
    """Number of density channels the coefficients carry (see :func:`_density_weights`)."""
    return 1 if len(settings.species) == 1 or settings.compression == "mu2" else len(settings.species)


def _reduce_sum_chunk(n_items: int, per_item: int, budget: int) -> int:
    return max(1, min(n_items, budget // max(per_item, 1)))


def _power_spectrum(c: torch.Tensor, settings: DescriptorSettings, block: int | None = None) -> torch.Tensor:
    """Power spectrum from coefficients.

    Parameters
    ----------
    c : torch.Tensor, shape (n_radial, (l_max+1)², P)
    settings : DescriptorSettings
    block : int, optional
        Points per block (cache-sized blocks on CPU; default 8192 on CPU, all on CUDA).

    Returns
    -------
    torch.Tensor, shape (n_radial (n_radial+1)/2 · (l_max+1), P)
        One density with itself, feature order of :func:`feature_labels` for one species.
    """
    n, lmax = settings.n_radial, settings.l_max
    n_points = c.shape[-1]
    out = torch.empty((n * (n + 1) // 2 * (lmax + 1), n_points), dtype=c.dtype, device=c.device)
    if block is None:
        block = n_points if c.device.type != "cpu" else 8192
    block = max(1, int(block))
    for p0 in range(0, n_points, block):
        cb = c[:, :, p0 : p0 + block]
        ob = out[:, p0 : p0 + block]
        row = 0
        for l in range(lmax + 1):
            pref = math.pi * math.sqrt(8.0 / (2 * l + 1))
            cl = cb[:, l * l : (l + 1) * (l + 1)] * pref if pref != 1.0 else cb[:, l * l : (l + 1) * (l + 1)]
            for i in range(n):
                rows = ob[row : row + n - i]
                torch.mul(cb[i : i + 1, l * l], cl[i:, 0], out=rows)
                for m in range(1, 2 * l + 1):
                    rows.addcmul_(cb[i : i + 1, l * l + m], cl[i:, m])
                row += n - i
    return out


def _cross_spectrum(ca: torch.Tensor, cb: torch.Tensor, settings: DescriptorSettings, out: torch.Tensor) -> None:
    """p_nn'l = π √(8/(2l+1)) Σ_m ca_nlm cb_n'lm for all n, n' into ``out`` (n_radial² (l_max+1), P).

    ``ca``, ``cb``: (n_radial, (l_max+1)², P), two different densities. Order: l outermost,
    then n, then n' (every pair).
    """
    n = settings.n_radial
    row = 0
    for l in range(settings.l_max + 1):
        pref = math.pi * math.sqrt(8.0 / (2 * l + 1))
        cl = cb[:, l * l : (l + 1) * (l + 1)] * pref
        for i in range(n):
            rows = out[row : row + n]
            torch.mul(ca[i : i + 1, l * l], cl[:, 0], out=rows)
            for m in range(1, 2 * l + 1):
                rows.addcmul_(ca[i : i + 1, l * l + m], cl[:, m])
            row += n


def _species_power_spectrum(c: torch.Tensor, settings: DescriptorSettings, block: int | None = None) -> torch.Tensor:
    """Power spectrum of several density channels.

    Parameters
    ----------
    c : torch.Tensor, shape (C, n_radial, (l_max+1)², P)
        Coefficients of the C channels of :func:`_density_weights`.
    settings : DescriptorSettings
    block : int, optional
        Points per block (default 8192 on CPU, all on CUDA).

    Returns
    -------
    torch.Tensor, shape (n_features, P), feature order of :func:`feature_labels`.
    """
    if c.shape[0] == 1 and settings.compression != "mu1nu1":
        return _power_spectrum(c[0], settings, block)
    n, n_l, n_s = settings.n_radial, settings.l_max + 1, c.shape[0]
    same, cross = n * (n + 1) // 2 * n_l, n * n * n_l
    n_points = c.shape[-1]
    out = torch.empty((settings.n_features, n_points), dtype=c.dtype, device=c.device)
    if block is None:
        block = n_points if c.device.type != "cpu" else 8192
    block = max(1, int(block))
    for p0 in range(0, n_points, block):
        cb = c[..., p0 : p0 + block]
        ob = out[:, p0 : p0 + block]
        row = 0
        if settings.compression == "mu1nu1":
            total = cb.sum(0) if n_s > 1 else cb[0]
            for a in range(n_s):
                _cross_spectrum(cb[a], total, settings, ob[row : row + cross])
                row += cross
            continue
        for a in range(n_s):
            for b in range(a, n_s):
                if a == b:
                    ob[row : row + same] = _power_spectrum(cb[a], settings, block)
                    row += same
                elif settings.compression == "off":
                    _cross_spectrum(cb[a], cb[b], settings, ob[row : row + cross])
                    row += cross
    return out


# --------------------------------------------------------------------------- direct path
def _direct_coefficients(
    cell: np.ndarray,
    positions: np.ndarray,
    points: np.ndarray,
    settings: DescriptorSettings,
    r_include: float,
    device: torch.device,
    memory_budget: int,
    weights: np.ndarray | None = None,
) -> torch.Tensor:
    """c_nlm at Cartesian points by a neighbour sum, float64.

    Without ``weights`` one density of all atoms: (n_radial, (l_max+1)², P). With
    ``weights`` (n_atoms, C) one density per channel, atom i weighted by
    weights[i, c]: (C, n_radial, (l_max+1)², P).
    """
    lmax, nr = settings.l_max, settings.n_radial
    nlm = (lmax + 1) ** 2
    n_points = len(points)
    n_ch = 1 if weights is None else weights.shape[1]
    lead = () if weights is None else (n_ch,)
    out = torch.zeros(lead + (nr, nlm, n_points), dtype=torch.float64, device=device)
    if len(positions) == 0 or n_points == 0:
        return out
    images, points_w = _periodic_images(cell, positions, points, r_include)
    from scipy.spatial import cKDTree

    tree = cKDTree(images)
    factors = _gaussian_factors(settings, device)
    # neighbours per point ≈ density × sphere volume; one chunk's padded pair tables
    # (points × neighbours × ((l_max+1)·n_radial + (l_max+1)² + 4) float64) stay under the budget
    volume = abs(float(np.linalg.det(cell)))
    per_point = 1.3 * len(positions) / volume * 4.0 / 3.0 * math.pi * r_include**3 + 8
    row_bytes = 8 * ((lmax + 1) * nr * n_ch + nlm + 4 + n_ch)
    chunk = _reduce_sum_chunk(n_points, int(per_point * row_bytes), memory_budget)
    for start in range(0, n_points, chunk):
        p_np = points_w[start : start + chunk]
        table = _neighbour_table(p_np, tree, images, r_include, device, weights, len(positions))
        if table is None:
            continue
        _add_chunk_coefficients(out[..., start : start + len(p_np)], table, factors, lmax, weights is not None)
    return out


def _periodic_images(cell: np.ndarray, positions: np.ndarray, points: np.ndarray,
                     r_include: float) -> tuple[np.ndarray, np.ndarray]:
    """Cartesian atom images within ``r_include`` of the cell (index = shift·n_atoms + atom), wrapped points."""
    inv = np.linalg.inv(cell)
    atoms_frac = np.mod(positions @ inv, 1.0)
    points_frac = np.mod(points @ inv, 1.0)
    # images: |frac_k(v)| ≤ |v| |b_k| / 2π with frac differences in (−1, 1)
    heights = np.linalg.norm(inv, axis=0)  # |b_k| / 2π (columns of inv(cell))
    reach = np.floor(r_include * heights + 1.0).astype(int)
    shifts = np.stack(
        np.meshgrid(*[np.arange(-k, k + 1) for k in reach], indexing="ij"), axis=-1
    ).reshape(-1, 3)
    images = ((atoms_frac[None, :, :] + shifts[:, None, :]).reshape(-1, 3)) @ cell
    return images, points_frac @ cell


def _gaussian_factors(settings: DescriptorSettings, device: torch.device):
    """(γ_lk (L, K), prefactor_lk (L, K), β_l (L, N, K)) of the Gaussian–GTO overlap, float64 on ``device``."""
    f64 = torch.float64
    basis = _basis(settings)
    eta = basis.eta
    alphas = torch.as_tensor(basis.alphas, dtype=f64, device=device)  # (L, K)
    gam = eta * alphas / (eta + alphas)
    pref = math.pi**1.5 * (eta + alphas) ** -1.5 * (eta / (eta + alphas)) ** torch.arange(
        settings.l_max + 1, dtype=f64, device=device
    )[:, None]
    betas = torch.as_tensor(basis.betas, dtype=f64, device=device)  # (L, N, K)
    return gam, pref, betas


def _neighbour_table(p_np: np.ndarray, tree, images: np.ndarray, r_include: float, device: torch.device,
                     weights: np.ndarray | None, n_atoms: int):
    """Padded neighbour table of a chunk of points: (vec (P, W, 3), mask (P, W), channel weights or None).

    None when no atom image lies within ``r_include`` of any point of the chunk.
    """
    from scipy.spatial import cKDTree

    f64 = torch.float64
    n_p = len(p_np)
    dist = cKDTree(p_np).sparse_distance_matrix(tree, r_include, output_type="ndarray")
    if len(dist) == 0:
        return None
    order = np.argsort(dist["i"], kind="stable")
    pi_np = dist["i"][order].astype(np.int64)
    ai_np = dist["j"][order].astype(np.int64)
    counts = np.bincount(pi_np, minlength=n_p)
    slot = np.arange(len(pi_np)) - (np.cumsum(counts) - counts)[pi_np]
    width = int(counts.max())
    # padded neighbour table (points, width, 3); padding rows are masked out
    vec = torch.zeros((n_p, width, 3), dtype=f64, device=device)
    mask = torch.zeros((n_p, width), dtype=f64, device=device)
    pi_t = torch.as_tensor(pi_np, device=device)
    slot_t = torch.as_tensor(slot, device=device)
    vec[pi_t, slot_t] = torch.as_tensor(images[ai_np] - p_np[pi_np], dtype=f64, device=device)
    mask[pi_t, slot_t] = 1.0
    wn = None
    if weights is not None:
        # channel weights of each neighbour (the images repeat the atoms: index = shift·n + atom)
        wn = torch.zeros((n_p, width, weights.shape[1]), dtype=f64, device=device)
        wn[pi_t, slot_t] = torch.as_tensor(weights[ai_np % n_atoms], dtype=f64, device=device)
    return vec, mask, wn


def _add_chunk_coefficients(out: torch.Tensor, table, factors, lmax: int, weighted: bool) -> None:
    """Write c_nlm of one chunk of points into ``out`` (a view: (…, n_radial, nlm, P))."""
    vec, mask, wn = table
    gam, pref, betas = factors
    n_p, width = mask.shape
    rr = (vec * vec).sum(-1)
    sh = _solid_harmonics(vec, lmax)  # (points, width, nlm)
    for l in range(lmax + 1):
        if weighted:
            n_ch = wn.shape[-1]
            e = torch.exp(-gam[l] * rr[..., None])  # (points, width, K)
            e = (wn[..., :, None] * e[..., None, :]).reshape(n_p, width, n_ch * len(gam[l]))
            acc = torch.bmm(e.transpose(1, 2), sh[:, :, l * l : (l + 1) * (l + 1)])  # (points, C·K, 2l+1)
            out[..., l * l : (l + 1) * (l + 1), :] = torch.einsum(
                "nk,pckm->cnmp", betas[l] * pref[l][None, :], acc.reshape(n_p, n_ch, -1, 2 * l + 1)
            )
            continue
        e = torch.exp(-gam[l] * rr[..., None]) * mask[..., None]  # (points, width, K)
        # Σ_i e^{−γ_lk R_i²} R_i^l Y_lm(R̂_i) as a batched matrix product
        acc = torch.bmm(e.transpose(1, 2), sh[:, :, l * l : (l + 1) * (l + 1)])  # (points, K, 2l+1)
        # c_nlm = Σ_k β_l[n,k] pref_lk acc_km
        out[:, l * l : (l + 1) * (l + 1), :] = torch.einsum("nk,pkm->nmp", betas[l] * pref[l][None, :], acc)


def compute_descriptor(
    atoms,
    points_cart,
    settings: DescriptorSettings,
    *,
    device: str | torch.device = "auto",
    dtype: torch.dtype = torch.float32,
    chunk_size: int | None = None,
    r_include: float | None = None,
) -> torch.Tensor:
    """Power spectrum of the smeared atom densities around arbitrary points (direct path).

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic structure holding only elements of ``settings.species`` (hydrogen by
        default); any triclinic cell, any size relative to r_cut.
    points_cart : array_like or torch.Tensor, shape (n_points, 3)
        Cartesian centre points in Å (any periodic image).
    settings : DescriptorSettings
    device : str or torch.device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``.
    dtype : torch.dtype
        Output dtype; the sum is accumulated in float64 either way (the GTO
        orthonormalisation coefficients reach 10⁵–10⁷, so float32 sums would cancel).
    chunk_size : int, optional
        Points per chunk; default: chosen so one chunk's pair table stays < ~256 MB.
    r_include : float, optional
        Atom inclusion radius in Å: atoms (and images) farther than this from a
        point are left out. Default :func:`default_r_include` (truncation error
        ≲10⁻⁸); :func:`dscribe_r_include` reproduces DScribe.

    Returns
    -------
    torch.Tensor, shape (n_points, n_features), on ``device``
        Feature ``f`` is p_nn'l of ``feature_labels(settings)[f]``: l outermost,
        then n ≤ n' (the DScribe order), with the prefactor π√(8/(2l+1)); for
        several species grouped by species pair first (DScribe's order).

    Raises
    ------
    StructureError
        An element outside ``settings.species`` (named in the message), NaN
        positions, no cell.

    Examples
    --------
    >>> from ase import Atoms
    >>> h2 = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=[4, 4, 4], pbc=True)
    >>> compute_descriptor(h2, [[0.37, 0.0, 0.0]], DescriptorSettings(), device="cpu").shape
    torch.Size([1, 165])
    """
    cell, positions, weights = _density_weights(atoms, settings)
    dev = resolve(device)
    if isinstance(points_cart, torch.Tensor):
        points = points_cart.detach().to("cpu", torch.float64).numpy()
    else:
        points = np.asarray(points_cart, dtype=np.float64)
    points = points.reshape(-1, 3)
    if not np.all(np.isfinite(points)):
        raise GridError("points contain NaN or inf")
    r_inc = default_r_include(settings) if r_include is None else float(r_include)
    if not r_inc > 0:
        raise ElfcoreError(f"r_include={r_include}; must be > 0 Å")
    budget = 256 * 2**20
    out = torch.empty((len(points), settings.n_features), dtype=dtype, device=dev)
    step = max(len(points), 1) if chunk_size is None else int(chunk_size)
    if step < 1:
        raise ElfcoreError(f"chunk_size={chunk_size}; must be ≥ 1")
    for start in range(0, len(points), step):
        c = _direct_coefficients(cell, positions, points[start : start + step], settings, r_inc, dev, budget, weights)
        if weights is None and settings.compression != "mu1nu1":
            spectrum = _power_spectrum(c, settings)
        else:
            spectrum = _species_power_spectrum(c if weights is not None else c[None], settings)
        out[start : start + step] = spectrum.T.to(dtype)
    return out


# --------------------------------------------------------------------------- fft path
@functools.lru_cache(maxsize=64)
def _recip_kernel_cutoff(settings: DescriptorSettings, tol: float) -> float:
    """|G| in Å⁻¹ beyond which every channel's reciprocal kernel is below tol × its maximum."""
    g = np.linspace(0.0, 100.0, 10001)
    k = _radial_kernel(settings, g).numpy()  # (L, N, m)
    peak = np.abs(k).max(axis=-1, keepdims=True)
    above = np.abs(k) > tol * peak
    last = np.max(np.where(above.any(axis=(0, 1)))[0])
    return float(g[min(last + 1, len(g) - 1)])


def _radial_kernel(settings: DescriptorSettings, g) -> torch.Tensor:
    """Radial part of ρ̂ ĥ: (2πσ²)^{3/2} e^{−σ²G²/2} · 4π Σ_k β_lnk √π/(2^{l+2} α^{l+3/2}) e^{−G²/4α}.

    Multiplied by G^l here (the angular part is Y_lm(Ĝ), so G^l Y_lm = solid harmonic).
    ``g`` (m,) in Å⁻¹, array or tensor; returns a float64 tensor (l_max+1, n_radial, m)
    on ``g``'s device.
    """
    b = _basis(settings)
    sigma = settings.sigma
    g = torch.as_tensor(g, dtype=torch.float64)
    smear = (2 * math.pi * sigma**2) ** 1.5 * torch.exp(-0.5 * sigma**2 * g**2)
    out = torch.empty((settings.l_max + 1, settings.n_radial, len(g)), dtype=torch.float64, device=g.device)
    for l in range(settings.l_max + 1):
        a = torch.as_tensor(b.alphas[l], dtype=torch.float64, device=g.device)[:, None]
        beta = torch.as_tensor(b.betas[l], dtype=torch.float64, device=g.device)
        hank = math.sqrt(math.pi) / 2 ** (l + 2) * a ** (-l - 1.5) * torch.exp(-(g[None, :] ** 2) / (4 * a))
        out[l] = 4 * math.pi * smear[None, :] * (beta @ hank) * g[None, :] ** l
    return out


#: Per axis (a, b, c): the inverse transform is an FFT when at least this many frequencies occur
#: along it, else a dense matrix of exact phases. Chosen by timing the grid transforms on one CPU
#: core (500–2000 H on 48³–192³ grids, and 100 H in 28 Å / 40 Å cells on 192³, i.e. 117 / 167
#: frequencies along a and b): the dense products are faster for every cell up to 2000 H (2·37+1
#: frequencies), the FFTs win in larger cells (along a from ≈ 117, along b at 167, along c at 84 of
#: the real transform's frequencies).
_FFT_MIN_FREQS = (100, 150, 80)


class _FFTPlan:
    """Reciprocal-space coefficients of one structure on one grid (built per call).

    The coefficients ĉ_nlm(G) are needed on the reciprocal vectors with |G| ≤ g_cut
    and m_c ≥ 0 (c_nlm is real, so ĉ(−G) = ĉ(G)*). They are folded onto the grid's
    frequencies (j = m mod N along each axis; exact also for grids coarser than the
    band limit) and brought to real space by inverse DFTs pruned to the frequencies
    that occur: along a (for the whole grid here when it is an FFT, else per slab),
    then per slab of a-planes along b and, as a real transform, along c. Each axis
    uses an FFT or a dense matrix of exact phases, whichever is faster for its number
    of frequencies (``_FFT_MIN_FREQS``; a dense product costs ∝ frequencies per
    voxel, an FFT ∝ log N), so the cost per voxel stops growing with the cell size
    for large cells. The structure factor costs atoms × reciprocal box.
    """

    #: bytes of one atom chunk of the structure factor's phase table
    _SF_BUDGET = 32 * 2**20

    def __init__(self, cell, positions, shape, settings, device, dtype, tol, transforms=None, weights=None):
        # weights: None (one density of all atoms) or (n_atoms, C) channel weights (_density_weights)
        self.shape = tuple(int(n) for n in shape)
        self.settings = settings
        self.device = device
        cdt = torch.complex64 if dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.complex128
        self.cdt = cdt
        self.rdt = torch.float32 if cdt == torch.complex64 else torch.float64
        g_cut = _recip_kernel_cutoff(settings, tol)
        ma, mb, mc, mesh, gvec, gnorm = self._reciprocal_box(cell, g_cut)
        keep = gnorm <= g_cut
        sf = self._structure_factor(cell, positions, ma, mb, mc, weights)[..., keep]  # ([C,] K)
        m, gvec, gnorm = mesh[keep], gvec[keep], gnorm[keep]
        del mesh
        flat, sel, n_direct, n_u = self._fold(m, transforms)
        w = (sf / abs(float(np.linalg.det(cell))))[..., sel]
        w[..., n_direct:] = w[..., n_direct:].conj()
        spectrum = self._spectrum(gvec, gnorm, w, sel, n_direct, flat, n_u, weights)
        if self.transforms[0] == "fft":
            # (no 1/N: c(r) = Σ_G ĉ(G) e^{iG·r})
            spectrum = torch.fft.ifft(spectrum, dim=1, norm="forward")
        self.spectrum = spectrum
        self._eb = self._ec = None

    def _reciprocal_box(self, cell, g_cut: float):
        """Integer ranges (m_a, m_b, m_c ≥ 0) of the box holding |G| ≤ g_cut, its mesh, G vectors and |G|."""
        device, i64 = self.device, torch.int64
        lengths = np.linalg.norm(cell, axis=1)
        # G = 2π m·inv(cell)ᵀ; |m_k| ≤ |G| |a_k| / 2π
        M = np.ceil(g_cut * lengths / (2 * math.pi)).astype(int)
        self.M = M
        ma = torch.arange(-M[0], M[0] + 1, device=device, dtype=i64)
        mb = torch.arange(-M[1], M[1] + 1, device=device, dtype=i64)
        mc = torch.arange(0, M[2] + 1, device=device, dtype=i64)
        recip = torch.as_tensor(2 * math.pi * np.linalg.inv(cell).T, dtype=torch.float64, device=device)  # rows b_k
        mesh = torch.stack(torch.meshgrid(ma, mb, mc, indexing="ij"), dim=-1).reshape(-1, 3)
        gvec = mesh.to(torch.float64) @ recip
        return ma, mb, mc, mesh, gvec, gvec.norm(dim=-1)

    def _fold(self, m: torch.Tensor, transforms):
        """Fold the kept G onto grid frequencies; choose the transform per axis.

        Sets ``freqs`` (sorted frequencies that occur per axis) and ``transforms``.
        Returns ``(flat, sel, n_direct, n_u)``: the flat index of every folded entry in
        the pruned spectrum, the G it comes from (direct entries first, then mirrors),
        the number of direct entries and the frequencies per axis.
        """
        Na, Nb, Nc = self.shape
        # an entry with m_c > 0 also stands for its mirror −m (value ĉ*);
        # the real transform along c keeps frequencies 0 … Nc//2
        cf = Nc // 2 + 1
        n_grid = torch.tensor([Na, Nb, Nc], device=self.device, dtype=torch.int64)
        j_direct = torch.remainder(m, n_grid)
        j_mirror = torch.remainder(-m, n_grid)
        use_direct = j_direct[:, 2] < cf
        use_mirror = (m[:, 2] > 0) & (j_mirror[:, 2] < cf)
        j_all = torch.cat([j_direct[use_direct], j_mirror[use_mirror]])
        self.freqs = [torch.unique(j_all[:, k]) for k in range(3)]  # sorted frequencies that occur per axis
        n_u = [len(u) for u in self.freqs]
        if transforms is None:
            transforms = tuple("fft" if n_u[k] >= _FFT_MIN_FREQS[k] else "dense" for k in range(3))
        if len(transforms) != 3 or set(transforms) - {"fft", "dense"}:
            raise ElfcoreError(f"transforms={transforms!r}; expected three of 'fft', 'dense'")
        self.transforms = tuple(transforms)
        if self.transforms[0] == "fft":
            self.freqs[0] = torch.arange(Na, device=self.device)  # all rows, ready for the FFT along a
            n_u[0] = Na
        pos = [torch.searchsorted(self.freqs[k], j_all[:, k].contiguous()) for k in range(3)]
        flat = (pos[0] * n_u[1] + pos[1]) * n_u[2] + pos[2]
        sel = torch.cat([torch.nonzero(use_direct)[:, 0], torch.nonzero(use_mirror)[:, 0]])
        return flat, sel, int(use_direct.sum()), n_u

    def _spectrum(self, gvec, gnorm, w, sel, n_direct: int, flat, n_u, weights) -> torch.Tensor:
        """Coefficients ĉ_nlm(G) = i^l K_nl(|G|) Y_lm(Ĝ) S(G) / V on the pruned frequencies.

        ``w``: S(G)/V of the folded entries (mirrors conjugated). Returns
        (C·n_radial·nlm, n_a, n_b, n_c) in ``cdt``, channel-major rows (channel, n).
        """
        settings, device, cdt = self.settings, self.device, self.cdt
        lmax, nr = settings.l_max, settings.n_radial
        nlm = (lmax + 1) ** 2
        rad = _radial_kernel(settings, gnorm)  # (L, N, K) float64
        unit = gvec / torch.where(gnorm > 0, gnorm, torch.ones_like(gnorm))[:, None]
        ylm = _solid_harmonics(unit, lmax)  # (K, nlm)
        n_ch = 1 if weights is None else weights.shape[1]
        # channel-major rows (channel, n); one channel without weights
        spectrum = torch.zeros((n_ch * nr, nlm, n_u[0] * n_u[1] * n_u[2]), dtype=cdt, device=device)
        unique = len(torch.unique(flat)) == len(flat)  # else: grid coarser than the band limit
        for l in range(lmax + 1):
            sl = slice(l * l, (l + 1) * (l + 1))
            # the mirror of i^l K Y S is (−i)^l K Y S* (K Y is real); float64 until here, then cdt
            phase = torch.full((len(sel),), (1j) ** l, dtype=torch.complex128, device=device)
            phase[n_direct:] = phase[n_direct:].conj()
            if weights is None:
                angular = (ylm[sel, sl].T * (phase * w)[None, :]).to(cdt)  # (2l+1, K')
                vals = rad[l][:, sel].to(self.rdt)[:, None, :] * angular[None, :, :]  # (N, 2l+1, K')
            else:
                angular = (ylm[sel, sl].T[None] * (phase * w)[:, None, :]).to(cdt)  # (C, 2l+1, K')
                vals = rad[l][:, sel].to(self.rdt)[None, :, None, :] * angular[:, None, :, :]
                vals = vals.reshape(n_ch * nr, 2 * l + 1, -1)  # (C·N, 2l+1, K')
            if unique:
                spectrum[:, sl, flat] = vals
            else:  # several G on one grid frequency: add them up
                part = torch.view_as_real(spectrum[:, sl])
                index = flat[None, None, :, None].expand(n_ch * nr, 2 * l + 1, -1, 2)
                part.scatter_add_(2, index, torch.view_as_real(vals))
            del vals
        return spectrum.reshape(n_ch * nr * nlm, n_u[0], n_u[1], n_u[2])

    def _phases(self, n: int, j: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """exp(2πi j r / n) for grid indices r (rows, default all n) and frequencies j (columns), exact."""
        r = torch.arange(n, device=self.device, dtype=torch.int64) if rows is None else rows
        phase = torch.remainder(r[:, None] * j[None, :], n).to(torch.float64) * (2 * math.pi / n)
        return torch.polar(torch.ones_like(phase), phase)

    def _structure_factor(self, cell, positions, ma, mb, mc, weights=None) -> torch.Tensor:
        """S(G) = Σ_i exp(−i G·R_i) on the half box, flat C order.

        Separable in fractional coordinates: per-axis phases (exact, float64), summed
        over chunks of atoms as (a·b phase products)ᵀ @ (c phases) in the plan's
        complex dtype (complex64 for float32 output: ~10⁻⁷ relative). With
        ``weights`` (n_atoms, C): S_c(G) = Σ_i w_ic exp(−i G·R_i), shape (C, box).
        """
        device = self.device
        n_ab = len(ma) * len(mb)
        if weights is not None:
            w_all = torch.as_tensor(weights, dtype=torch.float64, device=device)
            sf = torch.zeros((w_all.shape[1], n_ab, len(mc)), dtype=self.cdt, device=device)
        else:
            sf = torch.zeros((n_ab, len(mc)), dtype=self.cdt, device=device)
        frac = torch.as_tensor(np.mod(positions @ np.linalg.inv(cell), 1.0), dtype=torch.float64, device=device)
        chunk = _reduce_sum_chunk(len(frac), sf.element_size() * n_ab, self._SF_BUDGET)
        m = [v.to(torch.float64) for v in (ma, mb, mc)]
        for s0 in range(0, len(frac), chunk):
            f = frac[s0 : s0 + chunk]
            pa, pb, pc = (torch.exp(-2j * math.pi * f[:, k : k + 1] * m[k][None, :]).to(self.cdt) for k in range(3))
            ab = (pa[:, :, None] * pb[:, None, :]).reshape(len(f), n_ab)
            if weights is None:
                sf += ab.T @ pc
            else:
                for ch in range(sf.shape[0]):
                    sf[ch] += (ab * w_all[s0 : s0 + chunk, ch : ch + 1].to(self.cdt)).T @ pc
        return sf.reshape(-1) if weights is None else sf.reshape(sf.shape[0], -1)

    def slab(self, a0: int, a1: int) -> torch.Tensor:
        """c_nlm on grid planes a0 ≤ i < a1: real tensor (n_ch, a1−a0, Nb, Nc)."""
        Na, Nb, Nc = self.shape
        n_ch, n_s = self.spectrum.shape[0], a1 - a0
        ub, uc = self.freqs[1], self.freqs[2]
        if self.transforms[0] == "fft":
            t = self.spectrum[:, a0:a1]
        else:
            ea = self._phases(Na, self.freqs[0], torch.arange(a0, a1, device=self.device)).to(self.cdt)
            t = torch.matmul(ea, self.spectrum.reshape(n_ch, len(self.freqs[0]), -1))
        t = t.reshape(n_ch * n_s, len(ub), len(uc))
        if self.transforms[1] == "fft":
            full = torch.zeros((n_ch * n_s, Nb, len(uc)), dtype=self.cdt, device=self.device)
            full[:, ub] = t
            t = torch.fft.ifft(full, dim=1, norm="forward")
        else:
            if self._eb is None:
                self._eb = self._phases(Nb, ub).to(self.cdt)  # (Nb, n_b)
            t = torch.matmul(self._eb, t)
        t = t.reshape(n_ch, n_s, Nb, len(uc))
        if self.transforms[2] == "fft":
            full = torch.zeros((n_ch, n_s, Nb, Nc // 2 + 1), dtype=self.cdt, device=self.device)
            full[..., uc] = t
            return torch.fft.irfft(full, n=Nc, dim=3, norm="forward")
        if self._ec is None:
            # c = Σ_j w_j Re(T_j e^{2πi j k/Nc}), w = 1 for j = 0 and j = Nc/2, else 2 (Hermitian half)
            ec = self._phases(Nc, uc).T  # (n_c, Nc)
            w = torch.where((uc == 0) | (2 * uc == Nc), 1.0, 2.0).to(torch.float64)[:, None]
            self._ec = torch.stack([ec.real * w, -ec.imag * w], dim=1).reshape(2 * len(uc), Nc).to(self.rdt)
        return torch.matmul(torch.view_as_real(t).reshape(n_ch, n_s, Nb, 2 * len(uc)), self._ec)


def _check_shape(shape) -> tuple[int, int, int]:
    try:
        shape = tuple(int(n) for n in shape)
    except TypeError as exc:
        raise GridError(f"grid shape {shape!r}; expected three positive integers") from exc
    if len(shape) != 3 or min(shape) < 1:
        raise GridError(f"grid shape {shape}; expected three positive integers")
    return shape


def iter_grid_descriptor(
    atoms,
    shape: Sequence[int],
    settings: DescriptorSettings,
    *,
    device: str | torch.device = "auto",
    dtype: torch.dtype = torch.float32,
    slab: int | None = None,
    tol: float = 1e-7,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Power spectrum on a full periodic grid, one slab of a-planes at a time (fft path).

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic structure holding only elements of ``settings.species``.
    shape : (Na, Nb, Nc)
        Grid; point (i, j, k) sits at fractional (i/Na, j/Nb, k/Nc).
    settings : DescriptorSettings
    device, dtype :
        As for :func:`compute_descriptor`. float32 runs the FFTs in complex64
        (≈10⁻⁶ relative error); float64 in complex128.
    slab : int, optional
        a-planes per chunk; default: about 2·10⁵ voxels per chunk on CPU, 4·10⁶ on CUDA
        (divided by the number of density channels for several species).
    tol : float
        Reciprocal vectors whose kernel is below ``tol`` × its maximum are dropped.

    Yields
    ------
    start, stop : int
        Flat C-order voxel range of this chunk (``grid_points_frac(shape)[start:stop]``).
    features : torch.Tensor, shape (stop − start, n_features)
        Same feature order as :func:`compute_descriptor`.
    """
    cell, positions, weights = _density_weights(atoms, settings)
    shape = _check_shape(shape)
    dev = resolve(device)
    plan = _FFTPlan(cell, positions, shape, settings, dev, dtype, tol, weights=weights)
    Na, Nb, Nc = shape
    plane = Nb * Nc
    if slab is None:  # the slab's coefficients grow with the number of density channels
        n_ch = 1 if weights is None else weights.shape[1]
        slab = max(1, (200_000 if dev.type == "cpu" else 4_000_000) // (plane * n_ch))
    slab = int(slab)
    if slab < 1:
        raise ElfcoreError(f"slab={slab}; must be ≥ 1")
    nlm = (settings.l_max + 1) ** 2
    for a0 in range(0, Na, slab):
        a1 = min(Na, a0 + slab)
        if weights is None and settings.compression != "mu1nu1":
            c = plan.slab(a0, a1).reshape(settings.n_radial, nlm, -1)
            p = _power_spectrum(c, settings)
        else:
            c = plan.slab(a0, a1).reshape(-1, settings.n_radial, nlm, (a1 - a0) * plane)
            p = _species_power_spectrum(c, settings)
        del c
        yield a0 * plane, a1 * plane, p.T.to(dtype)


def compute_grid_descriptor(
    atoms,
    shape: Sequence[int],
    settings: DescriptorSettings,
    *,
    device: str | torch.device = "auto",
    dtype: torch.dtype = torch.float32,
    method: str = "fft",
    slab: int | None = None,
    chunk_size: int | None = None,
    r_include: float | None = None,
) -> torch.Tensor:
    """Power spectrum at every point of a periodic grid.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic structure holding only elements of ``settings.species``.
    shape : (Na, Nb, Nc)
        Grid shape.
    settings : DescriptorSettings
    device, dtype :
        As for :func:`compute_descriptor`.
    method : {"fft", "direct"}
        ``"fft"`` (default, fast, see :func:`iter_grid_descriptor`) or ``"direct"``
        (the neighbour sum of :func:`compute_descriptor` at every grid point).
    slab, chunk_size, r_include :
        Passed to the fft (``slab``) or direct (``chunk_size``, ``r_include``) path.

    Returns
    -------
    torch.Tensor, shape (Na·Nb·Nc, n_features)
        Row order = C order of :func:`elfcore.grid.grid_points_frac` (c fastest).
        The whole grid is held in memory: for 192³ and 165 features that is
        4.7 GB in float32; use :func:`iter_grid_descriptor` for large grids.
    """
    shape = _check_shape(shape)
    if method == "direct":
        from .grid import grid_points_frac

        cell, _, _ = _read_structure(atoms)
        pts = grid_points_frac(shape) @ cell
        return compute_descriptor(
            atoms, pts, settings, device=device, dtype=dtype, chunk_size=chunk_size, r_include=r_include
        )
    if method != "fft":
        raise ElfcoreError(f"method={method!r}; must be 'fft' or 'direct'")
    dev = resolve(device)
    out = torch.empty((int(np.prod(shape)), settings.n_features), dtype=dtype, device=dev)
    for start, stop, feats in iter_grid_descriptor(atoms, shape, settings, device=dev, dtype=dtype, slab=slab):
        out[start:stop] = feats
    return out
