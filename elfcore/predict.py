"""Full-grid ELF prediction: structure (+ model) → ELF field (``docs/design.md`` pipeline).

The grid descriptor comes slab by slab from :func:`elfcore.descriptor.iter_grid_descriptor`
(fft path) and goes straight into the model, so only one slab of descriptors is in
memory at a time; the result is assembled into a field with
:func:`elfcore.grid.field_from_atoms`. CPU and CUDA run the same code.
"""
from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

import numpy as np
import torch
import xarray as xr
from numpy.typing import ArrayLike

from .descriptor import DescriptorSettings, iter_grid_descriptor
from .device import resolve
from .errors import ElfcoreError, GridError, SettingsMismatchError
from .grid import field_from_atoms

if TYPE_CHECKING:
    from ase import Atoms

__all__ = [
    "Prediction",
    "predict_field",
    "predict_grid",
    "grid_shape_for_spacing",
    "estimate_memory_gb",
    "make_evaluator",
    "model_settings",
    "PRECISIONS",
]

log = logging.getLogger(__name__)

#: largest grid (voxels) :func:`predict_field` accepts by default: the float32 result and its
#: working set must fit ``memory_budget_gb``.
DEFAULT_MEMORY_BUDGET_GB = 8.0


def _smooth_size(n: int) -> int:
    """Smallest integer ≥ n whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    n = max(1, int(n))
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def grid_shape_for_spacing(
    cell: ArrayLike, spacing: float = 0.08, *, min_points: int = 1, max_points: int | None = None
) -> tuple[int, int, int]:
    """Grid shape with spacing ≤ ``spacing`` Å along each lattice vector.

    Each count is at least ``min_points``, rounded up to a 2·3·5-smooth number (fast
    FFTs), and then capped at ``max_points`` when given (the spacing is then coarser).

    Examples
    --------
    >>> grid_shape_for_spacing(np.eye(3) * 11.05, 0.0576)
    (192, 192, 192)
    >>> grid_shape_for_spacing(np.diag([0.5, 5.5, 20.0]), 0.1, min_points=8, max_points=96)
    (8, 60, 96)
    """
    from .io.validate import check_spacing

    spacing = check_spacing(spacing)  # finite, > 0 and not coarser than 1 Å (no degenerate 1×1×1 grids)
    if min_points < 1 or (max_points is not None and max_points < min_points):
        raise GridError(f"min_points={min_points}, max_points={max_points}; need 1 ≤ min_points ≤ max_points")
    lengths = np.linalg.norm(np.asarray(cell, dtype=np.float64), axis=1)
    counts = (_smooth_size(max(min_points, math.ceil(L / spacing - 1e-9))) for L in lengths)
    return tuple(n if max_points is None else min(int(max_points), n) for n in counts)


def estimate_memory_gb(shape: Sequence[int], settings: DescriptorSettings, n_members: int = 1,
                       slab_voxels: int = 200_000) -> float:
    """Rough peak memory in GB of :func:`predict_field` on ``shape`` (output + one slab)."""
    n_vox = int(np.prod(shape))
    out = n_vox * 4 * (2 if n_members > 1 else 1)
    nlm = (settings.l_max + 1) ** 2
    slab = slab_voxels * 4 * (3 * settings.n_radial * nlm + settings.n_features + 2 * 128 * max(1, n_members))
    return (out + slab) / 1e9


class PhaseClock:
    """Wall clock (CUDA synchronised) plus process CPU time of one phase.

    ``stop()`` returns the wall seconds since ``start()`` and sets ``cpu`` to the CPU
    seconds of all threads of the process over the same span (on a shared CPU the wall
    time depends on other jobs; the CPU time much less).
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.t0 = self.c0 = 0.0
        self.cpu = 0.0

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def start(self) -> None:
        """Begin timing (after the device has finished its queued work)."""
        self._sync()
        self.t0 = time.perf_counter()
        self.c0 = time.process_time()

    def stop(self) -> float:
        """Wall seconds since :meth:`start`; sets ``cpu`` to the process CPU seconds."""
        self._sync()
        self.cpu = time.process_time() - self.c0
        return time.perf_counter() - self.t0


class _FoldedMLP:
    """Inference-only form of an elfcore MLP/Ensemble on feature-major descriptors.

    float32: the input standardisation is folded into the first layer
    (W' = W / scale, b' = b − W' shift). bfloat16/float16: the input is standardised
    in float32 first (raw SOAP features have means ≫ spreads, so rounding them
    before standardising would lose the signal), then every layer runs in the low
    precision with float32 output. Each layer is one ``addmm`` on a
    (features, voxels) block of ``block`` voxels, so the descriptor slab
    (n_features, n_voxels) is used without a transpose and stays in cache.
    """

    def __init__(self, layers, shift, scale, dtype: torch.dtype, block: int):
        self.dtype = dtype
        self.block = int(block)
        if dtype == torch.float32:
            layers = _fold_layers(layers, shift, scale)
            self.shift = self.scale = None
        else:
            self.shift = shift.float()[:, None]
            self.scale = scale.float()[:, None]
        self.layers = [(w.to(dtype).contiguous(), b.to(dtype)[..., None].contiguous()) for w, b in layers]

    def _block(self, x: torch.Tensor) -> torch.Tensor:
        if self.shift is not None:
            x = ((x.float() - self.shift) / self.scale).to(self.dtype)
        h = x.to(self.dtype)
        last = len(self.layers) - 1
        for k, (w, b) in enumerate(self.layers):
            h = torch.baddbmm(b, w, h.expand(w.shape[0], *h.shape[-2:])) if w.ndim == 3 else torch.addmm(b, w, h)
            if k < last:
                torch.nn.functional.silu(h, inplace=True)
        return torch.sigmoid(h.float()).reshape(-1, x.shape[-1])

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        """(n, n_features) → (n_members, n) in float32 (fastest when ``feats.T`` is contiguous)."""
        x = feats.T
        n = x.shape[-1]
        if n <= self.block:
            return self._block(x)
        return torch.cat([self._block(x[:, i : i + self.block]) for i in range(0, n, self.block)], dim=-1)


def _model_layers(model):
    """(weight, bias) per layer of an elfcore MLP or Ensemble, or None for other modules."""
    if getattr(model, "feature_shift", None) is None or getattr(model, "feature_scale", None) is None:
        return None
    if hasattr(model, "hidden") and hasattr(model, "output"):
        return [(lin.weight.detach(), lin.bias.detach()) for lin in list(model.hidden) + [model.output]]
    if hasattr(model, "weights") and hasattr(model, "biases"):
        return [(w.detach(), b.detach()) for w, b in zip(model.weights, model.biases)]
    return None


def _fold_layers(layers, shift, scale):
    """Fold ``(x − shift) / scale`` into the first layer."""
    w0, b0 = layers[0]
    w0f = w0 / scale.to(w0.dtype)
    b0f = b0 - (w0f @ shift.to(w0.dtype)[:, None])[..., 0]
    return [(w0f, b0f)] + list(layers[1:])


def _evaluator(model, dtype: torch.dtype = torch.float32, *, block: int | None = None, seed: int = 0):
    """Fast evaluator of ``model`` (see :class:`_FoldedMLP`), or None if it does not reproduce it.

    The float32 form is compared with ``model(x)`` on random input before use.
    Returns a callable mapping (n, n_features) descriptors to (n_members, n) ELF.
    """
    layers = _model_layers(model)
    if layers is None:
        return None
    shift = model.feature_shift.detach()
    scale = model.feature_scale.detach()
    dev = shift.device
    if block is None:
        block = 8192 if dev.type == "cpu" else 1 << 22
    fast = _FoldedMLP(layers, shift, scale, torch.float32, block)
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(64, shift.numel(), generator=gen, dtype=torch.float64) * scale.cpu().double()
         + shift.cpu().double()).to(dev, torch.float32)
    with torch.inference_mode():
        ref = model(x).reshape(-1, 64).float()
        got = fast(x)
    if got.shape != ref.shape or not torch.allclose(got, ref, atol=1e-4, rtol=1e-4):
        log.debug("folded MLP does not reproduce the model; using model.forward")
        return None
    return fast if dtype == torch.float32 else _FoldedMLP(layers, shift, scale, dtype, block)


PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def make_evaluator(
    model: torch.nn.Module, precision: str = "float32"
) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """Inference callable for full-grid prediction and its number of outputs.

    Parameters
    ----------
    model : torch.nn.Module
        elfcore MLP/Ensemble (fast folded form, checked against ``model``) or any
        module mapping (n, n_features) to (n,) or (n_members, n).
    precision : {"float32", "bfloat16", "float16"}
        Matrix-product precision of the hidden layers (inputs are standardised in
        float32 first). bfloat16 is fast on CPUs with AVX512-BF16 and on GPUs;
        float16 only on GPUs.

    Returns
    -------
    evaluate : callable
        (n, n_features) float32 → (n_outputs, n) float32.
    n_outputs : int
    """
    if precision not in PRECISIONS:
        raise ElfcoreError(f"precision={precision!r}; must be one of {sorted(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    n_outputs = int(getattr(model, "n_members", 1))
    fast = _evaluator(model, dtype)
    if fast is not None:
        return fast, n_outputs
    dev_type = next(iter(model.parameters())).device.type if any(True for _ in model.parameters()) else "cpu"

    def evaluate(feats: torch.Tensor) -> torch.Tensor:
        if dtype == torch.float32:
            return model(feats)
        with torch.autocast(device_type=dev_type, dtype=dtype):
            return model(feats)

    return evaluate, n_outputs


def model_settings(model: torch.nn.Module) -> DescriptorSettings:
    """The descriptor settings a model carries; :class:`SettingsMismatchError` if none."""
    settings = getattr(model, "descriptor_settings", None)
    if settings is None:
        raise SettingsMismatchError("the model carries no descriptor_settings; set model.descriptor_settings")
    return settings


def predict_grid(
    atoms: Atoms,
    shape: Sequence[int],
    settings: DescriptorSettings,
    evaluate: Callable[[torch.Tensor], torch.Tensor],
    *,
    n_outputs: int = 1,
    device: str | torch.device = "auto",
    slab: int | None = None,
    progress: bool = False,
    timings: dict | None = None,
) -> torch.Tensor:
    """Evaluate ``evaluate(descriptor_chunk)`` over a whole grid, slab by slab.

    Parameters
    ----------
    atoms : ase.Atoms
    shape : (Na, Nb, Nc)
    settings : DescriptorSettings
    evaluate : callable
        Maps descriptors (n, n_features) float32 on ``device`` to (n,) or
        (n_outputs, n) values.
    n_outputs : int
        Leading size of ``evaluate``'s output (1 for an MLP, n_members for an ensemble).
    device : str or torch.device
    slab : int, optional
        a-planes per chunk (default ~2·10⁵ voxels).
    progress : bool
        Show a tqdm bar on stderr.
    timings : dict, optional
        If given, wall seconds ``"descriptor_s"``, ``"inference_s"`` and process CPU
        seconds ``"descriptor_cpu_s"``, ``"inference_cpu_s"`` are added to it (device
        synchronised around each phase, so this costs a little overlap on CUDA).

    Returns
    -------
    torch.Tensor, shape (n_outputs, Na, Nb, Nc), float32 on the CPU.
    """
    dev = resolve(device)
    shape = tuple(int(n) for n in shape)
    n_vox = int(np.prod(shape))
    out = torch.empty((n_outputs, n_vox), dtype=torch.float32)
    chunks = iter_grid_descriptor(atoms, shape, settings, device=dev, dtype=torch.float32, slab=slab)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_vox, unit="voxel", unit_scale=True, desc="predict", leave=False)
    t_desc = t_inf = c_desc = c_inf = 0.0
    clock = PhaseClock(dev) if timings is not None else None
    try:
        it = iter(chunks)
        while True:
            if clock:
                clock.start()
            item = next(it, None)
            if item is None:
                break
            start, stop, feats = item
            if clock:
                t_desc += clock.stop()
                c_desc += clock.cpu
                clock.start()
            values = evaluate(feats)
            out[:, start:stop] = values.reshape(n_outputs, stop - start).float().to("cpu", non_blocking=False)
            if clock:
                t_inf += clock.stop()
                c_inf += clock.cpu
            if bar is not None:
                bar.update(stop - start)
    finally:
        if bar is not None:
            bar.close()
    if timings is not None:
        timings["descriptor_s"] = timings.get("descriptor_s", 0.0) + t_desc
        timings["inference_s"] = timings.get("inference_s", 0.0) + t_inf
        timings["descriptor_cpu_s"] = timings.get("descriptor_cpu_s", 0.0) + c_desc
        timings["inference_cpu_s"] = timings.get("inference_cpu_s", 0.0) + c_inf
    return out.reshape((n_outputs,) + shape)


class Prediction(NamedTuple):
    """Result of :func:`predict_field`: ``elf, std = predict_field(...)``.

    ``elf`` is the predicted ELF field (name ``elf``, dims a, b, c, carrying the
    structure); for an ensemble model the mean over its members. ``std`` is the members'
    standard deviation (a field named ``elf_std``) for an ensemble, ``None`` for a single
    model.
    """

    elf: xr.DataArray
    std: xr.DataArray | None


def predict_field(
    atoms: Atoms,
    model: torch.nn.Module,
    *,
    shape: Sequence[int] | None = None,
    spacing: float = 0.08,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    precision: str = "float32",
    progress: bool = True,
    memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB,
) -> Prediction:
    """Predict the ELF of a periodic hydrogen structure on a full grid.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic hydrogen structure (any triclinic cell).
    model : torch.nn.Module
        An :class:`elfcore.models.MLP` or :class:`elfcore.models.Ensemble` (→ member mean
        and standard deviation); must carry ``descriptor_settings``.
    shape : (Na, Nb, Nc), optional
        Grid; default from ``spacing``.
    spacing : float
        Largest grid spacing in Å when ``shape`` is not given (counts rounded up to
        2·3·5-smooth numbers).
    device : str or torch.device
        ``"auto"`` = CUDA when available. The model is moved there.
    batch_size : int, optional
        Voxels per chunk (rounded to whole a-planes); default ~2·10⁵.
    precision : {"float32", "bfloat16", "float16"}
        Precision of the network's matrix products (see :func:`make_evaluator`).
    progress : bool
        tqdm progress bar on stderr.
    memory_budget_gb : float
        Refuse grids whose estimated peak memory exceeds this.

    Returns
    -------
    Prediction
        ``elf``: the ELF field (dims a, b, c) carrying the structure, for an ensemble the
        member mean; ``std``: the members' standard deviation (field ``elf_std``) for an
        ensemble, ``None`` for a single model.

    Raises
    ------
    StructureError
        Empty structure, non-hydrogen atoms, NaN positions, overlapping atoms or a
        cell shorter than the descriptor's σ (:func:`elfcore.io.validate.check_prediction_structure`).
    GridError
        Grid larger than the memory budget; ``spacing`` not finite or coarser than 1 Å.
    SettingsMismatchError
        The model has no descriptor settings.
    """
    settings = model_settings(model)
    shape = _checked_shape(atoms, settings, shape, spacing)
    n_members = int(getattr(model, "n_members", 1))
    need = estimate_memory_gb(shape, settings, n_members)
    if need > memory_budget_gb:
        raise GridError(
            f"grid {shape} needs ≈{need:.1f} GB, more than the memory budget of {memory_budget_gb:.1f} GB; "
            "use a coarser spacing or raise memory_budget_gb"
        )
    slab = None if batch_size is None else max(1, int(batch_size) // (shape[1] * shape[2]))
    dev = resolve(device)
    model = model.to(dev).eval()
    evaluate, n_members = make_evaluator(model, precision)
    log.info("predicting ELF on a %s grid (%d voxels) on %s", shape, int(np.prod(shape)), dev)
    with torch.inference_mode():
        values = predict_grid(
            atoms, shape, settings, evaluate, n_outputs=n_members, device=dev, slab=slab, progress=progress,
        )
    return _prediction(values, atoms, settings)


def _checked_shape(atoms: Atoms, settings: DescriptorSettings, shape, spacing: float) -> tuple[int, int, int]:
    """Check the structure for prediction and return the grid (``shape`` or from ``spacing``)."""
    from .io.validate import check_prediction_structure

    # no atoms, NaN, unknown Z, an element the model never saw (by name), no periodic cell, cells shorter
    # than σ, overlapping atoms: all refused before any work starts
    check_prediction_structure(atoms, settings.sigma, require_atoms=True, species=settings.species)
    if shape is None:
        shape = grid_shape_for_spacing(np.asarray(atoms.cell[:], dtype=np.float64), spacing)
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise GridError(f"grid shape {shape}; expected three positive integers")
    return shape


def _prediction(values: torch.Tensor, atoms: Atoms, settings: DescriptorSettings) -> Prediction:
    """:class:`Prediction` from the (n_outputs, Na, Nb, Nc) grid values: member mean and std."""
    attrs = {"model_descriptor": str(settings.to_dict()), "method": "elfcore.predict_field"}
    n_members = values.shape[0]
    if n_members == 1:
        return Prediction(field_from_atoms(values[0].numpy(), atoms, name="elf", attrs=attrs), None)
    attrs["n_members"] = n_members
    return Prediction(
        field_from_atoms(values.mean(0).numpy(), atoms, name="elf", attrs=attrs),
        field_from_atoms(values.std(0, correction=0).numpy(), atoms, name="elf_std", attrs=attrs),
    )
