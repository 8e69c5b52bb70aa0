"""Device selection: the single place where ``device="auto"`` is resolved."""
from __future__ import annotations

import torch
from .errors import SettingsError

__all__ = ["resolve"]


def resolve(device: str | torch.device | None = "auto") -> torch.device:
    """Return a concrete :class:`torch.device`.

    Parameters
    ----------
    device : str or torch.device or None
        ``"auto"`` (or ``None``) picks CUDA when available, else CPU. Anything else
        is passed to :class:`torch.device` (``"cpu"``, ``"cuda"``, ``"cuda:1"``).

    Raises
    ------
    ValueError
        If CUDA is requested but not available, or the string is not a device.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SettingsError(f"device={device!r}; expected 'auto', 'cpu' or 'cuda[:N]'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"device={device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return dev
