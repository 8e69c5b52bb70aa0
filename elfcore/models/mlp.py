"""The ELF multilayer perceptron of the paper and its stacked ensemble.

``docs/science.md`` §4: a fully connected network of width 128 with 2 hidden layers
(SiLU activations here; the paper does not state the activation) and a sigmoid
output, mapping the grid-point SOAP descriptor of one voxel to its ELF value in
[0, 1].

Both classes take numbers only in their constructors. The descriptor settings a
model was trained with are held in ``model.descriptor_settings`` (set by the
training code or by :func:`elfcore.models.load_model`); :meth:`MLP.predict`
refuses descriptors computed with other settings
(:class:`~elfcore.errors.SettingsMismatchError`).

Inputs are standardised inside the model (``(x - feature_shift) / feature_scale``,
two buffers stored with the weights), so a saved model is self-contained.

The :class:`Ensemble` keeps the weights of ``n_members`` MLPs stacked along a
leading axis, evaluates all members with batched matrix products and trains them
in one pass (each member with its own initialisation and voxel order); its
prediction is the member mean and standard deviation (the uncertainty field).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import SettingsError, SettingsMismatchError
from ..settings import Settings

__all__ = ["ModelSettings", "MLP", "Ensemble"]


@dataclass(frozen=True)
class ModelSettings(Settings):
    """Architecture of the ELF MLP.

    Parameters
    ----------
    width : int
        Neurons per hidden layer (paper: 128).
    hidden_layers : int
        Number of hidden layers (paper: 2).
    """

    width: int = 128
    hidden_layers: int = 2

    def __post_init__(self):
        if not isinstance(self.width, int) or self.width < 1:
            raise SettingsError(f"width={self.width!r}; must be an integer ≥ 1")
        if not isinstance(self.hidden_layers, int) or self.hidden_layers < 1:
            raise SettingsError(f"hidden_layers={self.hidden_layers!r}; must be an integer ≥ 1")


def _check_features(settings_model, settings_given, n_model: int, n_given: int) -> None:
    if settings_model is not None and settings_given is not None and settings_model != settings_given:
        raise SettingsMismatchError(
            f"descriptor settings {settings_given.to_dict()} differ from the model's "
            f"{settings_model.to_dict()}; compute the descriptor with the model's settings"
        )
    if n_given != n_model:
        raise SettingsMismatchError(
            f"descriptor has {n_given} features; the model expects {n_model}"
            + (f" (settings {settings_model.to_dict()})" if settings_model is not None else "")
        )


class _Base(nn.Module):
    """Shared part of :class:`MLP` and :class:`Ensemble` (normalisation, settings check)."""

    n_features: int
    width: int
    hidden_layers: int

    def _init_common(self, n_features: int, width: int, hidden_layers: int) -> None:
        ModelSettings(width=width, hidden_layers=hidden_layers)  # validates
        if not isinstance(n_features, int) or n_features < 1:
            raise SettingsError(f"n_features={n_features!r}; must be an integer ≥ 1")
        self.n_features = n_features
        self.width = width
        self.hidden_layers = hidden_layers
        self.register_buffer("feature_shift", torch.zeros(n_features))
        self.register_buffer("feature_scale", torch.ones(n_features))
        #: :class:`elfcore.descriptor.DescriptorSettings` the model was trained with.
        self.descriptor_settings = None
        #: free training metadata (JSON-serialisable), written into saved files.
        self.metadata: dict[str, Any] = {}

    @property
    def model_settings(self) -> ModelSettings:
        """The architecture as a :class:`ModelSettings`."""
        return ModelSettings(width=self.width, hidden_layers=self.hidden_layers)

    @torch.no_grad()
    def set_normalization(self, shift: torch.Tensor, scale: torch.Tensor) -> None:
        """Set the input standardisation ``(x - shift) / scale``.

        Parameters
        ----------
        shift, scale : torch.Tensor, shape (n_features,)
            Per-feature mean and standard deviation of the training descriptors;
            scales below 1e-12 are replaced by 1.
        """
        shift = torch.as_tensor(shift, dtype=self.feature_shift.dtype).reshape(-1)
        scale = torch.as_tensor(scale, dtype=self.feature_scale.dtype).reshape(-1)
        if shift.numel() != self.n_features or scale.numel() != self.n_features:
            raise SettingsError(f"normalisation has {shift.numel()} entries; model has {self.n_features} features")
        scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
        self.feature_shift.copy_(shift)
        self.feature_scale.copy_(scale)

    def check_descriptor(self, descriptors: torch.Tensor, settings=None) -> None:
        """Raise :class:`SettingsMismatchError` if ``descriptors`` do not fit this model.

        Parameters
        ----------
        descriptors : torch.Tensor, shape (n_points, n_features)
        settings : DescriptorSettings, optional
            The settings the descriptors were computed with; compared with
            ``self.descriptor_settings`` when both are known.
        """
        if descriptors.ndim != 2:
            raise SettingsMismatchError(f"descriptors have shape {tuple(descriptors.shape)}; expected (n_points, n_features)")
        _check_features(self.descriptor_settings, settings, self.n_features, descriptors.shape[1])

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        p = self.feature_shift
        return (x.to(p.dtype) - p) / self.feature_scale


class MLP(_Base):
    """ELF network: descriptor (n_features) → hidden layers → sigmoid.

    Parameters
    ----------
    n_features : int
        Length of the descriptor vector (``DescriptorSettings.n_features``).
    width : int
        Neurons per hidden layer (paper: 128).
    hidden_layers : int
        Number of hidden layers (paper: 2).

    Examples
    --------
    >>> m = MLP(30, width=8, hidden_layers=2)
    >>> m(torch.zeros(5, 30)).shape
    torch.Size([5])
    """

    def __init__(self, n_features: int, width: int = 128, hidden_layers: int = 2):
        super().__init__()
        self._init_common(n_features, width, hidden_layers)
        sizes = [n_features] + [width] * hidden_layers
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.output = nn.Linear(width, 1)

    @property
    def n_members(self) -> int:
        """Always 1 (for symmetry with :class:`Ensemble`)."""
        return 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ELF for descriptors ``x`` (n_points, n_features) → (n_points,) in [0, 1]."""
        h = self._normalise(x)
        for layer in self.hidden:
            h = nn.functional.silu(layer(h))
        return torch.sigmoid(self.output(h)).squeeze(-1)

    @torch.no_grad()
    def predict(self, descriptors: torch.Tensor, settings=None, *, batch_size: int = 65536) -> torch.Tensor:
        """Checked, batched inference.

        Parameters
        ----------
        descriptors : torch.Tensor, shape (n_points, n_features)
            Any float dtype; moved to the model's device.
        settings : DescriptorSettings, optional
            Settings of ``descriptors``; must equal ``self.descriptor_settings``.

        Returns
        -------
        torch.Tensor, shape (n_points,)
            Predicted ELF on the model's device (float32).

        Raises
        ------
        SettingsMismatchError
            If the settings or the feature count differ from the model's.
        """
        self.check_descriptor(descriptors, settings)
        dev = self.feature_shift.device
        out = [self(descriptors[i : i + batch_size].to(dev)) for i in range(0, len(descriptors), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, device=dev)


class Ensemble(_Base):
    """``n_members`` MLPs with stacked weights, evaluated and trained together.

    Parameters
    ----------
    n_features : int
        Descriptor length.
    n_members : int
        Number of networks.
    width, hidden_layers : int
        Architecture of every member (see :class:`MLP`).

    Notes
    -----
    Weights are stored as ``weight_k`` (n_members, out, in) and ``bias_k``
    (n_members, out) for layer ``k``; the last layer has out = 1. All members share
    one input standardisation.

    Examples
    --------
    >>> e = Ensemble(30, 4, width=8)
    >>> e(torch.zeros(5, 30)).shape
    torch.Size([4, 5])
    """

    def __init__(self, n_features: int, n_members: int, width: int = 128, hidden_layers: int = 2):
        super().__init__()
        self._init_common(n_features, width, hidden_layers)
        if not isinstance(n_members, int) or n_members < 1:
            raise SettingsError(f"n_members={n_members!r}; must be an integer ≥ 1")
        self._n_members = n_members
        sizes = [n_features] + [width] * hidden_layers + [1]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(n_members, b, a)) for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(n_members, b)) for b in sizes[1:])
        self.reset_parameters()

    @property
    def n_members(self) -> int:
        """Number of member networks."""
        return self._n_members

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """PyTorch's default ``nn.Linear`` initialisation, drawn from ``generator``."""
        for w, b in zip(self.weights, self.biases):
            bound = 1.0 / math.sqrt(w.shape[-1])
            w.uniform_(-bound, bound, generator=generator)
            b.uniform_(-bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Member predictions.

        Parameters
        ----------
        x : torch.Tensor, shape (n_points, n_features) or (n_members, n_points, n_features)
            The same points for every member, or one batch per member.

        Returns
        -------
        torch.Tensor, shape (n_members, n_points)
        """
        h = self._normalise(x)
        if h.ndim == 2:
            h = h.unsqueeze(0).expand(self.n_members, -1, -1)
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if k < last:
                h = nn.functional.silu(h)
        return torch.sigmoid(h).squeeze(-1)

    @torch.no_grad()
    def predict_members(self, descriptors: torch.Tensor, settings=None, *, batch_size: int = 65536) -> torch.Tensor:
        """Checked, batched member predictions (n_members, n_points); see :meth:`MLP.predict`."""
        self.check_descriptor(descriptors, settings)
        dev = self.feature_shift.device
        out = [self(descriptors[i : i + batch_size].to(dev)) for i in range(0, len(descriptors), batch_size)]
        return torch.cat(out, dim=1) if out else torch.zeros(self.n_members, 0, device=dev)

    @torch.no_grad()
    def predict(self, descriptors: torch.Tensor, settings=None, *, batch_size: int = 65536):
        """Ensemble mean and standard deviation.

        Returns
        -------
        mean, std : torch.Tensor, shape (n_points,)
            Member mean and (population, ``correction=0``) standard deviation of the ELF.
        """
        members = self.predict_members(descriptors, settings, batch_size=batch_size)
        return members.mean(0), members.std(0, correction=0)

    @torch.no_grad()
    def member(self, i: int) -> MLP:
        """Member ``i`` as a stand-alone :class:`MLP` (same settings and normalisation)."""
        if not 0 <= i < self.n_members:
            raise IndexError(f"member {i} out of range (ensemble has {self.n_members})")
        m = MLP(self.n_features, self.width, self.hidden_layers).to(self.feature_shift.device)
        layers = list(m.hidden) + [m.output]
        for lin, w, b in zip(layers, self.weights, self.biases):
            lin.weight.copy_(w[i])
            lin.bias.copy_(b[i])
        m.set_normalization(self.feature_shift, self.feature_scale)
        m.descriptor_settings = self.descriptor_settings
        m.metadata = dict(self.metadata, member=i)
        return m

    @classmethod
    @torch.no_grad()
    def from_members(cls, members: list[MLP]) -> "Ensemble":
        """Stack MLPs of identical architecture and normalisation into an ensemble."""
        if not members:
            raise SettingsError("need at least one member")
        first = members[0]
        for m in members[1:]:
            if (m.n_features, m.width, m.hidden_layers) != (first.n_features, first.width, first.hidden_layers):
                raise SettingsError("members have different architectures")
            if m.descriptor_settings != first.descriptor_settings:
                raise SettingsMismatchError("members were trained with different descriptor settings")
            if not (torch.equal(m.feature_shift, first.feature_shift) and torch.equal(m.feature_scale, first.feature_scale)):
                raise SettingsError("members have different input normalisations")
        e = cls(first.n_features, len(members), first.width, first.hidden_layers)
        for k in range(len(e.weights)):
            lins = [list(m.hidden) + [m.output] for m in members]
            e.weights[k].copy_(torch.stack([ls[k].weight for ls in lins]))
            e.biases[k].copy_(torch.stack([ls[k].bias for ls in lins]))
        e.set_normalization(first.feature_shift, first.feature_scale)
        e.descriptor_settings = first.descriptor_settings
        e.metadata = dict(first.metadata)
        return e
