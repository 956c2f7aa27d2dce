"""``@record``: a dataclass whose methods come from compiled code, for a short start-up.

``@dataclass`` writes ``__init__``, ``__repr__``, ``__eq__``, ``__hash__``,
``__setattr__`` and ``__delattr__`` as source text and compiles each on every
import: about 0.6 ms a class on Python 3.11, and ``keeptar inspect`` defines
ten of them before it reads a byte (issue 8, start-up).  :func:`record` makes
the same class from methods compiled once, into the .pyc:

- the class writes its own ``__init__`` (``object.__setattr__`` per field, as
  a frozen dataclass's does), with the signature ``@dataclass`` would give it;
- ``__repr__``, ``__eq__``, ``__hash__``, and for a frozen class
  ``__setattr__``, ``__delattr__``, ``__getstate__`` and ``__setstate__``
  behave as ``@dataclass`` makes them (same results, same exceptions);
- it still is a dataclass: ``dataclasses.fields``, ``replace``, ``asdict``
  and ``__match_args__`` work, and ``__dataclass_params__`` says what the
  class does.

tests/test_record.py checks each such class against a real ``@dataclass``
with the same fields.  For type checkers ``record`` *is* ``dataclasses.dataclass``
(so they check frozenness and fields as for any dataclass).
"""

from __future__ import annotations

import dataclasses
import reprlib
from collections.abc import Callable
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar

__all__ = ["record"]

_T = TypeVar("_T")


def _record(
    *, frozen: bool = False, slots: bool = False, kw_only: bool = False
) -> Callable[[type[_T]], type[_T]]:
    """Like ``@dataclass(frozen=…, slots=…, kw_only=…)``; the class defines ``__init__``."""

    def wrap(cls: type[_T]) -> type[_T]:
        if "__init__" not in cls.__dict__:
            raise TypeError(f"@record class {cls.__name__} must define __init__")
        made = dataclasses.dataclass(init=False, repr=False, eq=False, slots=slots, kw_only=kw_only)
        cls = made(cls)
        _add_methods(cls, frozen)
        return cls

    return wrap


if TYPE_CHECKING:
    from dataclasses import dataclass as record
else:
    record = _record


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """A function returning the tuple of *names*' values (a 1-tuple for one name)."""
    if not names:
        return lambda obj: ()
    get = attrgetter(*names)
    if len(names) == 1:
        return lambda obj: (get(obj),)
    return get


def _name_methods(cls: Any, *methods: Any) -> None:
    for method in methods:
        method.__qualname__ = f"{cls.__qualname__}.{method.__name__}"


def _add_methods(cls: Any, frozen: bool) -> None:
    fields = dataclasses.fields(cls)
    names = tuple(f.name for f in fields)
    shown = tuple(f.name for f in fields if f.repr)
    compared = _getter(tuple(f.name for f in fields if f.compare))
    hashed = _getter(tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash)))

    @reprlib.recursive_repr()
    def __repr__(self: Any) -> str:
        values = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{self.__class__.__qualname__}({values})"

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is self.__class__:
            return bool(compared(self) == compared(other))
        return NotImplemented

    _name_methods(cls, __repr__, __eq__)
    cls.__repr__ = __repr__
    cls.__eq__ = __eq__
    params = cls.__dataclass_params__
    params.init = params.repr = params.eq = True
    if not frozen:
        cls.__hash__ = None  # as @dataclass(eq=True) leaves a mutable class
        return

    def __hash__(self: Any) -> int:
        return hash(hashed(self))

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    def __getstate__(self: Any) -> list[Any]:
        return [getattr(self, name) for name in names]

    def __setstate__(self: Any, state: list[Any]) -> None:
        for name, value in zip(names, state, strict=False):
            object.__setattr__(self, name, value)

    _name_methods(cls, __hash__, __setattr__, __delattr__, __getstate__, __setstate__)
    cls.__hash__ = __hash__
    cls.__setattr__ = __setattr__
    cls.__delattr__ = __delattr__
    if cls.__dict__.get("__slots__") is not None:  # pickling a frozen slotted class
        cls.__getstate__ = __getstate__
        cls.__setstate__ = __setstate__
    params.frozen = True
