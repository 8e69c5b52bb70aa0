"""Shared helpers of the frozen settings dataclasses (JSON round trips)."""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def settings_from_dict(cls: type[T], data: Mapping[str, Any], kind: str) -> T:
    """Build the settings dataclass ``cls`` from a plain dict; unknown keys raise ``ValueError``.

    ``kind`` names the settings in the message (e.g. ``"model"``).
    """
    known = {f.name for f in fields(cls)}
    extra = set(data) - known
    if extra:
        raise ValueError(f"unknown {kind} settings {sorted(extra)}; allowed: {sorted(known)}")
    return cls(**data)
