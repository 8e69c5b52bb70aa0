"""The one base of elfcore's settings classes.

Every group of settings (descriptor, model, training, topology, k-space, screening,
DFT...) is a frozen dataclass deriving from :class:`Settings`: it is validated when it
is built (a bad value raises :class:`~elfcore.errors.SettingsError`, which is both an
:class:`~elfcore.errors.ElfcoreError` and a ``ValueError``), and it round-trips through
plain JSON-ready dicts with :meth:`Settings.to_dict` / :meth:`Settings.from_dict`.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Grid(Settings):
...     spacing: float = 0.08
...     axes: tuple = ("a", "b", "c")
...     def __post_init__(self):
...         check(self.spacing > 0, f"spacing={self.spacing}; must be > 0 Å")
>>> Grid.from_dict(Grid(spacing=0.1).to_dict())
Grid(spacing=0.1, axes=('a', 'b', 'c'))
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar, Mapping, TypeVar

from .errors import SettingsError
from .jsonsafe import to_jsonable

__all__ = ["Settings", "check", "plain"]

S = TypeVar("S", bound="Settings")


def check(condition: bool, message: str) -> None:
    """Raise :class:`SettingsError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise SettingsError(message)


def plain(value: Any) -> Any:
    """``value`` as plain JSON types: tuples → lists, numpy scalars/arrays → Python, paths → str.

    :func:`elfcore.jsonsafe.to_jsonable` with ``strict=False`` (NaN and unknown objects are
    kept as they are); settings inside become their ``to_dict()``.
    """
    return to_jsonable(value, strict=False)


class Settings:
    """Base class of the frozen settings dataclasses (see the module docstring).

    Subclasses are ``@dataclass(frozen=True)`` and validate in ``__post_init__`` with
    :func:`check`. ``settings_name`` names the group in messages (default: the class
    name).
    """

    settings_name: ClassVar[str] = ""

    @classmethod
    def _kind(cls) -> str:
        return cls.settings_name or cls.__name__

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field (tuples as lists)."""
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[S], data: Mapping[str, Any]) -> S:
        """Inverse of :meth:`to_dict`.

        Unknown keys, a non-mapping and values the class refuses raise
        :class:`SettingsError`; lists become tuples where the field's default is a tuple,
        and dicts become nested settings where the field is annotated with a
        :class:`Settings` class.
        """
        if not isinstance(data, Mapping):
            raise SettingsError(f"{cls._kind()} settings must be a mapping, got {type(data).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SettingsError(f"unknown {cls._kind()} settings {unknown}; allowed: {sorted(known)}")
        hints = typing.get_type_hints(cls)
        values = {}
        for name, value in data.items():
            default, hint = known[name].default, hints.get(name)
            if isinstance(value, list) and isinstance(default, tuple):
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
            elif isinstance(value, Mapping) and isinstance(hint, type) and issubclass(hint, Settings):
                value = hint.from_dict(value)
            values[name] = value
        try:
            return cls(**values)
        except SettingsError:
            raise
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{cls._kind()} settings: {exc}") from exc

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)
