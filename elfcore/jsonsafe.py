"""Plain-JSON form of results: the one place numpy values, paths and NaN are cleaned.

:func:`to_jsonable` turns the dicts elfcore's functions and commands return into
objects :func:`json.dumps` writes as strict JSON; :func:`dumps` does both.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping

import numpy as np

__all__ = ["to_jsonable", "dumps"]


def to_jsonable(obj: Any, *, strict: bool = True) -> Any:
    """Copy of ``obj`` made of dict/list/str/int/float/bool/None only.

    The one JSON clean-up of elfcore: command results, model-file headers, screening
    rows and settings dicts (:func:`elfcore.settings.plain` is ``strict=False``) go
    through it.

    numpy scalars become Python numbers, arrays (and anything with ``tolist``, e.g.
    tensors) lists, paths strings, tuples and sets lists, mappings dicts with string
    keys, bytes text (UTF-8), dataclasses (settings) their ``to_dict()`` or a dict of their fields.
    ``strict`` (the default): NaN and ±inf become ``None`` (strict JSON has no such
    numbers) and other objects their ``str``; ``strict=False`` keeps both as they are.

    Examples
    --------
    >>> to_jsonable({"a": np.float32(0.5), 1: (np.arange(2), float("nan"))})
    {'a': 0.5, '1': [[0, 1], None]}
    >>> to_jsonable([float("inf"), object], strict=False)
    [inf, <class 'object'>]
    """
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, strict=strict) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v, strict=strict) for v in obj]
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item(), strict=strict)
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if (math.isfinite(obj) or not strict) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        to_dict = getattr(obj, "to_dict", None)
        fields = to_dict() if callable(to_dict) else {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        return to_jsonable(fields, strict=strict)
    if hasattr(obj, "tolist"):
        return to_jsonable(obj.tolist(), strict=strict)
    return str(obj) if strict else obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps(to_jsonable(obj))``; strict JSON (``allow_nan=False``)."""
    return json.dumps(to_jsonable(obj), allow_nan=False, **kwargs)
