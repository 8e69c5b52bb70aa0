"""The one minibatch fit loop of elfcore, shared by the MLP ensembles and the CNN.

:func:`fit` runs the training protocol of ``docs/science.md`` §4 on any
:class:`torch.nn.Module`: ``torch.optim.Adam`` (β = (0.9, 0.999), ε = 1e-8, no
weight decay) with a cosine learning-rate decay from ``learning_rate`` to
``learning_rate * lr_final_factor`` over all steps, a fresh random voxel order per
epoch, an optional validation callback after each epoch, a tqdm bar and a
per-epoch history. The model-specific parts come in as callables:
``batch_loss(index)`` maps a batch of training indices to a scalar loss (see
:func:`huber_loss`) and ``validate()`` returns the validation metrics of the
current weights.

Randomness comes only from explicit :class:`torch.Generator` objects
(:func:`seed_generators`); nothing is seeded globally, so on the CPU the same
seeds and thread count give bit-identical weights. Several generators train
several independent index streams at once (one per ensemble member): the batch
index then has one row per generator, and because Adam acts element-wise and the
ensemble loss is a sum over members, every member follows the run it would have
had alone.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import torch

from .errors import SettingsError

__all__ = [
    "Schedule",
    "FitResult",
    "seed_generators",
    "split_indices",
    "cosine_lr",
    "huber_loss",
    "fit",
]

log = logging.getLogger(__name__)


class Schedule(Protocol):
    """What :func:`fit` reads from its settings (e.g. :class:`elfcore.train.TrainSettings`)."""

    epochs: int
    batch_size: int
    learning_rate: float
    lr_final_factor: float


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes
    ----------
    history : list of dict
        One record per epoch: ``epoch``, ``train_loss`` (mean batch loss divided by
        ``loss_divisor``) and whatever ``validate`` returned.
    steps : int
        Optimiser steps taken.
    seconds : float
        Wall time of the loop.
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0


def seed_generators(seed: int, n: int = 1) -> list[torch.Generator]:
    """``n`` CPU generators seeded ``seed, seed + 1, …`` (one per ensemble member)."""
    return [torch.Generator().manual_seed(int(seed) + m) for m in range(n)]


def split_indices(n: int, val_fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random validation/training split of ``n`` samples.

    Returns
    -------
    val_idx, train_idx : torch.Tensor, int64
        ``round(val_fraction * n)`` validation indices and the rest.

    Raises
    ------
    SettingsError
        If no training sample is left.
    """
    perm = torch.randperm(n, generator=generator)
    n_val = int(round(val_fraction * n))
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    if len(tr_idx) < 1:
        raise SettingsError(f"no training voxels left of {n} after a validation split of {val_fraction}")
    return val_idx, tr_idx


def cosine_lr(step: int, total_steps: int, lr0: float, lr1: float) -> float:
    """Learning rate at ``step`` of a cosine decay from ``lr0`` (step 0) to ``lr1`` (step ``total_steps``)."""
    return lr1 + 0.5 * (lr0 - lr1) * (1 + math.cos(math.pi * step / max(total_steps, 1)))


def huber_loss(pred: torch.Tensor, target: torch.Tensor, delta: float) -> torch.Tensor:
    """Huber loss averaged over the last axis and summed over the others (ensemble members).

    For a single model (1-D inputs) this is the mean Huber loss.
    """
    per = torch.nn.functional.huber_loss(pred, target, reduction="none", delta=delta)
    return per.mean(dim=-1).sum()


def _check_schedule(schedule: Schedule) -> None:
    for name in ("epochs", "batch_size"):
        v = getattr(schedule, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise SettingsError(f"{name}={v!r}; must be an integer ≥ 1")
    if not (math.isfinite(schedule.learning_rate) and schedule.learning_rate > 0):
        raise SettingsError(f"learning_rate={schedule.learning_rate!r}; must be > 0")
    if not (0 < schedule.lr_final_factor <= 1):
        raise SettingsError(f"lr_final_factor={schedule.lr_final_factor!r}; must be in (0, 1]")


def fit(
    model: torch.nn.Module,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    n_train: int,
    schedule: Schedule,
    *,
    generators: Sequence[torch.Generator],
    validate: Callable[[], dict[str, Any]] | None = None,
    loss_divisor: float = 1.0,
    index_device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "train",
) -> FitResult:
    """Minibatch training of ``model`` with ``torch.optim.Adam`` and a cosine learning rate.

    Parameters
    ----------
    model : torch.nn.Module
        Its parameters are optimised in place; it is put in train mode for the
        steps, eval mode for ``validate`` and left in eval mode.
    batch_loss : callable
        ``batch_loss(index)`` → scalar loss tensor, where ``index`` is an int64
        tensor of shape ``(len(generators), batch)`` of training-sample indices
        (row ``g`` drawn from generator ``g``).
    n_train : int
        Number of training samples.
    schedule : Schedule
        ``epochs``, ``batch_size`` (capped at ``n_train``; the incomplete last
        batch of an epoch is dropped), ``learning_rate`` and ``lr_final_factor``.
    generators : sequence of torch.Generator
        One random index stream each; every epoch draws a fresh permutation of
        ``range(n_train)`` from each.
    validate : callable, optional
        Called after every epoch (model in eval mode); its dict joins the epoch's
        record.
    loss_divisor : float
        The recorded ``train_loss`` is divided by this (e.g. the member count).
    index_device : str or torch.device
        Where the index batches live (the device of the tensors they index).
    progress, desc : bool, str
        Show a tqdm bar (stderr) labelled ``desc``.

    Returns
    -------
    FitResult
    """
    from tqdm.auto import tqdm

    _check_schedule(schedule)
    if n_train < 1 or not generators:
        raise SettingsError(f"nothing to fit: {n_train} training samples, {len(generators)} index streams")
    bs = min(schedule.batch_size, n_train)
    steps_per_epoch = n_train // bs
    total_steps = steps_per_epoch * schedule.epochs
    lr0 = schedule.learning_rate
    lr1 = lr0 * schedule.lr_final_factor
    opt = torch.optim.Adam(model.parameters(), lr=lr0)
    result = FitResult()
    t0 = time.perf_counter()
    bar = tqdm(range(schedule.epochs), desc=desc, unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        orders = torch.stack([torch.randperm(n_train, generator=g) for g in generators]).to(index_device)
        total = 0.0
        for k in range(steps_per_epoch):
            lr = cosine_lr(result.steps, total_steps, lr0, lr1)
            total = total + _step(opt, lr, batch_loss, orders[:, k * bs : (k + 1) * bs])
            result.steps += 1
        rec: dict[str, Any] = {"epoch": epoch + 1, "train_loss": float(total) / max(steps_per_epoch, 1) / loss_divisor}
        if validate is not None:
            model.eval()
            rec.update(validate())
        _show(bar, rec)
        result.history.append(rec)
        log.debug("epoch %s", rec)
    bar.close()
    model.eval()
    result.seconds = time.perf_counter() - t0
    return result


def _step(opt: torch.optim.Optimizer, lr: float, batch_loss: Callable[[torch.Tensor], torch.Tensor],
          index: torch.Tensor) -> torch.Tensor:
    """One optimiser step at learning rate ``lr``; returns the detached float64 batch loss."""
    for group in opt.param_groups:
        group["lr"] = lr
    loss = batch_loss(index)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach().double()


def _show(bar, rec: dict[str, Any]) -> None:
    post = {"loss": f"{rec['train_loss']:.2e}"}
    if "val_r2" in rec:
        post["val_r2"] = f"{rec['val_r2']:.4f}"
    bar.set_postfix(**post)
