"""Saving and loading ELF models without pickles.

A model file is a `safetensors <https://github.com/huggingface/safetensors>`_
file. Its tensors are the model's ``state_dict`` (weights, biases and the input
standardisation); its string metadata holds one key, ``"elfcore"``, whose value is
a JSON header::

    {
      "schema_version": 1,
      "elfcore_version": "0.1.0",
      "model_class": "MLP" | "Ensemble",
      "model": {"n_features": 165, "width": 128, "hidden_layers": 2, "n_members": 1},
      "descriptor": {"r_cut": 3.0, "n_radial": 10, "l_max": 2, "sigma": 0.5},
      "weights_dtype": "float32" | "float16",
      "training": {...free metadata: data, seeds, epochs, metrics...}
    }

Loading reads the header, checks schema version, class and descriptor settings,
builds the model from the numbers in the header and copies the tensors in; no
Python object is ever unpickled. Weights stored as float16 are widened to float32
on load.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import FormatError, SettingsError, SettingsMismatchError
from ..jsonsafe import to_jsonable
from .mlp import MLP, Ensemble

__all__ = ["SCHEMA_VERSION", "MODEL_CLASSES", "MODEL_LIMITS", "save_model", "load_model", "read_header",
           "check_tensor_shapes", "check_finite_weights"]

SCHEMA_VERSION = 1

#: model class name in the header → class (the only classes a file may name)
MODEL_CLASSES: dict[str, type] = {"MLP": MLP, "Ensemble": Ensemble}

_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def save_model(model: MLP | Ensemble, path: str | os.PathLike, *, weights_dtype: str = "float32") -> Path:
    """Write ``model`` (weights, normalisation, settings, metadata) to a safetensors file.

    Parameters
    ----------
    model : MLP or Ensemble
        Must carry ``descriptor_settings``.
    path : str or path-like
        Output file (conventionally ``*.safetensors``); parent directories are created.
    weights_dtype : {"float32", "float16"}
        Storage precision of the weights (float16 halves the file; the input
        standardisation is always stored as float32).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    from .. import __version__

    if weights_dtype not in _DTYPES:
        raise SettingsError(f"weights_dtype={weights_dtype!r}; must be one of {sorted(_DTYPES)}")
    if model.descriptor_settings is None:
        raise SettingsMismatchError("model has no descriptor_settings; set them before saving")
    name = next((k for k, v in MODEL_CLASSES.items() if type(model) is v), None)
    if name is None:
        raise SettingsError(f"cannot save a {type(model).__name__}; known classes: {sorted(MODEL_CLASSES)}")
    header = {
        "schema_version": SCHEMA_VERSION,
        "elfcore_version": __version__,
        "model_class": name,
        "model": {
            "n_features": model.n_features,
            "width": model.width,
            "hidden_layers": model.hidden_layers,
            "n_members": model.n_members,
        },
        "descriptor": model.descriptor_settings.to_dict(),
        "weights_dtype": weights_dtype,
        "training": to_jsonable(model.metadata),
    }
    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu").contiguous()
        if not key.startswith("feature_"):
            value = value.to(_DTYPES[weights_dtype])
        tensors[key] = value.clone()
    return write_model_file(path, tensors, header)


def write_model_file(path: str | os.PathLike, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> Path:
    """Write ``tensors`` as safetensors with ``header`` as the JSON ``elfcore`` metadata (no pickles)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"elfcore": json.dumps(header, sort_keys=True)})
    return path


def read_raw_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON ``elfcore`` header of a safetensors model file, its schema version checked.

    Raises
    ------
    FormatError
        If the file is not safetensors, has no valid elfcore header, or another schema version.
    """
    from safetensors import safe_open

    from ..io.validate import check_safetensors

    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    check_safetensors(path)  # sizes, dtypes and offsets of the raw header, before safetensors reads anything
    try:
        with safe_open(path, framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise FormatError(f"not a safetensors model file ({exc})", path=path) from exc
    if "elfcore" not in meta:
        raise FormatError("safetensors file has no 'elfcore' header; not an elfcore model", path=path)
    try:
        header = json.loads(meta["elfcore"])
    except json.JSONDecodeError as exc:
        raise FormatError(f"model header is not valid JSON ({exc})", path=path) from exc
    version = header.get("schema_version")
    if version != SCHEMA_VERSION:
        raise FormatError(f"model schema_version={version!r}; this elfcore reads {SCHEMA_VERSION}", path=path)
    return header


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """Return the JSON header of a model file without loading weights.

    Raises
    ------
    FormatError
        If the file is not a safetensors file with an elfcore header of a known schema.
    """
    header = read_raw_header(path)
    if header.get("model_class") not in MODEL_CLASSES:
        raise FormatError(
            f"model_class={header.get('model_class')!r}; known: {sorted(MODEL_CLASSES)}", path=path
        )
    return header


#: Largest numbers a model header may state (far above any trained elfcore model).
MODEL_LIMITS = {"n_features": 100_000, "width": 8192, "hidden_layers": 64, "n_members": 256}


def _model_numbers(spec, cls, path) -> dict[str, int]:
    """The integers of a header's ``model`` entry, each checked against :data:`MODEL_LIMITS`."""
    keys = ["n_features", "width", "hidden_layers"] + (["n_members"] if cls is Ensemble else [])
    if not isinstance(spec, dict):
        raise FormatError(f"model spec in header is {type(spec).__name__}, not an object", path=str(path))
    out = {}
    for key in keys:
        value = spec.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise FormatError(f"model {key}={str(value)[:40]!r} in header; expected an integer", path=str(path))
        if not 1 <= value <= MODEL_LIMITS[key]:
            raise FormatError(f"model {key}={value} in header; allowed 1..{MODEL_LIMITS[key]}", path=str(path))
        out[key] = value
    return out


def check_tensor_shapes(build, path) -> torch.nn.Module:
    """Build the model the header describes, its tensors checked against the file's first.

    ``build()`` runs once on the ``meta`` device (no memory) to list the expected
    tensor names and shapes; they must equal those of the file's safetensors header
    (:func:`elfcore.io.validate.check_safetensors`). Only then is the real model built.

    Raises
    ------
    FormatError
        A tensor is missing, extra or of another shape than the header's model needs.
    """
    from ..io.validate import check_safetensors

    stored = {k: shape for k, (_, shape) in check_safetensors(path)["tensors"].items()}
    with torch.device("meta"):
        try:
            expected = {k: tuple(v.shape) for k, v in build().state_dict().items()}
        except (ValueError, TypeError, RuntimeError) as exc:
            raise FormatError(f"invalid model spec in header ({exc})", path=str(path)) from None
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    if missing or extra:
        raise FormatError(f"tensors do not match the model in the header (missing {missing[:4]}, "
                          f"unexpected {extra[:4]})", path=str(path))
    for key, shape in expected.items():
        if stored[key] != shape:
            raise FormatError(f"tensor {key!r} has shape {list(stored[key])}; the model in the header needs "
                              f"{list(shape)}", path=str(path))
    return build()


def check_finite_weights(model: torch.nn.Module, path) -> None:
    """Refuse a model whose weights hold NaN or inf (it would predict NaN everywhere)."""
    for key, value in model.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise FormatError(f"tensor {key!r} holds NaN or inf", path=str(path))


def load_model(
    path: str | os.PathLike,
    *,
    descriptor_settings=None,
    device: str | torch.device = "cpu",
) -> MLP | Ensemble:
    """Load a model written by :func:`save_model`.

    Parameters
    ----------
    path : str or path-like
        The safetensors file.
    descriptor_settings : DescriptorSettings, optional
        If given, the settings the caller will compute descriptors with; a model
        trained with other settings raises :class:`SettingsMismatchError`.
    device : str or torch.device
        Where to put the weights (``"auto"`` is resolved by :func:`elfcore.device.resolve`).

    Returns
    -------
    MLP or Ensemble
        In eval mode, float32, with ``descriptor_settings`` and ``metadata`` set.

    Raises
    ------
    FormatError
        On a file without a valid elfcore header or with missing/misshaped tensors.
    SettingsMismatchError
        If ``descriptor_settings`` is given and differs from the model's.
    """
    from safetensors.torch import load_file

    from ..descriptor import DescriptorSettings
    from ..device import resolve

    header = read_header(path)
    try:
        settings = DescriptorSettings.from_dict(header["descriptor"])
    except Exception as exc:
        raise FormatError(f"invalid descriptor settings in model header: {exc}", path=str(path)) from exc
    if descriptor_settings is not None and descriptor_settings != settings:
        raise SettingsMismatchError(
            f"{path}: model was trained with descriptor {settings.to_dict()}, "
            f"not {descriptor_settings.to_dict()}"
        )
    spec = header["model"]
    cls = MODEL_CLASSES[header["model_class"]]
    numbers = _model_numbers(spec, cls, path)
    if numbers["n_features"] != settings.n_features:
        raise FormatError(
            f"model has {numbers['n_features']} inputs but its descriptor settings give {settings.n_features}",
            path=str(path),
        )
    if cls is Ensemble:
        build = lambda: Ensemble(numbers["n_features"], numbers["n_members"], numbers["width"],  # noqa: E731
                                 numbers["hidden_layers"])
    else:
        build = lambda: MLP(numbers["n_features"], numbers["width"], numbers["hidden_layers"])  # noqa: E731
    model = check_tensor_shapes(build, path)
    tensors = {k: v.to(torch.float32) for k, v in load_file(str(path)).items()}
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise FormatError(f"tensors do not match the model in the header ({exc})", path=str(path)) from exc
    check_finite_weights(model, path)
    model.descriptor_settings = settings
    model.metadata = dict(header.get("training") or {})
    model.metadata.setdefault("elfcore_version", header.get("elfcore_version"))
    return model.to(resolve(device)).eval()
