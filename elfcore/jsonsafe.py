"""Plain-JSON form of results: the one place numpy values, paths and NaN are cleaned.

:func:`to_jsonable` turns the dicts elfcore's functions and commands return into
objects :func:`json.dumps` writes as strict JSON; :func:`dumps` does both.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

__all__ = ["to_jsonable", "dumps"]


def to_jsonable(obj: Any) -> Any:
    """Copy of ``obj`` made of dict/list/str/int/float/bool/None only.

    numpy scalars become Python numbers, arrays (and anything with ``tolist``, e.g.
    tensors) lists, paths strings, tuples and sets lists, dict keys strings; NaN and
    ±inf become ``None`` (strict JSON has no such numbers); other objects their ``str``.

    Examples
    --------
    >>> to_jsonable({"a": np.float32(0.5), 1: (np.arange(2), float("nan"))})
    {'a': 0.5, '1': [[0, 1], None]}
    """
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):
        return to_jsonable(obj.tolist())
    return str(obj)


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps(to_jsonable(obj))``; strict JSON (``allow_nan=False``)."""
    return json.dumps(to_jsonable(obj), allow_nan=False, **kwargs)
