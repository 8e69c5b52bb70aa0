"""The 3D-CNN alternative to the descriptor MLP (``docs/science.md`` §4, paper Fig. S1).

For every sampling point r₀ the input is a *Gaussian density patch*

    ρ(x) = Σ_i exp(−|x − (R_i − r₀)|² / 2σ²),   x on a P×P×P grid spanning [−r_cut, r_cut]³,

summed over the atoms (all periodic images) with |R_i − r₀| ≤ r_cut. The patch grid is
Cartesian and axis-aligned (axes x, y, z in that order, x slowest), with the P nodes
``linspace(−r_cut, r_cut, P)`` along each axis, so the patch rotates with the
structure. A network of three convolution blocks (3×3×3 convolution, SiLU, 2×2×2
max-pooling) and a linear read-out with a sigmoid maps it to the ELF at r₀.

Public API
----------
``PatchSettings``
    frozen patch hyperparameters (``r_cut``, ``patch_size`` = P, ``sigma``); its
    ``n_features`` = P³ is the length of a flattened patch, so patches can be handled
    like any other descriptor (sampled, stored as float16, batched by the training loop).
``CNNSettings``
    frozen architecture (channels of the three blocks).
``compute_patches(atoms, points_cart, settings, *, device, dtype, chunk_size)``
    patches ``(n_points, P, P, P)``, vectorised over points and atoms.
``CNN``
    the network; ``forward`` accepts ``(n, P, P, P)`` or flattened ``(n, P³)`` patches.
``save_cnn`` / ``load_cnn``
    safetensors weights plus a JSON header (same layout as :mod:`elfcore.models.io`,
    ``model_class = "CNN"``); no pickles.
``cnn_voxel_samples`` / ``train_cnn`` / ``predict_cnn_points``
    the MLP protocol applied to patches: the voxel sampler of :mod:`elfcore.sampling`,
    :class:`~elfcore.train.TrainSettings`, the shared fit loop :func:`elfcore.fitting.fit`
    (Adam, Huber loss, cosine learning-rate decay, seeded batch order), the validation
    split and :func:`elfcore.metrics.metrics`.

References
----------
Wang et al., arXiv 2604.26445 (2026), SI Fig. S1: P = 12, three conv blocks + sigmoid,
r_cut swept 0.25–2.5 Å, best 1.0 Å. The paper does not state σ or the channel counts;
the defaults here (σ = 0.25 Å; 8, 16, 32 channels) are our choice.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..device import resolve
from ..errors import FormatError, SettingsError, SettingsMismatchError, StructureError
from ..jsonsafe import to_jsonable
from ..settings import Settings
from .io import check_finite_weights, check_tensor_shapes, read_raw_header, write_model_file

__all__ = [
    "PatchSettings",
    "CNNSettings",
    "patch_axis",
    "compute_patches",
    "CNN",
    "save_cnn",
    "load_cnn",
    "read_cnn_header",
    "cnn_voxel_samples",
    "train_cnn",
    "predict_cnn_points",
]

#: header schema of CNN files (same meaning as :data:`elfcore.models.io.SCHEMA_VERSION`)
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class PatchSettings(Settings):
    """Hyperparameters of the Gaussian density patch.

    Parameters
    ----------
    r_cut : float
        Neighbour cutoff and half-width of the cubic patch, Å (0 < r_cut ≤ 10).
    patch_size : int
        Grid nodes per axis, P (2 ≤ P ≤ 64; paper: 12).
    sigma : float
        Standard deviation of each atom's Gaussian, Å (> 0).

    Examples
    --------
    >>> PatchSettings(r_cut=1.0).n_features
    1728
    """

    r_cut: float = 1.0
    patch_size: int = 12
    sigma: float = 0.25

    def __post_init__(self) -> None:
        if not (isinstance(self.r_cut, (int, float)) and math.isfinite(self.r_cut) and 0 < self.r_cut <= 10):
            raise SettingsError(f"r_cut={self.r_cut!r}; must be in (0, 10] Å")
        if int(self.patch_size) != self.patch_size or not 2 <= self.patch_size <= 64:
            raise SettingsError(f"patch_size={self.patch_size!r}; must be an integer in [2, 64]")
        if not (isinstance(self.sigma, (int, float)) and math.isfinite(self.sigma) and self.sigma > 0):
            raise SettingsError(f"sigma={self.sigma!r}; must be > 0 Å")
        object.__setattr__(self, "r_cut", float(self.r_cut))
        object.__setattr__(self, "patch_size", int(self.patch_size))
        object.__setattr__(self, "sigma", float(self.sigma))

    @property
    def n_features(self) -> int:
        """Length of a flattened patch, P³."""
        return self.patch_size**3

    @property
    def spacing(self) -> float:
        """Distance between patch nodes, Å: ``2 r_cut / (P − 1)``."""
        return 2.0 * self.r_cut / (self.patch_size - 1)


@dataclass(frozen=True)
class CNNSettings(Settings):
    """Architecture of the 3D CNN.

    Parameters
    ----------
    channels : tuple of three int
        Output channels of the three convolution blocks (each ≥ 1).
    """

    channels: tuple[int, int, int] = (8, 16, 32)

    def __post_init__(self) -> None:
        ch = tuple(self.channels)
        if len(ch) != 3 or any(int(c) != c or c < 1 for c in ch):
            raise SettingsError(f"channels={self.channels!r}; must be three integers ≥ 1")
        object.__setattr__(self, "channels", tuple(int(c) for c in ch))


# --------------------------------------------------------------------------- patches
def patch_axis(settings: PatchSettings) -> np.ndarray:
    """Node coordinates along each patch axis, Å: ``linspace(−r_cut, r_cut, P)``."""
    return np.linspace(-settings.r_cut, settings.r_cut, settings.patch_size)


def _image_shifts(cell: np.ndarray, r_cut: float) -> np.ndarray:
    """Integer lattice translations (n_T, 3) that can bring an atom within ``r_cut``.

    After the fractional difference is wrapped to [−½, ½], image t_i along axis i can
    only matter if ``|s_i + t_i| ≤ r_cut / d_i`` with d_i the spacing of lattice planes
    i, so ``|t_i| ≤ ceil(r_cut / d_i + ½)``.
    """
    inv = np.linalg.inv(cell)
    reach = r_cut * np.linalg.norm(inv, axis=0)  # r_cut / d_i
    n = np.ceil(reach + 0.5).astype(int)
    ranges = [np.arange(-k, k + 1) for k in n]
    mesh = np.meshgrid(*ranges, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


def _neighbours(pos: np.ndarray, pts: np.ndarray, cell: np.ndarray, r_cut: float) -> tuple[np.ndarray, np.ndarray]:
    """Displacements ``R_i + T − r₀`` of all atom images within ``r_cut`` of each point.

    The images of the atoms that can lie within ``r_cut`` of the (wrapped) cell are put
    in a k-d tree; each point, wrapped into the cell, queries its neighbours.

    Returns
    -------
    d : numpy.ndarray, shape (n_points, K, 3)
        Displacements, Å (K = the largest neighbour count; padded rows are 0).
    w : numpy.ndarray, shape (n_points, K)
        1 for a real neighbour (|d| ≤ r_cut), 0 for padding.
    """
    from scipy.spatial import cKDTree

    inv = np.linalg.inv(cell)
    s_atoms = np.mod(pos @ inv, 1.0)
    s_pts = np.mod(pts @ inv, 1.0)
    reach = r_cut * np.linalg.norm(inv, axis=0) + 1e-9  # r_cut / plane spacing, per axis
    shifts = _image_shifts(cell, r_cut)
    s_img = (s_atoms[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    keep = np.all((s_img >= -reach) & (s_img <= 1.0 + reach), axis=1)
    img_cart = s_img[keep] @ cell
    pts_cart = s_pts @ cell
    n = len(pts_cart)
    if len(img_cart) == 0:
        return np.zeros((n, 0, 3)), np.zeros((n, 0))
    tree = cKDTree(img_cart)
    bound = r_cut * (1 + 1e-9) + 1e-12
    k = int(tree.query_ball_point(pts_cart, bound, return_length=True).max())
    if k == 0:
        return np.zeros((n, 0, 3)), np.zeros((n, 0))
    dist, idx = tree.query(pts_cart, k=k, distance_upper_bound=bound)
    dist, idx = dist.reshape(n, k), idx.reshape(n, k)
    found = idx < len(img_cart)
    d = np.zeros((n, k, 3))
    d[found] = img_cart[idx[found]] - np.repeat(pts_cart, k, axis=0).reshape(n, k, 3)[found]
    w = (found & (np.einsum("nkx,nkx->nk", d, d) <= r_cut**2)).astype(np.float64)
    d[w == 0] = 0.0
    return d, w


def compute_patches(
    atoms,
    points_cart,
    settings: PatchSettings,
    *,
    device: str | torch.device = "auto",
    dtype: torch.dtype = torch.float32,
    chunk_size: int = 1024,
    memory_elements: int = 4_000_000,
) -> torch.Tensor:
    """Gaussian density patches around arbitrary points.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic hydrogen structure (any triclinic cell).
    points_cart : array_like, shape (n_points, 3)
        Patch centres r₀, Cartesian Å (any periodic image).
    settings : PatchSettings
        r_cut (Å), P, σ (Å).
    device : str or torch.device
        ``"auto"`` → CUDA when available (:func:`elfcore.device.resolve`).
    dtype : torch.dtype
        Output precision (distances are computed in float64).
    chunk_size : int
        Largest number of points per vectorised block.
    memory_elements : int
        Cap on ``points × K × P²`` per block (bounds memory).

    Returns
    -------
    torch.Tensor, shape (n_points, P, P, P)
        ``patch[n, i, j, k] = Σ_{atoms, images, |d| ≤ r_cut} exp(−|g_ijk − d|² / 2σ²)``
        with ``d = R − r₀`` and ``g_ijk = (u_i, u_j, u_k)``, ``u = patch_axis(settings)``
        (x, y, z Cartesian order). Dimensionless (atoms per unnormalised Gaussian).

    Raises
    ------
    StructureError
        If the structure has non-hydrogen atoms or non-finite positions.

    Notes
    -----
    Neighbours come from a k-d tree over the atom images near the cell (no loop over
    points). The Gaussian factorises over Cartesian axes, so each of the ``K``
    neighbours (K = the largest neighbour count, padded) contributes an outer product
    of three length-P vectors, summed with one batched matrix product per block.
    """
    dev = resolve(device)
    numbers = np.asarray(atoms.get_atomic_numbers())
    if len(numbers) and np.any(numbers != 1):
        bad = sorted(set(int(z) for z in numbers if z != 1))
        raise StructureError(f"atomic numbers {bad} present; the CNN patch supports hydrogen (Z=1) only")
    pts = np.asarray(points_cart, dtype=np.float64).reshape(-1, 3)
    P = settings.patch_size
    n_pts = len(pts)
    out = torch.zeros((n_pts, P, P, P), dtype=dtype, device=dev)
    pos = np.asarray(atoms.get_positions(), dtype=np.float64).reshape(-1, 3)
    if n_pts == 0 or len(pos) == 0:
        return out
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(pts))):
        raise StructureError("non-finite atom positions or points")
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    dk_all, wk_all = _neighbours(pos, pts, cell, settings.r_cut)  # (n, K, 3), (n, K)
    if dk_all.shape[1] == 0:
        return out
    _add_gaussians(out, dk_all, wk_all, settings, chunk_size=chunk_size, memory_elements=memory_elements)
    return out


def _add_gaussians(out: torch.Tensor, dk_all: np.ndarray, wk_all: np.ndarray, settings: PatchSettings, *,
                   chunk_size: int, memory_elements: int) -> None:
    """Fill ``out`` (n, P, P, P) with the patches of neighbour offsets ``dk_all`` (n, K, 3) and weights (n, K)."""
    dtype, dev = out.dtype, out.device
    P = settings.patch_size
    # distances in float64; the Gaussians in the output precision (at least float32)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    axis_w = torch.as_tensor(patch_axis(settings), dtype=work, device=dev)  # (P,)
    inv2s2 = 1.0 / (2.0 * settings.sigma**2)
    K = dk_all.shape[1]
    block = max(1, min(int(chunk_size), int(memory_elements) // max(1, K * P * P)))
    for start in range(0, len(out), block):
        dk = torch.as_tensor(dk_all[start : start + block], dtype=work, device=dev)  # (m, K, 3)
        wk = torch.as_tensor(wk_all[start : start + block], dtype=work, device=dev)  # (m, K)
        m = len(dk)
        g = torch.exp(-((axis_w[None, None, None, :] - dk[..., None]) ** 2) * inv2s2)  # (m, K, 3, P)
        gxy = (g[:, :, 0, :, None] * wk[..., None, None]) * g[:, :, 1, None, :]  # (m, K, P, P)
        patch = torch.bmm(gxy.reshape(m, K, P * P).transpose(1, 2), g[:, :, 2])  # (m, P², P)
        out[start : start + m] = patch.reshape(m, P, P, P).to(dtype)


# --------------------------------------------------------------------------- network
class CNN(nn.Module):
    """3D CNN: density patch → three conv blocks → linear → sigmoid ELF.

    Parameters
    ----------
    patch_size : int
        P, the patch edge in nodes.
    channels : tuple of three int
        Channels of the three blocks (see :class:`CNNSettings`).

    Notes
    -----
    Block ``b``: ``Conv3d(c_{b−1}, c_b, 3, padding=1) → SiLU → MaxPool3d(2, ceil_mode=True)``;
    for P = 12 the spatial size goes 12 → 6 → 3 → 2, then the flattened map feeds
    one ``Linear(c_3 · 2³, 1)`` and a sigmoid. Inputs are standardised inside the
    model with two scalar buffers (``input_shift``, ``input_scale``) stored with the
    weights. ``descriptor_settings`` (a :class:`PatchSettings`) and ``metadata`` are
    attached by the training code or :func:`load_cnn`.

    Examples
    --------
    >>> m = CNN(6, channels=(2, 2, 2))
    >>> m(torch.zeros(4, 6, 6, 6)).shape
    torch.Size([4])
    """

    def __init__(self, patch_size: int = 12, channels: tuple[int, int, int] = (8, 16, 32)):
        super().__init__()
        arch = CNNSettings(channels=tuple(channels))
        if int(patch_size) != patch_size or patch_size < 2:
            raise SettingsError(f"patch_size={patch_size!r}; must be an integer ≥ 2")
        self.patch_size = int(patch_size)
        self.channels = arch.channels
        layers: list[nn.Module] = []
        c_in, size = 1, self.patch_size
        for c in self.channels:
            layers += [nn.Conv3d(c_in, c, 3, padding=1), nn.SiLU(), nn.MaxPool3d(2, ceil_mode=True)]
            c_in, size = c, (size + 1) // 2
        self.features = nn.Sequential(*layers)
        self.output = nn.Linear(c_in * size**3, 1)
        self.register_buffer("input_shift", torch.zeros(()))
        self.register_buffer("input_scale", torch.ones(()))
        self.descriptor_settings: PatchSettings | None = None
        self.metadata: dict[str, Any] = {}

    @property
    def n_features(self) -> int:
        """Length of a flattened input patch, P³."""
        return self.patch_size**3

    @property
    def n_members(self) -> int:
        """Always 1."""
        return 1

    @property
    def model_settings(self) -> CNNSettings:
        """The architecture as :class:`CNNSettings`."""
        return CNNSettings(channels=self.channels)

    @torch.no_grad()
    def set_normalization(self, shift, scale) -> None:
        """Set the input standardisation ``(x − shift) / scale``.

        ``shift``/``scale`` may be scalars or per-feature vectors (their means are used:
        one scalar for all patch nodes keeps the patch's spatial structure).
        """
        shift = float(torch.as_tensor(shift, dtype=torch.float64).mean())
        scale = float(torch.as_tensor(scale, dtype=torch.float64).mean())
        self.input_shift.fill_(shift)
        self.input_scale.fill_(scale if scale > 1e-12 else 1.0)

    def check_descriptor(self, patches: torch.Tensor, settings: PatchSettings | None = None) -> None:
        """Raise :class:`SettingsMismatchError` if ``patches`` do not fit this model."""
        if (
            settings is not None
            and self.descriptor_settings is not None
            and settings != self.descriptor_settings
        ):
            raise SettingsMismatchError(
                f"patch settings {settings.to_dict()} differ from the model's "
                f"{self.descriptor_settings.to_dict()}"
            )
        P = self.patch_size
        ok = (patches.ndim == 2 and patches.shape[1] == P**3) or (patches.ndim == 4 and tuple(patches.shape[1:]) == (P, P, P))
        if not ok:
            raise SettingsMismatchError(
                f"patches have shape {tuple(patches.shape)}; the model expects (n, {P}, {P}, {P}) or (n, {P**3})"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ELF for patches ``x`` (n, P, P, P) or (n, P³) → (n,) in [0, 1]."""
        P = self.patch_size
        h = x.reshape(-1, 1, P, P, P).to(self.input_shift.dtype)
        h = (h - self.input_shift) / self.input_scale
        h = self.features(h).flatten(1)
        return torch.sigmoid(self.output(h)).squeeze(-1)

    @torch.no_grad()
    def predict(self, patches: torch.Tensor, settings: PatchSettings | None = None, *, batch_size: int = 8192) -> torch.Tensor:
        """Checked, batched inference; returns (n,) float32 ELF on the model's device."""
        self.check_descriptor(patches, settings)
        dev = self.input_shift.device
        out = [self(patches[i : i + batch_size].to(dev)) for i in range(0, len(patches), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, device=dev)


# --------------------------------------------------------------------------- storage
def save_cnn(model: CNN, path: str | os.PathLike) -> Path:
    """Write a :class:`CNN` as safetensors with a JSON header (no pickles).

    The header (string metadata key ``"elfcore"``) holds ``schema_version``,
    ``elfcore_version``, ``model_class = "CNN"``, ``model`` (patch_size, channels),
    ``descriptor`` (the :class:`PatchSettings`) and ``training`` (free metadata).

    Raises
    ------
    SettingsMismatchError
        If the model has no ``descriptor_settings``.
    """

    from .. import __version__

    if model.descriptor_settings is None:
        raise SettingsMismatchError("model has no descriptor_settings (PatchSettings); set them before saving")
    header = {
        "schema_version": SCHEMA_VERSION,
        "elfcore_version": __version__,
        "model_class": "CNN",
        "model": {"patch_size": model.patch_size, **model.model_settings.to_dict()},
        "descriptor": model.descriptor_settings.to_dict(),
        "weights_dtype": "float32",
        "training": to_jsonable(model.metadata),
    }
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in model.state_dict().items()}
    return write_model_file(path, tensors, header)


def read_cnn_header(path: str | os.PathLike) -> dict[str, Any]:
    """JSON header of a CNN file written by :func:`save_cnn`.

    Raises
    ------
    FormatError
        If the file is not a safetensors file with an elfcore CNN header.
    """
    header = read_raw_header(path)
    if header.get("model_class") != "CNN":
        raise FormatError(f"model_class={header.get('model_class')!r}; expected 'CNN'", path=path)
    return header


def load_cnn(
    path: str | os.PathLike,
    *,
    descriptor_settings: PatchSettings | None = None,
    device: str | torch.device = "cpu",
) -> CNN:
    """Load a CNN written by :func:`save_cnn`.

    Parameters
    ----------
    path : str or path-like
        The safetensors file.
    descriptor_settings : PatchSettings, optional
        Patch settings the caller will use; others than the model's raise
        :class:`SettingsMismatchError`.
    device : str or torch.device
        Where to put the weights (``"auto"`` resolved by :func:`elfcore.device.resolve`).

    Returns
    -------
    CNN
        In eval mode, with ``descriptor_settings`` and ``metadata`` set.
    """
    from safetensors.torch import load_file

    header = read_cnn_header(path)
    try:
        settings = PatchSettings.from_dict(header["descriptor"])
        spec = dict(header["model"])
        patch_size = int(spec.pop("patch_size"))
        arch = CNNSettings.from_dict(spec)
    except (KeyError, ValueError, TypeError) as exc:
        raise FormatError(f"invalid CNN header ({exc})", path=str(path)) from exc
    if descriptor_settings is not None and descriptor_settings != settings:
        raise SettingsMismatchError(
            f"{path}: model was trained with patches {settings.to_dict()}, not {descriptor_settings.to_dict()}"
        )
    if patch_size != settings.patch_size:
        raise FormatError(f"model patch_size {patch_size} ≠ descriptor patch_size {settings.patch_size}", path=str(path))
    if not 1 <= patch_size <= 64 or len(arch.channels) > 16 or max(arch.channels, default=1) > 4096:
        raise FormatError(f"CNN header: patch_size {patch_size}, channels {list(arch.channels)[:20]}; allowed "
                          "patch_size 1..64, at most 16 layers of ≤ 4096 channels", path=str(path))
    model = check_tensor_shapes(lambda: CNN(patch_size, arch.channels), path)
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as exc:
        raise FormatError(f"tensors do not match the header ({exc})", path=str(path)) from exc
    check_finite_weights(model, path)
    model.descriptor_settings = settings
    model.metadata = dict(header.get("training") or {})
    return model.to(resolve(device)).eval()


# --------------------------------------------------------------------------- training protocol
def cnn_voxel_samples(
    field,
    settings: PatchSettings,
    n_voxels: int | None,
    *,
    seed: int,
    storage_dtype: str = "float32",
    device: str | torch.device = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Patches and reference ELF of random voxels of a field.

    The voxels are those :func:`elfcore.sampling.sample_voxels` draws with the same
    ``seed`` (so the CNN and the MLP see the same voxels).

    Parameters
    ----------
    field : xarray.DataArray
        Reference ELF field carrying a hydrogen structure.
    settings : PatchSettings
    n_voxels : int or None
        Number of voxels (``None``: all).
    seed : int
        Sampling seed.
    storage_dtype : {"float32", "float16"}
        Precision of the returned patches.

    Returns
    -------
    X : torch.Tensor, shape (n, P³), CPU
        Flattened patches (x slowest, z fastest).
    y : torch.Tensor, shape (n,), float32
    index : torch.Tensor, shape (n,), int64
        Flat C-order voxel indices.
    """
    from ..grid import field_atoms, field_cell, validate_field
    from ..sampling import check_storage_dtype, check_structure, sample_voxels, voxel_points_cart

    dtype = check_storage_dtype(storage_dtype)
    field = validate_field(field)
    atoms = field_atoms(field)
    check_structure(atoms)
    index = sample_voxels(field.shape, n_voxels, seed=seed)
    pts = voxel_points_cart(field.shape, index, field_cell(field))
    X = compute_patches(atoms, pts, settings, device=device).reshape(len(index), -1)
    X = X.to("cpu", dtype).contiguous()
    y = torch.as_tensor(np.asarray(field.values, dtype=np.float32).reshape(-1)[index.numpy()])
    return X, y, index


def _new_cnn(patch_size: int, channels: tuple[int, int, int], gen: torch.Generator,
             Xtr: torch.Tensor, ytr: torch.Tensor) -> CNN:
    """A CNN initialised from ``gen`` (no global seeding) and standardised on ``Xtr``."""
    model = CNN(patch_size, channels)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, (nn.Conv3d, nn.Linear)):
                bound = 1.0 / math.sqrt(layer.weight[0].numel())  # 1/sqrt(fan_in), as PyTorch's default
                layer.weight.copy_(torch.empty_like(layer.weight).uniform_(-bound, bound, generator=gen))
                layer.bias.copy_(torch.empty_like(layer.bias).uniform_(-bound, bound, generator=gen))
        # start the sigmoid in its linear range at the mean ELF (no saturated start)
        model.output.weight.mul_(0.01)
        p = float(ytr.mean().clamp(0.01, 0.99))
        model.output.bias.fill_(math.log(p / (1 - p)))
    x64 = Xtr.to(torch.float64)
    model.set_normalization(x64.mean(), x64.std())
    return model


def _default_train_settings():
    from ..train import TrainSettings  # the user-facing protocol settings; only for the default

    return TrainSettings()


def train_cnn(
    X: torch.Tensor,
    y: torch.Tensor,
    patch_settings: PatchSettings,
    settings=None,
    *,
    channels: tuple[int, int, int] = (8, 16, 32),
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> CNN:
    """Fit a :class:`CNN` with the MLP protocol, through the shared loop :func:`elfcore.fitting.fit`.

    Parameters
    ----------
    X : torch.Tensor, shape (n, P³) or (n, P, P, P)
        Patches (any float dtype; batches are cast to float32).
    y : torch.Tensor, shape (n,)
        Reference ELF in [0, 1].
    patch_settings : PatchSettings
        Settings of ``X``; stored in the model.
    settings : elfcore.train.TrainSettings, optional
        Epochs, batch size, learning rate (cosine decay to ``lr_final_factor``),
        Huber δ and validation fraction; ``width``/``hidden_layers``/``n_voxels`` are
        not used here. Default: the paper's protocol.
    channels : tuple of three int
        Architecture (:class:`CNNSettings`).
    seed : int
        Seed of the validation split, the initial weights and the batch order (one
        generator, drawn in that order).
    device : str or torch.device
        Training device (``"auto"``: CUDA if available).

    Returns
    -------
    CNN
        In eval mode on ``device``; ``metadata["history"]`` holds per-epoch training
        loss and validation MAE/RMSE/R².

    Raises
    ------
    SettingsError
        If ``X`` and ``y`` do not fit patches of ``patch_settings`` or the validation
        split leaves no training voxel.
    """
    from .. import fitting
    from ..fitting import huber_loss, split_indices
    from ..metrics import metrics

    settings = settings if settings is not None else _default_train_settings()
    dev = resolve(device)
    P = patch_settings.patch_size
    X = X.reshape(len(X), -1)
    if X.shape[1] != P**3 or y.ndim != 1 or len(X) != len(y):
        raise SettingsError(f"X {tuple(X.shape)} and y {tuple(y.shape)} do not fit patches of size {P}")
    gen = torch.Generator().manual_seed(int(seed))
    val_idx, tr_idx = split_indices(len(X), settings.val_fraction, gen)
    Xtr, ytr = X[tr_idx], y[tr_idx].to(torch.float32)
    Xval, yval = X[val_idx], y[val_idx].to(torch.float32)
    model = _new_cnn(P, channels, gen, Xtr, ytr)
    model.descriptor_settings = patch_settings
    model = model.to(dev)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        i = idx[0]  # one index stream
        return huber_loss(model(Xtr[i].to(dev, torch.float32)), ytr[i].to(dev), settings.huber_delta)

    def validate() -> dict[str, float]:
        m = metrics(model.predict(Xval), yval)
        return {"val_mae": m["mae"], "val_rmse": m["rmse"], "val_r2": m["r2"]}

    result = fitting.fit(model, batch_loss, len(tr_idx), settings, generators=[gen],
                         validate=validate if len(val_idx) else None, progress=progress, desc="train cnn")
    model.metadata = {
        "train_settings": settings.to_dict(), "channels": list(model.channels), "seed": int(seed),
        "n_train_voxels": len(tr_idx), "n_val_voxels": len(val_idx),
        "train_seconds": round(result.seconds, 2), "torch_version": torch.__version__,
        "history": result.history,
    }
    return model


@torch.no_grad()
def predict_cnn_points(
    model: CNN,
    atoms,
    points_cart,
    *,
    chunk_size: int = 4096,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """CNN ELF at arbitrary points, building patches chunk by chunk (bounded memory).

    Parameters
    ----------
    model : CNN
        With ``descriptor_settings`` set.
    atoms : ase.Atoms
        The structure.
    points_cart : array_like, shape (n, 3)
        Cartesian points, Å.
    chunk_size : int
        Points per patch block.
    device : str or torch.device, optional
        Where patches are built (default: the model's device).

    Returns
    -------
    torch.Tensor, shape (n,), float32, CPU
    """
    if model.descriptor_settings is None:
        raise SettingsMismatchError("model has no descriptor_settings (PatchSettings)")
    dev = model.input_shift.device if device is None else resolve(device)
    pts = np.asarray(points_cart, dtype=np.float64).reshape(-1, 3)
    out = []
    for i in range(0, len(pts), chunk_size):
        patches = compute_patches(atoms, pts[i : i + chunk_size], model.descriptor_settings, device=dev)
        out.append(model.predict(patches).cpu())
    return torch.cat(out) if out else torch.zeros(0)
