"""Sizes of the ``elfcore reproduce`` runs (full and ``--quick`` presets)."""
from __future__ import annotations

from dataclasses import dataclass

from ..descriptor import DescriptorSettings
from ..errors import SettingsError
from ..settings import Settings
from ..models.cnn import PatchSettings
from ..train import TrainSettings

__all__ = ["ReproduceSettings"]


def _positive_ints(name: str, values) -> tuple:
    vals = tuple(values)
    if not vals or any(int(v) != v or v < 1 for v in vals):
        raise SettingsError(f"{name}={values!r}; must be a non-empty sequence of integers ≥ 1")
    return tuple(int(v) for v in vals)


@dataclass(frozen=True)
class ReproduceSettings(Settings):
    """Everything that sets the size of a reproduction run.

    Parameters
    ----------
    descriptor : DescriptorSettings
        Baseline descriptor (paper: n_radial = 10, l_max = 2, r_cut = 3 Å).
    train : TrainSettings
        Protocol of the baseline ensemble (voxels per training snapshot, epochs, Huber δ...).
    n_members : int
        Ensemble size for Tables S1/S2 (paper: 50; ≥ 10 here in the full run).
    eval_stride : int
        Metrics use every voxel of the sub-lattice taking every ``eval_stride``-th grid
        point along each axis (1 = every voxel). Cases shown in figures and the random
        crystals (networking value) are always predicted on their full grid.
    sweep_train : TrainSettings
        Protocol of the one-model-per-point convergence sweeps (Fig. S2).
    sweep_stride : int
        Sub-lattice stride for the voxels of the sweeps (training samples and evaluation).
    sweep_width, sweep_hidden_layers, sweep_huber_delta, sweep_r_cut, sweep_n_radial, sweep_l_max : tuple
        Values of each parameter, varied one at a time around the baseline.
    sweep_eval_per_pressure : int
        Independent snapshots per pressure used to score the sweeps.
    cnn_patch : PatchSettings
        Patch of the baseline CNN (paper: P = 12, best r_cut = 1 Å).
    cnn_channels : tuple of three int
        CNN channels.
    cnn_train : TrainSettings
        CNN protocol (``n_voxels`` per training snapshot, epochs...).
    cnn_r_cuts : tuple of float
        The r_cut sweep of Fig. S1 (paper: 0.25–2.5 Å).
    cnn_eval_voxels : int
        Random voxels per shown snapshot on which the CNN is scored.
    phi_members : int
        Ensemble members whose fields get a networking value (the first ones; φ costs
        seconds per field), for the mean ± stdev of the φ rows.
    k_shells : int
        Reciprocal shells of the oracle k-correction (Fig. S3).
    pool_members : int
        Ensemble size of the larger-training-set variant (training snapshot plus every
        other independent snapshot of each pressure; baseline protocol otherwise) and of
        the large-cell variant (the training snapshots plus the large training cells).
    large_shells : tuple of int
        Shell counts of the oracle k-correction scored on every large test cell.
    large_sparse_fractions : tuple of float
        Shares of the voxels from which the sparse k-correction is fitted on the large cells.
    seed : int
        Base seed: training snapshot ``i`` is sampled with ``seed + 1000 i`` (as
        :func:`elfcore.train.train_on_fields`), evaluation voxels with ``seed + 1``.
    """

    descriptor: DescriptorSettings = DescriptorSettings()
    train: TrainSettings = TrainSettings(n_voxels=25_000, epochs=32, batch_size=1024, learning_rate=2e-3)
    n_members: int = 10
    eval_stride: int = 2
    sweep_train: TrainSettings = TrainSettings(n_voxels=10_000, epochs=15, batch_size=512, learning_rate=2e-3)
    sweep_stride: int = 2
    sweep_width: tuple = (32, 64, 128, 256)
    sweep_hidden_layers: tuple = (1, 2, 3)
    sweep_huber_delta: tuple = (0.01, 0.03, 0.1, 0.3)
    sweep_r_cut: tuple = (2.0, 2.5, 3.0, 3.5, 4.0)
    sweep_n_radial: tuple = (4, 6, 8, 10, 12)
    sweep_l_max: tuple = (0, 1, 2, 3, 4)
    sweep_eval_per_pressure: int = 1
    cnn_patch: PatchSettings = PatchSettings(r_cut=1.0, patch_size=12, sigma=0.25)
    cnn_channels: tuple = (4, 8, 16)
    cnn_train: TrainSettings = TrainSettings(n_voxels=2_500, epochs=6, batch_size=32, learning_rate=3e-3)
    cnn_r_cuts: tuple = (0.25, 0.5, 1.0, 1.5, 2.0, 2.5)
    cnn_eval_voxels: int = 3_000
    phi_members: int = 5
    k_shells: int = 3
    pool_members: int = 5
    large_shells: tuple = (1, 2, 3, 8)
    large_sparse_fractions: tuple = (0.01, 0.001)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_members", "eval_stride", "sweep_stride", "sweep_eval_per_pressure", "cnn_eval_voxels",
                     "phi_members", "pool_members"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SettingsError(f"{name}={v!r}; must be an integer ≥ 1")
        if not isinstance(self.k_shells, int) or self.k_shells < 0:
            raise SettingsError(f"k_shells={self.k_shells!r}; must be an integer ≥ 0")
        for name in ("sweep_width", "sweep_hidden_layers", "sweep_n_radial"):
            object.__setattr__(self, name, _positive_ints(name, getattr(self, name)))
        object.__setattr__(self, "sweep_l_max", tuple(int(v) for v in self.sweep_l_max))
        if any(v < 0 for v in self.sweep_l_max):
            raise SettingsError(f"sweep_l_max={self.sweep_l_max!r}; must be ≥ 0")
        for name in ("sweep_huber_delta", "sweep_r_cut", "cnn_r_cuts"):
            vals = tuple(float(v) for v in getattr(self, name))
            if not vals or any(not v > 0 for v in vals):
                raise SettingsError(f"{name}={getattr(self, name)!r}; must be a non-empty sequence of numbers > 0")
            object.__setattr__(self, name, vals)
        object.__setattr__(self, "cnn_channels", _positive_ints("cnn_channels", self.cnn_channels))
        object.__setattr__(self, "large_shells", _positive_ints("large_shells", self.large_shells))
        fr = tuple(float(v) for v in self.large_sparse_fractions)
        if any(not 0 < v <= 1 for v in fr):
            raise SettingsError(f"large_sparse_fractions={self.large_sparse_fractions!r}; must be shares in (0, 1]")
        object.__setattr__(self, "large_sparse_fractions", fr)
        if len(self.cnn_channels) != 3:
            raise SettingsError(f"cnn_channels={self.cnn_channels!r}; must be three integers")

    @classmethod
    def full(cls, seed: int = 0) -> "ReproduceSettings":
        """The committed run: about 6 min of CPU time on one core (1 thread) for 18 fluid
        snapshots of 64 atoms on 72³ grids plus 20 small crystals; ≲ 30 min on a busy 2-core machine."""
        return cls(seed=seed)

    @classmethod
    def quick(cls, seed: int = 0) -> "ReproduceSettings":
        """A few-minute CI run: small voxel counts, few epochs, 3 members, short sweeps."""
        return cls(
            train=TrainSettings(n_voxels=2_000, epochs=4, batch_size=256),
            n_members=3,
            eval_stride=3,
            sweep_train=TrainSettings(n_voxels=1_000, epochs=3, batch_size=256),
            sweep_stride=3,
            sweep_width=(32, 128),
            sweep_hidden_layers=(1, 2),
            sweep_huber_delta=(0.03, 0.3),
            sweep_r_cut=(2.0, 3.0),
            sweep_n_radial=(4, 10),
            sweep_l_max=(0, 2),
            cnn_channels=(4, 8, 8),
            cnn_train=TrainSettings(n_voxels=300, epochs=2, batch_size=32, learning_rate=3e-3),
            cnn_r_cuts=(0.5, 1.0),
            cnn_eval_voxels=300,
            phi_members=2,
            pool_members=2,
            large_shells=(1, 3),
            large_sparse_fractions=(0.01,),
            seed=seed,
        )
