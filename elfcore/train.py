"""Training and evaluation of the ELF MLP and its ensembles (the user-facing protocol).

The protocol follows ``docs/science.md`` §2 and §4: from each training snapshot draw
50,000 random voxels (fixed seed), compute the grid-point SOAP descriptor
(:func:`elfcore.descriptor.compute_descriptor`) at those voxels, and fit the MLP
(width 128, 2 hidden layers, sigmoid output) with the Huber loss (δ = 0.03) and
Adam for 80 epochs. A random fraction of the sampled voxels is held out for
validation. Evaluation uses 150,000 random voxels per snapshot.

The parts live in modules of their own:

* :mod:`elfcore.metrics` — the accuracy metrics (MAE, RMSE, R²);
* :mod:`elfcore.sampling` — reference fields, voxel sampling and the descriptor cache;
* :mod:`elfcore.fitting` — the one minibatch fit loop (``torch.optim.Adam``, cosine
  learning rate), also used by the CNN (:func:`elfcore.models.cnn.train_cnn`).

This module holds :class:`TrainSettings` and the functions that put them together
(:func:`train_model`, :func:`train_on_fields`, :func:`evaluate_field`,
:func:`evaluate_many`); the names of the modules above that callers used to import
from here are re-exported.

Randomness comes only from explicit ``seed`` arguments turned into
:class:`torch.Generator` objects; nothing is seeded globally. On the CPU the same
seeds and the same thread count give bit-identical weights.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
import xarray as xr

from .errors import SettingsError
from .settings import Settings, plain
from . import fitting
from .fitting import huber_loss, seed_generators, split_indices
from .metrics import member_metrics, metrics, summarise
from .models.mlp import MLP, Ensemble
from .sampling import (  # noqa: F401  (re-exports: these lived here before the split)
    MAX_DESCRIPTOR_BYTES,
    STORAGE_DTYPES,
    check_structure,
    load_reference,
    reference_field,
    sample_voxels,
    voxel_points_cart,
    voxel_samples,
)

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


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class TrainSettings(Settings):
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

    Raises
    ------
    SettingsError
        If a value is outside its allowed range (also a ``ValueError``).
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
                raise SettingsError(f"{name}={v!r}; must be an integer ≥ 1")
        for name in ("learning_rate", "huber_delta"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise SettingsError(f"{name}={v!r}; must be > 0")
        if not (0 < self.lr_final_factor <= 1):
            raise SettingsError(f"lr_final_factor={self.lr_final_factor!r}; must be in (0, 1]")
        if not (0 <= self.val_fraction < 1):
            raise SettingsError(f"val_fraction={self.val_fraction!r}; must be in [0, 1)")
        if self.storage_dtype not in STORAGE_DTYPES:
            raise SettingsError(f"storage_dtype={self.storage_dtype!r}; must be one of {sorted(STORAGE_DTYPES)}")


# --------------------------------------------------------------------------- training
@torch.no_grad()
def _init_members(model: Ensemble, gens: list[torch.Generator]) -> None:
    """PyTorch's default uniform(±1/sqrt(fan_in)) initialisation, member ``m`` from ``gens[m]``."""
    for m, g in enumerate(gens):
        for w, b in zip(model.weights, model.biases):
            bound = 1.0 / math.sqrt(w.shape[-1])
            w[m].copy_(torch.empty(w.shape[1:]).uniform_(-bound, bound, generator=g))
            b[m].copy_(torch.empty(b.shape[1:]).uniform_(-bound, bound, generator=g))


def _check_training_data(X: torch.Tensor, y: torch.Tensor, descriptor_settings) -> None:
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise SettingsError(f"X {tuple(X.shape)} and y {tuple(y.shape)} do not match")
    if X.shape[1] != descriptor_settings.n_features:
        raise SettingsError(f"X has {X.shape[1]} features; settings give {descriptor_settings.n_features}")


def _feature_masks(feature_masks, n_members: int, n_features: int) -> torch.Tensor | None:
    if feature_masks is None:
        return None
    masks = torch.as_tensor(feature_masks, dtype=torch.bool)
    if masks.shape != (n_members, n_features) or not bool(masks.any(dim=1).all()):
        raise SettingsError(f"feature_masks must be (n_members, n_features) = ({n_members}, {n_features}) "
                            "with at least one feature per member")
    return masks


def _new_ensemble(Xtr: torch.Tensor, settings: TrainSettings, gens: list[torch.Generator],
                  masks: torch.Tensor | None) -> Ensemble:
    """Ensemble standardised on ``Xtr``, initialised from ``gens`` (fan-in of each member's own features)."""
    model = Ensemble(Xtr.shape[1], len(gens), settings.width, settings.hidden_layers)
    x64 = Xtr.to(torch.float64)
    model.set_normalization(x64.mean(0).float().cpu(), x64.std(0, correction=0).float().cpu())
    del x64
    _init_members(model, gens)
    if masks is not None:
        with torch.no_grad():
            fan = masks.sum(dim=1).to(torch.float32)
            model.weights[0].mul_(torch.sqrt(Xtr.shape[1] / fan)[:, None, None])
    return model


def _validation_record(model: Ensemble, Xval: torch.Tensor, yval: torch.Tensor,
                       masks: torch.Tensor | None) -> dict[str, Any]:
    """Validation MAE/RMSE/R² (mean over members; per member too for an ensemble)."""
    mm = member_metrics(_predict_batches(model, Xval, masks).cpu(), yval)
    rec: dict[str, Any] = {f"val_{k}": float(np.mean([m[k] for m in mm])) for k in ("mae", "rmse", "r2")}
    if len(mm) > 1:
        rec["val_r2_members"] = [m["r2"] for m in mm]
        rec["val_mae_members"] = [m["mae"] for m in mm]
    return rec


def _ensemble_loss(model: Ensemble, Xtr: torch.Tensor, ytr: torch.Tensor, masks: torch.Tensor | None,
                   delta: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """``batch_loss(index)`` of :func:`elfcore.fitting.fit`: member ``m`` trains on row ``m`` of ``index``."""

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        xb = Xtr[idx].float()  # (n_members, batch, n_features)
        if masks is not None:
            xb = torch.where(masks[:, None, :], xb, model.feature_shift)
        return huber_loss(model(xb), ytr[idx], delta)

    return batch_loss


def _training_metadata(settings: TrainSettings, result, *, seed: int, split_seed: int, n_members: int,
                       n_train: int, n_val: int) -> dict[str, Any]:
    """``metadata`` of a trained model (protocol, seeds, voxel counts, history); logs a summary."""
    last = result.history[-1] if result.history else {}
    log.info(
        "trained %d member(s) on %d voxels (%d validation) for %d epochs in %.1f s%s",
        n_members, n_train, n_val, settings.epochs, result.seconds,
        f"; validation R² {last['val_r2']:.4f}, MAE {last['val_mae']:.4f}" if "val_r2" in last else "",
    )
    return {
        "train_settings": settings.to_dict(),
        "seed": seed,
        "split_seed": split_seed,
        "n_members": n_members,
        "n_train_voxels": n_train,
        "n_val_voxels": n_val,
        "train_seconds": round(result.seconds, 2),
        "torch_version": torch.__version__,
        "history": result.history,
    }


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
    """Fit the ELF MLP (or an ensemble) to descriptor/ELF pairs with :func:`elfcore.fitting.fit`.

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
        Member ``m`` uses seed ``seed + m`` for its initial weights and its voxel order.
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
        their weights get no gradient); cut a member down with :func:`masked_member`.
    device : str or torch.device
        Training device (``"auto"``: CUDA if available).
    progress : bool
        Show a tqdm bar (stderr).

    Returns
    -------
    MLP or Ensemble
        In eval mode, on ``device``; ``metadata["history"]`` holds the per-epoch
        training loss and validation metrics (mean over members).

    Raises
    ------
    SettingsError
        If ``X``, ``y``, the descriptor settings or the masks do not fit together,
        or the validation split leaves no training voxel.
    """
    from .device import resolve

    dev = resolve(device)
    _check_training_data(X, y, descriptor_settings)
    masks = _feature_masks(feature_masks, n_members, X.shape[1])
    split = int(seed if split_seed is None else split_seed)
    val_idx, tr_idx = split_indices(len(X), settings.val_fraction, torch.Generator().manual_seed(split))
    Xtr, ytr = X[tr_idx].to(dev), y[tr_idx].to(dev, torch.float32)
    Xval, yval = X[val_idx].to(dev), y[val_idx].to(torch.float32)
    gens = seed_generators(seed, n_members)
    model = _new_ensemble(Xtr, settings, gens, masks).to(dev)
    model.descriptor_settings = descriptor_settings
    masks = None if masks is None else masks.to(dev)

    batch_loss = _ensemble_loss(model, Xtr, ytr, masks, settings.huber_delta)
    validate = (lambda: _validation_record(model, Xval, yval, masks)) if len(val_idx) else None
    result = fitting.fit(model, batch_loss, len(tr_idx), settings, generators=gens, validate=validate,
                         loss_divisor=n_members, index_device=dev, progress=progress, desc="train")
    model.metadata = _training_metadata(settings, result, seed=int(seed), split_seed=split, n_members=n_members,
                                        n_train=len(tr_idx), n_val=len(val_idx))
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
        raise SettingsError(f"{len(cols)} columns for {descriptor_settings.n_features} features")
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
            **{k: plain(field.attrs[k]) for k in ("pressure_gpa", "family", "role", "md_step") if k in field.attrs},
        })
    if not Xs:
        raise SettingsError("no training data given")
    model = train_model(torch.cat(Xs), torch.cat(ys), descriptor_settings, settings, seed=seed,
                        n_members=n_members, device=device, progress=progress)
    model.metadata["training_cases"] = cases
    return model


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
    return summarise(pred, y)


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
        row = {"name": name, **summarise(pred, y)}
        for k in ("pressure_gpa", "family", "role"):
            if k in field.attrs:
                row[k] = plain(field.attrs[k])
        rows.append(row)
        preds.append(pred)
        refs.append(y)
    if not rows:
        raise SettingsError("no evaluation data given")
    overall = summarise(torch.cat(preds, dim=1), torch.cat(refs))
    return {"cases": rows, "overall": overall}
