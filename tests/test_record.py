"""``@record`` classes behave exactly as the ``@dataclass`` they stand for.

Each is compared with a real dataclass made by the standard library from the
same fields and options: constructor signature, repr, equality, hashing,
frozenness, pickling, ``dataclasses`` helpers.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from functools import partial
from typing import Any

import pytest

from keeptar._record import record
from keeptar.formats._manifest import ManifestItem
from keeptar.formats._model import ArchiveInfo, ImageInfo, LayerInfo
from keeptar.formats._scan import Member
from keeptar.streaming import ArchiveEnd, MemberData, MemberEnd, MemberHeader
from keeptar.streaming.sources import StreamResult

#: Every @record class, and the options it stands for (as passed to @dataclass).
RECORDS: list[tuple[type, dict[str, bool]]] = [
    (MemberHeader, {"frozen": True, "kw_only": True}),
    (MemberData, {"frozen": True}),
    (MemberEnd, {"frozen": True}),
    (ArchiveEnd, {"frozen": True}),
    (LayerInfo, {"frozen": True, "kw_only": True}),
    (ImageInfo, {"frozen": True, "kw_only": True}),
    (ArchiveInfo, {"frozen": True, "kw_only": True}),
    (ManifestItem, {"frozen": True}),
    (StreamResult, {"frozen": True}),
    (Member, {}),
]


def reference(cls: type, options: dict[str, bool]) -> Any:
    """The class ``@dataclass(slots=True, **options)`` makes from *cls*'s fields."""
    specs = []
    for f in dataclasses.fields(cls):
        extra = {"repr": f.repr, "compare": f.compare, "hash": f.hash}
        if f.default is not dataclasses.MISSING:
            extra["default"] = f.default
        specs.append((f.name, f.type, dataclasses.field(**extra)))  # type: ignore[call-overload]
    made = dataclasses.make_dataclass(cls.__name__, specs, slots=True, **options)
    made.__qualname__ = cls.__qualname__
    return made


def values(cls: type, tag: str) -> dict[str, Any]:
    """A distinct, hashable value for each field of *cls*."""
    return {f.name: f"{f.name}-{tag}" for f in dataclasses.fields(cls)}


def outcome(call: Any) -> tuple[str, Any]:
    try:
        return ("ok", call())
    except Exception as exc:
        return (type(exc).__name__, str(exc))


@pytest.mark.parametrize(("cls", "options"), RECORDS, ids=[c.__name__ for c, _ in RECORDS])
def test_a_record_behaves_as_its_dataclass(cls: type, options: dict[str, bool]) -> None:
    ref = reference(cls, options)
    assert [p.replace(annotation=None) for p in inspect.signature(cls).parameters.values()] == [
        p.replace(annotation=None) for p in inspect.signature(ref).parameters.values()
    ]
    assert cls.__match_args__ == ref.__match_args__  # type: ignore[attr-defined]
    assert cls.__slots__ == ref.__slots__  # type: ignore[attr-defined]
    assert repr(cls.__dataclass_params__) == repr(ref.__dataclass_params__)  # type: ignore[attr-defined]
    assert (cls.__hash__ is None) == (ref.__hash__ is None)

    one, ref_one = cls(**values(cls, "a")), ref(**values(cls, "a"))
    assert repr(one) == repr(ref_one)
    assert one == cls(**values(cls, "a"))
    assert one.__eq__(ref_one) is NotImplemented and ref_one.__eq__(one) is NotImplemented
    if ref.__hash__ is not None:
        assert hash(one) == hash(ref_one)
    for name in values(cls, "a"):  # each field, changed alone
        other = {**values(cls, "a"), name: "changed"}
        assert (one == cls(**other)) == (ref_one == ref(**other)), name
        if ref.__hash__ is not None:
            assert hash(cls(**other)) == hash(ref(**other)), name
        mine, theirs = cls(**values(cls, "a")), ref(**values(cls, "a"))
        assert outcome(partial(setattr, mine, name, 1)) == outcome(
            partial(setattr, theirs, name, 1)
        )
        assert outcome(partial(delattr, mine, name)) == outcome(partial(delattr, theirs, name))
    # Another attribute: both refuse (3.11's frozen slotted dataclass says so with a
    # TypeError from its stale class cell, a record with FrozenInstanceError).
    assert outcome(partial(setattr, one, "extra", 1))[0] != "ok"
    assert outcome(partial(setattr, ref_one, "extra", 1))[0] != "ok"
    assert outcome(cls)[0] == outcome(ref)[0] == "TypeError"  # missing arguments

    copied = cls(**values(cls, "b"))
    for clone in (pickle.loads(pickle.dumps(copied)), copy.copy(copied), copy.deepcopy(copied)):
        assert clone == copied and clone is not copied
    assert dataclasses.asdict(copied) == dataclasses.asdict(ref(**values(cls, "b")))
    assert dataclasses.replace(copied, **values(cls, "a")) == cls(**values(cls, "a"))


def test_a_record_must_write_its_own_init() -> None:
    with pytest.raises(TypeError, match="must define __init__"):

        @record(frozen=True)
        class Bare:
            x: int
