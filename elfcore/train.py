"""Voxel sampling, training, ensembles and metrics of the ELF model.

The protocol follows ``docs/science.md`` §2 and §4: from each training snapshot draw
50,000 random voxels (fixed seed), compute the grid-point SOAP descriptor
(:func:`elfcore.descriptor.compute_descriptor`) at those voxels, and fit the MLP
(width 128, 2 hidden layers, sigmoid output) with the Huber loss (δ = 0.03) and
Adam for 80 epochs. A random fraction of the sampled voxels is held out for
validation. Evaluation uses 150,000 random voxels per snapshot.

This module holds the single implementation of the accuracy metrics
(:func:`metrics`: MAE, RMSE, R²) used everywhere in elfcore.

Randomness comes only from explicit ``seed`` arguments turned into
:class:`torch.Generator` objects; nothing is seeded globally. On the CPU the same
seeds and the same thread count give bit-identical weights.

Descriptors of sampled voxels can be cached on disk (``cache_dir``): the key is a
hash of the descriptor settings, the descriptor implementation, the structure,
the grid, the reference values, the number of voxels and the sampling seed, so a
cached file can never be reused for other inputs.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import xarray as xr

from ._settings import settings_from_dict
from .errors import GridError, StructureError
from .grid import case_field, field_atoms, field_cell, validate_field
from .models.mlp import MLP, Ensemble

__all__ = [
    "TrainSettings",
    "MAX_DESCRIPTOR_BYTES",
    "metrics",
    "check_structure",
    "reference_field",
    "load_reference",
    "sample_voxels",
    "voxel_points_cart",
    "voxel_samples",
    "train_model",
    "train_on_fields",
    "masked_member",
    "predict_voxels",
    "evaluate_field",
    "evaluate_many",
]

log = logging.getLogger(__name__)

#: Memory budget for one block of descriptors held in memory (bytes). Requests
#: that would need more (e.g. evaluating every voxel of a huge grid at once)
#: raise :class:`~elfcore.errors.GridError`.
MAX_DESCRIPTOR_BYTES = 4 * 1024**3

_STORAGE = {"float32": torch.float32, "float16": torch.float16}


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class TrainSettings:
    """Training protocol (defaults: the paper's, ``docs/science.md`` §4).

    Parameters
    ----------
    n_voxels : int
        Random voxels drawn from each training snapshot (paper: 50,000).
    epochs : int
        Passes over the training voxels (paper: 80).
    batch_size : int
        Voxels per optimiser step.
    learning_rate : float
        Initial Adam learning rate.
    lr_final_factor : float
        The learning rate decays along a cosine from ``learning_rate`` to
        ``learning_rate * lr_final_factor`` over all steps (1.0 = constant).
    huber_delta : float
        δ of the Huber loss (paper: 0.03).
    val_fraction : float
        Fraction of the sampled voxels held out for validation (0 ≤ f < 1).
    width, hidden_layers : int
        MLP architecture (paper: 128, 2).
    storage_dtype : {"float32", "float16"}
        Precision in which sampled descriptors are stored (and cached); training
        itself runs in float32.
    """

    n_voxels: int = 50_000
    epochs: int = 80
    batch_size: int = 512
    learning_rate: float = 1e-3
    lr_final_factor: float = 0.02
    huber_delta: float = 0.03
    val_fraction: float = 0.1
    width: int = 128
    hidden_layers: int = 2
    storage_dtype: str = "float32"

    def __post_init__(self):
        for name in ("n_voxels", "epochs", "batch_size", "width", "hidden_layers"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}={v!r}; must be an integer ≥ 1")
        for name in ("learning_rate", "huber_delta"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name}={v!r}; must be > 0")
        if not (0 < self.lr_final_factor <= 1):
            raise ValueError(f"lr_final_factor={self.lr_final_factor!r}; must be in (0, 1]")
        if not (0 <= self.val_fraction < 1):
            raise ValueError(f"val_fraction={self.val_fraction!r}; must be in [0, 1)")
        if self.storage_dtype not in _STORAGE:
            raise ValueError(f"storage_dtype={self.storage_dtype!r}; must be one of {sorted(_STORAGE)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainSettings":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        return settings_from_dict(cls, data, "training")


# --------------------------------------------------------------------------- metrics
def metrics(pred, ref) -> dict[str, float | int]:
    """Accuracy of a predicted ELF against the reference.

    Parameters
    ----------
    pred, ref : array_like or torch.Tensor, same shape (any)
        Predicted and reference values (dimensionless ELF).

    Returns
    -------
    dict
        ``mae`` (mean absolute error), ``rmse`` (root mean square error), ``r2``
        (coefficient of determination ``1 - Σ(p-r)² / Σ(r-mean r)²``, computed in
        float64) and ``n_voxels`` (number of values).

    Examples
    --------
    >>> m = metrics([0.1, 0.5, 0.9], [0.1, 0.5, 0.7])
    >>> round(m["mae"], 4), round(m["rmse"], 4), round(m["r2"], 4), m["n_voxels"]
    (0.0667, 0.1155, 0.7857, 3)
    """
    p = np.asarray(pred.detach().cpu() if isinstance(pred, torch.Tensor) else pred, dtype=np.float64).ravel()
    r = np.asarray(ref.detach().cpu() if isinstance(ref, torch.Tensor) else ref, dtype=np.float64).ravel()
    if p.shape != r.shape:
        raise ValueError(f"prediction has {p.size} values, reference {r.size}")
    if p.size == 0:
        raise ValueError("metrics of zero values")
    d = p - r
    ss_tot = float(np.sum((r - r.mean()) ** 2))
    ss_res = float(np.sum(d * d))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    return {
        "mae": float(np.mean(np.abs(d))),
        "rmse": float(math.sqrt(ss_res / p.size)),
        "r2": float(r2),
        "n_voxels": int(p.size),
    }


# --------------------------------------------------------------------------- inputs
def check_structure(atoms, *, where: str = "structure") -> None:
    """Refuse structures the hydrogen models cannot describe.

    Raises
    ------
    StructureError
        If the structure has no atoms, non-finite positions, or elements other
        than hydrogen.
    """
    numbers = np.asarray(atoms.get_atomic_numbers())
    if numbers.size == 0:
        raise StructureError(f"{where} has no atoms; the ELF model needs hydrogen atoms")
    pos = np.asarray(atoms.get_positions(), dtype=np.float64)
    bad = ~np.all(np.isfinite(pos), axis=1)
    if bad.any():
        raise StructureError(f"{where}: positions of atoms {np.flatnonzero(bad)[:10].tolist()} are NaN or inf")
    other = sorted(set(numbers.tolist()) - {1})
    if other:
        from ase.data import chemical_symbols

        names = ", ".join(chemical_symbols[z] if 0 <= z < len(chemical_symbols) else str(z) for z in other)
        raise StructureError(
            f"{where} contains {names} ({int(np.sum(numbers != 1))} of {numbers.size} atoms); "
            "elfcore models are trained for pure hydrogen only"
        )


def reference_field(data: xr.Dataset | xr.DataArray, *, name: str = "elf_ref") -> xr.DataArray:
    """The reference ELF field of a case Dataset (``elf_ref``) or a field itself.

    Raises
    ------
    GridError
        If a case has no ``elf_ref`` field.
    StructureError
        If the field carries no usable hydrogen structure.
    """
    field = case_field(data, name) if isinstance(data, xr.Dataset) else validate_field(data)
    check_structure(field_atoms(field), where=str(field.attrs.get("name", "field")))
    return field


def load_reference(path: str | os.PathLike) -> tuple[str, xr.DataArray]:
    """Read a reference ELF from a netCDF case or any field file that carries atoms.

    Returns
    -------
    name : str
        The file stem (used as the case name in reports).
    field : xarray.DataArray
        The reference ELF with the case attrs (pressure_gpa, role, ...).
    """
    from . import io as eio

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(str(path))
    fmt = eio.sniff_format(path)
    if eio.FORMATS[fmt].case:
        data = eio.read_case(path, format=fmt)
    else:
        data = eio.read_field(path, format=fmt)
    field = reference_field(data)
    field.attrs.setdefault("name", path.stem)
    return path.stem, field


# --------------------------------------------------------------------------- sampling
def sample_voxels(shape: Sequence[int], n_voxels: int | None, *, seed: int) -> torch.Tensor:
    """Random distinct voxels of a grid.

    Parameters
    ----------
    shape : (Na, Nb, Nc)
        Grid shape.
    n_voxels : int or None
        How many; ``None`` or more than the grid holds → every voxel (in C order).
    seed : int
        Seed of the :class:`torch.Generator` used.

    Returns
    -------
    torch.Tensor, shape (n,), int64
        Flat C-order indices into the grid (``c`` fastest).
    """
    total = int(np.prod(shape))
    if n_voxels is None or n_voxels >= total:
        return torch.arange(total)
    if n_voxels < 1:
        raise ValueError(f"n_voxels={n_voxels}; must be ≥ 1")
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(total, generator=gen)[:n_voxels]


def voxel_points_cart(shape: Sequence[int], index: torch.Tensor | np.ndarray, cell) -> np.ndarray:
    """Cartesian positions (n, 3) in Å of flat C-order voxel ``index`` on a grid of ``shape``."""
    ijk = np.stack(np.unravel_index(np.asarray(index, dtype=np.int64), tuple(shape)), axis=1)
    return (ijk / np.asarray(shape, dtype=np.float64)) @ np.asarray(cell, dtype=np.float64)


def _descriptor_revision() -> str:
    from . import descriptor

    try:
        src = inspect.getsource(descriptor)
    except (OSError, TypeError):
        from . import __version__

        src = __version__
    return hashlib.sha256(src.encode()).hexdigest()[:16]


def _cache_key(field: xr.DataArray, settings, n_voxels, seed: int, storage: str, method: str = "fft") -> str:
    h = hashlib.sha256()
    h.update(method.encode())
    h.update(json.dumps(settings.to_dict(), sort_keys=True).encode())
    h.update(_descriptor_revision().encode())
    h.update(json.dumps([list(field.shape), n_voxels, int(seed), storage]).encode())
    h.update(np.ascontiguousarray(field_cell(field), dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(field.attrs["positions"], dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(field.attrs["numbers"], dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(field.values, dtype=np.float32).tobytes())
    return h.hexdigest()[:24]


def _check_budget(n_points: int, n_features: int, bytes_per_value: int) -> None:
    need = n_points * n_features * bytes_per_value
    if need > MAX_DESCRIPTOR_BYTES:
        raise GridError(
            f"{n_points} voxels × {n_features} features need {need / 1024**3:.1f} GiB of descriptors, "
            f"above the budget of {MAX_DESCRIPTOR_BYTES / 1024**3:.1f} GiB; sample fewer voxels"
        )


def voxel_samples(
    field: xr.DataArray,
    settings,
    n_voxels: int | None,
    *,
    seed: int,
    storage_dtype: str = "float32",
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    method: str = "fft",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Descriptors and reference values of random voxels of a field.

    Parameters
    ----------
    field : xarray.DataArray
        Reference ELF field carrying a hydrogen structure.
    settings : DescriptorSettings
        Descriptor hyperparameters.
    n_voxels : int or None
        Number of random voxels (``None``: all).
    seed : int
        Sampling seed (see :func:`sample_voxels`).
    storage_dtype : {"float32", "float16"}
        Precision of the returned (and cached) descriptors.
    cache_dir : path-like, optional
        Directory of the descriptor cache; ``None`` disables caching.
    device : str or torch.device
        Where descriptors are computed (``"auto"``: CUDA if available).
    method : {"fft", "direct"}
        ``"fft"`` computes the descriptor on the whole grid slab by slab
        (:func:`elfcore.descriptor.iter_grid_descriptor`, fast, memory bounded by
        the slab) and keeps the sampled voxels; ``"direct"`` evaluates only the
        sampled points (:func:`elfcore.descriptor.compute_descriptor`). They agree
        to ~1e-6 relative.

    Returns
    -------
    X : torch.Tensor, shape (n, n_features), ``storage_dtype``, CPU
    y : torch.Tensor, shape (n,), float32, CPU
        Reference ELF at the voxels.
    index : torch.Tensor, shape (n,), int64
        Flat C-order voxel indices.
    """
    from .descriptor import compute_descriptor, iter_grid_descriptor

    if method not in ("fft", "direct"):
        raise ValueError(f"method={method!r}; must be 'fft' or 'direct'")
    if storage_dtype not in _STORAGE:
        raise ValueError(f"storage_dtype={storage_dtype!r}; must be one of {sorted(_STORAGE)}")
    field = validate_field(field)
    atoms = field_atoms(field)
    check_structure(atoms)
    total = int(np.prod(field.shape))
    n_eff = total if n_voxels is None else min(int(n_voxels), total)
    _check_budget(n_eff, settings.n_features, 4)
    path = None
    if cache_dir is not None:
        key = _cache_key(field, settings, n_voxels, seed, storage_dtype, method)
        path = Path(cache_dir) / f"desc-{key}.safetensors"
        if path.exists():
            from safetensors.torch import load_file

            try:
                t = load_file(str(path))
                log.debug("descriptor cache hit %s", path.name)
                return t["X"], t["y"], t["index"]
            except Exception as exc:  # corrupt/partial cache file: recompute
                log.warning("ignoring unreadable cache file %s (%s)", path, exc)
    if cache_dir is not None:
        hit = _superset_from_cache(field, settings, n_voxels, seed, storage_dtype, method, Path(cache_dir))
        if hit is not None:
            return hit
    index = sample_voxels(field.shape, n_voxels, seed=seed)
    t0 = time.perf_counter()
    if method == "fft":
        X = torch.empty((len(index), settings.n_features), dtype=_STORAGE[storage_dtype])
        order = torch.argsort(index)
        sorted_idx = index[order]
        for start, stop, feats in iter_grid_descriptor(atoms, field.shape, settings, device=device,
                                                       dtype=torch.float32):
            lo = int(torch.searchsorted(sorted_idx, start))
            hi = int(torch.searchsorted(sorted_idx, stop))
            if hi > lo:
                rows = (sorted_idx[lo:hi] - start).to(feats.device)
                X[order[lo:hi]] = feats[rows].to("cpu", _STORAGE[storage_dtype])
    else:
        pts = voxel_points_cart(field.shape, index, field_cell(field))
        X = compute_descriptor(atoms, pts, settings, device=device, dtype=torch.float32)
        X = X.detach().to("cpu", _STORAGE[storage_dtype]).contiguous()
    y = torch.as_tensor(np.asarray(field.values, dtype=np.float32).reshape(-1)[index.numpy()])
    log.info("descriptors of %d voxels (%d features) in %.1f s", len(index), X.shape[1], time.perf_counter() - t0)
    if path is not None:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({"X": X, "y": y.contiguous(), "index": index.contiguous()}, str(tmp))
        os.replace(tmp, path)
    return X, y, index


def _superset_from_cache(field, settings, n_voxels, seed, storage_dtype, method, cache_dir: Path):
    """Cached descriptors of the same voxels with a larger l_max, cut down to ``settings``.

    Valid because feature ``(n, n', l)`` does not depend on l_max (the radial basis
    of each l is built from r_cut, n_radial and l only; ``feature_labels`` gives the
    columns). ``tests/test_train.py`` checks the equality against a direct computation.
    """
    from dataclasses import replace

    from safetensors.torch import load_file

    from .descriptor import feature_labels

    for l_big in range(settings.l_max + 1, 9):
        big = replace(settings, l_max=l_big)
        path = cache_dir / f"desc-{_cache_key(field, big, n_voxels, seed, storage_dtype, method)}.safetensors"
        if not path.exists():
            continue
        try:
            t = load_file(str(path))
        except Exception:  # unreadable cache file: ignore
            continue
        pos = {lab: i for i, lab in enumerate(feature_labels(big))}
        cols = torch.tensor([pos[lab] for lab in feature_labels(settings)])
        log.debug("descriptor cache hit %s (l_max %d → %d)", path.name, l_big, settings.l_max)
        return t["X"][:, cols].contiguous(), t["y"], t["index"]
    return None


# --------------------------------------------------------------------------- training
class _Adam:
    """Adam (Kingma & Ba 2015; β = (0.9, 0.999), ε = 1e-8, no weight decay).

    The same update as ``torch.optim.Adam`` with default options, written out so
    that training does not import ``torch._dynamo`` (which ``torch.optim`` does on
    first use, costing seconds per process).
    """

    def __init__(self, params: list[torch.Tensor], betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = params
        self.b1, self.b2 = betas
        self.eps = eps
        self.t = 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: float) -> None:
        self.t += 1
        c1 = 1 - self.b1**self.t
        c2 = 1 - self.b2**self.t
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            g = p.grad
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            denom = (v / c2).sqrt_().add_(self.eps)
            p.addcdiv_(m, denom, value=-lr / c1)


def _member_generators(seed: int, n_members: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(seed) + m) for m in range(n_members)]


@torch.no_grad()
def _init_members(model: Ensemble, gens: list[torch.Generator]) -> None:
    for m, g in enumerate(gens):
        for w, b in zip(model.weights, model.biases):
            bound = 1.0 / math.sqrt(w.shape[-1])
            w[m].copy_(torch.empty(w.shape[1:]).uniform_(-bound, bound, generator=g))
            b[m].copy_(torch.empty(b.shape[1:]).uniform_(-bound, bound, generator=g))


def _member_metrics(pred: torch.Tensor, y: torch.Tensor) -> list[dict]:
    return [metrics(p, y) for p in pred]


def train_model(
    X: torch.Tensor,
    y: torch.Tensor,
    descriptor_settings,
    settings: TrainSettings = TrainSettings(),
    *,
    seed: int = 0,
    n_members: int = 1,
    split_seed: int | None = None,
    feature_masks: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> MLP | Ensemble:
    """Fit the ELF MLP (or an ensemble) to descriptor/ELF pairs.

    Parameters
    ----------
    X : torch.Tensor, shape (n, n_features)
        Descriptors (any float dtype; batches are cast to float32).
    y : torch.Tensor, shape (n,)
        Reference ELF in [0, 1].
    descriptor_settings : DescriptorSettings
        Settings of ``X``; stored in the model.
    settings : TrainSettings
        Protocol (epochs, batch size, learning rate, Huber δ, validation split).
    seed : int
        Member ``m`` uses seed ``seed + m`` for its initial weights and its voxel
        order.
    n_members : int
        1 → an :class:`MLP`; more → an :class:`Ensemble` whose members are trained
        independently (Adam is element-wise and the loss is a sum over members, so
        member ``m`` is the model a single run with seed ``seed + m`` and the same
        ``split_seed`` gives).
    split_seed : int, optional
        Seed of the train/validation split (default: ``seed``); shared by all members.
    feature_masks : torch.Tensor, shape (n_members, n_features), bool, optional
        Member ``m`` sees only the features where ``feature_masks[m]`` is true (the
        others are held at their training mean, i.e. 0 after standardisation, so
        their weights get no gradient). Lets models of nested descriptors (e.g.
        every l_max ≤ the one of ``X``) train in one pass; cut a member down with
        :func:`masked_member`. The first-layer initialisation uses each member's
        own fan-in.
    device : str or torch.device
        Training device (``"auto"``: CUDA if available).
    progress : bool
        Show a tqdm bar (stderr).

    Returns
    -------
    MLP or Ensemble
        In eval mode, on ``device``; ``metadata["history"]`` holds the per-epoch
        training loss and validation metrics (mean over members).
    """
    from tqdm.auto import tqdm

    from .device import resolve

    dev = resolve(device)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise ValueError(f"X {tuple(X.shape)} and y {tuple(y.shape)} do not match")
    if X.shape[1] != descriptor_settings.n_features:
        raise ValueError(f"X has {X.shape[1]} features; settings give {descriptor_settings.n_features}")
    n = len(X)
    split_gen = torch.Generator().manual_seed(int(seed if split_seed is None else split_seed))
    perm = torch.randperm(n, generator=split_gen)
    n_val = int(round(settings.val_fraction * n))
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    if len(tr_idx) < 1:
        raise ValueError(f"no training voxels left after a validation split of {settings.val_fraction}")
    Xtr = X[tr_idx].to(dev)
    ytr = y[tr_idx].to(dev, torch.float32)
    Xval = X[val_idx].to(dev)
    yval = y[val_idx].to(torch.float32)

    x64 = Xtr.to(torch.float64)
    model = Ensemble(X.shape[1], n_members, settings.width, settings.hidden_layers)
    model.set_normalization(x64.mean(0).float().cpu(), x64.std(0, correction=0).float().cpu())
    del x64
    gens = _member_generators(seed, n_members)
    _init_members(model, gens)
    masks = None
    if feature_masks is not None:
        masks = torch.as_tensor(feature_masks, dtype=torch.bool)
        if masks.shape != (n_members, X.shape[1]) or not bool(masks.any(dim=1).all()):
            raise ValueError(f"feature_masks must be (n_members, n_features) = ({n_members}, {X.shape[1]}) "
                             "with at least one feature per member")
        with torch.no_grad():
            fan = masks.sum(dim=1).to(torch.float32)
            model.weights[0].mul_(torch.sqrt(X.shape[1] / fan)[:, None, None])
        masks = masks.to(dev)
    model = model.to(dev)
    model.descriptor_settings = descriptor_settings

    opt = _Adam(list(model.parameters()))
    n_tr = len(tr_idx)
    bs = min(settings.batch_size, n_tr)
    steps_per_epoch = n_tr // bs
    total_steps = steps_per_epoch * settings.epochs
    lr0, lr1 = settings.learning_rate, settings.learning_rate * settings.lr_final_factor
    loss_fn = torch.nn.HuberLoss(delta=settings.huber_delta, reduction="none")
    history: list[dict] = []
    step = 0
    t0 = time.perf_counter()
    bar = tqdm(range(settings.epochs), desc="train", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        orders = torch.stack([torch.randperm(n_tr, generator=g) for g in gens]).to(dev)
        total = torch.zeros((), device=dev, dtype=torch.float64)
        for k in range(steps_per_epoch):
            lr = lr1 + 0.5 * (lr0 - lr1) * (1 + math.cos(math.pi * step / max(total_steps, 1)))
            idx = orders[:, k * bs : (k + 1) * bs]
            xb = Xtr[idx].float()
            if masks is not None:
                xb = torch.where(masks[:, None, :], xb, model.feature_shift)
            yb = ytr[idx]
            pred = model(xb)
            loss = loss_fn(pred, yb).mean(dim=1).sum()
            opt.zero_grad()
            loss.backward()
            opt.step(lr)
            total += loss.detach()
            step += 1
        rec = {"epoch": epoch + 1, "train_loss": float(total) / max(steps_per_epoch, 1) / n_members}
        if n_val:
            model.eval()
            pv = _predict_batches(model, Xval, masks).cpu()
            mm = _member_metrics(pv, yval)
            rec.update({f"val_{k}": float(np.mean([m[k] for m in mm])) for k in ("mae", "rmse", "r2")})
            if n_members > 1:
                rec["val_r2_members"] = [m["r2"] for m in mm]
                rec["val_mae_members"] = [m["mae"] for m in mm]
            bar.set_postfix(loss=f"{rec['train_loss']:.2e}", val_r2=f"{rec['val_r2']:.4f}")
        history.append(rec)
        log.debug("epoch %s", rec)
    bar.close()
    elapsed = time.perf_counter() - t0
    last = history[-1] if history else {}
    log.info(
        "trained %d member(s) on %d voxels (%d validation) for %d epochs in %.1f s%s",
        n_members, n_tr, n_val, settings.epochs, elapsed,
        f"; validation R² {last['val_r2']:.4f}, MAE {last['val_mae']:.4f}" if "val_r2" in last else "",
    )
    model.eval()
    model.metadata = {
        "train_settings": settings.to_dict(),
        "seed": int(seed),
        "split_seed": int(seed if split_seed is None else split_seed),
        "n_members": n_members,
        "n_train_voxels": n_tr,
        "n_val_voxels": n_val,
        "train_seconds": round(elapsed, 2),
        "torch_version": torch.__version__,
        "history": history,
    }
    if n_members == 1:
        single = model.member(0)
        single.metadata.pop("member", None)
        return single.eval()
    return model


@torch.no_grad()
def _predict_batches(model: MLP | Ensemble, X: torch.Tensor, masks: torch.Tensor | None = None,
                     batch: int = 65536) -> torch.Tensor:
    dev = model.feature_shift.device
    outs = []
    for i in range(0, len(X), batch):
        xb = X[i : i + batch].to(dev).float()
        if masks is not None:
            xb = torch.where(masks[:, None, :], xb.unsqueeze(0), model.feature_shift)
        outs.append(model(xb))
    if not outs:
        return torch.zeros((model.n_members, 0) if isinstance(model, Ensemble) else (0,), device=dev)
    out = torch.cat(outs, dim=-1)
    return out if isinstance(model, Ensemble) else out.unsqueeze(0)


@torch.no_grad()
def masked_member(model: Ensemble, i: int, columns, descriptor_settings) -> MLP:
    """Member ``i`` of a ``feature_masks``-trained ensemble as an MLP on ``columns`` only.

    Parameters
    ----------
    model : Ensemble
        Trained with ``feature_masks[i]`` true exactly at ``columns``.
    columns : sequence of int
        Feature columns (of the ensemble's input) that the member saw, in the
        order of the smaller descriptor ``descriptor_settings``.
    descriptor_settings : DescriptorSettings
        Settings of the smaller descriptor (``n_features == len(columns)``).
    """
    cols = torch.as_tensor(list(columns), dtype=torch.long)
    if len(cols) != descriptor_settings.n_features:
        raise ValueError(f"{len(cols)} columns for {descriptor_settings.n_features} features")
    full = model.member(i).cpu()
    m = MLP(len(cols), full.width, full.hidden_layers)
    m.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith(("feature_", "hidden.0.weight"))},
                      strict=False)
    m.hidden[0].weight.copy_(full.hidden[0].weight[:, cols])
    m.set_normalization(full.feature_shift[cols], full.feature_scale[cols])
    m.descriptor_settings = descriptor_settings
    m.metadata = dict(full.metadata)
    return m.eval()


def train_on_fields(
    fields_: Iterable[tuple[str, xr.DataArray]],
    descriptor_settings,
    settings: TrainSettings = TrainSettings(),
    *,
    seed: int = 0,
    n_members: int = 1,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> MLP | Ensemble:
    """The full protocol: sample ``settings.n_voxels`` voxels per field, describe, train.

    Parameters
    ----------
    fields_ : iterable of (name, field)
        Reference ELF fields (e.g. from :func:`load_reference`), one per training snapshot.
    descriptor_settings : DescriptorSettings
    settings : TrainSettings
    seed : int
        Snapshot ``i`` is sampled with seed ``seed + 1000 * i``; training uses ``seed``
        (see :func:`train_model`).
    n_members : int
        Ensemble size.
    cache_dir : path-like, optional
        Descriptor cache directory.
    device : str or torch.device
        Descriptor and training device.

    Returns
    -------
    MLP or Ensemble
        ``metadata`` records the training cases, voxel counts and seeds.
    """
    Xs, ys, cases = [], [], []
    for i, (name, field) in enumerate(fields_):
        X, y, _ = voxel_samples(
            field, descriptor_settings, settings.n_voxels, seed=seed + 1000 * i,
            storage_dtype=settings.storage_dtype, cache_dir=cache_dir, device=device,
        )
        Xs.append(X)
        ys.append(y)
        cases.append({
            "name": name,
            "n_voxels": len(y),
            "sampling_seed": seed + 1000 * i,
            **{k: _plain(field.attrs[k]) for k in ("pressure_gpa", "family", "role", "md_step") if k in field.attrs},
        })
    if not Xs:
        raise ValueError("no training data given")
    model = train_model(torch.cat(Xs), torch.cat(ys), descriptor_settings, settings, seed=seed,
                        n_members=n_members, device=device, progress=progress)
    model.metadata["training_cases"] = cases
    return model


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    return v


# --------------------------------------------------------------------------- evaluation
def predict_voxels(model: MLP | Ensemble, X: torch.Tensor) -> torch.Tensor:
    """Member predictions (n_members, n) of ``model`` for descriptors ``X`` (n, n_features), on CPU."""
    model.check_descriptor(X)
    return _predict_batches(model, X).cpu()


def evaluate_field(
    model: MLP | Ensemble,
    field: xr.DataArray,
    *,
    n_voxels: int | None = 150_000,
    seed: int = 1,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    storage_dtype: str = "float32",
) -> dict[str, Any]:
    """Accuracy of ``model`` on random voxels of a reference field.

    Parameters
    ----------
    model : MLP or Ensemble
        With ``descriptor_settings`` set.
    field : xarray.DataArray
        Reference ELF carrying a hydrogen structure.
    n_voxels : int or None
        Random voxels to score (paper: 150,000; ``None``: every voxel).
    seed : int
        Sampling seed.

    Returns
    -------
    dict
        ``mae``, ``rmse``, ``r2``, ``n_voxels``. For an ensemble these are the
        mean over members, with ``mae_std``, ``rmse_std``, ``r2_std`` (standard
        deviation over members, as in the paper's Table S1), ``ensemble_mean``
        (metrics of the member-mean prediction) and ``mean_member_std`` (average
        predicted uncertainty).
    """
    X, y, _ = voxel_samples(field, model.descriptor_settings, n_voxels, seed=seed,
                            storage_dtype=storage_dtype, cache_dir=cache_dir, device=device)
    pred = predict_voxels(model, X)
    return _summarise(pred, y)


def _summarise(pred: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    per = _member_metrics(pred, y)
    if len(per) == 1:
        return dict(per[0])
    out: dict[str, Any] = {"n_voxels": per[0]["n_voxels"], "n_members": len(per)}
    for k in ("mae", "rmse", "r2"):
        vals = np.array([m[k] for m in per])
        out[k] = float(vals.mean())
        out[f"{k}_std"] = float(vals.std(ddof=1))
    out["ensemble_mean"] = metrics(pred.mean(0), y)
    out["mean_member_std"] = float(pred.std(0, correction=0).mean())
    return out


def evaluate_many(
    model: MLP | Ensemble,
    cases: Iterable[tuple[str, xr.DataArray]],
    *,
    n_voxels: int | None = 150_000,
    seed: int = 1,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
) -> dict[str, Any]:
    """Per-case and overall accuracy (the ``elfcore evaluate`` report).

    Returns
    -------
    dict
        ``{"cases": [{"name", "mae", "rmse", "r2", "n_voxels", ...}], "overall": {...}}``;
        ``overall`` pools the voxels of all cases.
    """
    rows, preds, refs = [], [], []
    for name, field in cases:
        X, y, _ = voxel_samples(field, model.descriptor_settings, n_voxels, seed=seed,
                                cache_dir=cache_dir, device=device)
        pred = predict_voxels(model, X)
        row = {"name": name, **_summarise(pred, y)}
        for k in ("pressure_gpa", "family", "role"):
            if k in field.attrs:
                row[k] = _plain(field.attrs[k])
        rows.append(row)
        preds.append(pred)
        refs.append(y)
    if not rows:
        raise ValueError("no evaluation data given")
    overall = _summarise(torch.cat(preds, dim=1), torch.cat(refs))
    return {"cases": rows, "overall": overall}
