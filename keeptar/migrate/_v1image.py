"""Docker 20.10's ``image.V1Image`` struct: decoding a v1 ``json`` and re-marshalling it.

Docker decodes every v1 layer's JSON into this struct (for the history entry)
and, for JSON written by Docker before 1.8.3, re-marshals it before use.  The
field lists below follow ``image/image.go`` and ``api/types/container/config.go``
at moby v20.10: JSON names, order and ``omitempty``.  Decoding follows Go:
keys match exactly or case-insensitively, later duplicates win (structs and maps
merge), ``null`` leaves a value alone (sets slices, maps and pointers to nil),
and a value of the wrong type is an error, which makes ``docker load`` fail.
"""

from __future__ import annotations

from typing import Any

from keeptar.errors import ArchiveError
from keeptar.migrate._golang import ZERO_TIME, JsonObject, go_string, go_text, go_time

__all__ = ["decode_v1image", "marshal_v1image"]

# (json name, kind, omitempty)
_HEALTH = (
    ("Test", "strlist", True),
    ("Interval", "int", True),
    ("Timeout", "int", True),
    ("StartPeriod", "int", True),
    ("Retries", "int", True),
)
_CONFIG = (
    ("Hostname", "str", False),
    ("Domainname", "str", False),
    ("User", "str", False),
    ("AttachStdin", "bool", False),
    ("AttachStdout", "bool", False),
    ("AttachStderr", "bool", False),
    ("ExposedPorts", "set", True),
    ("Tty", "bool", False),
    ("OpenStdin", "bool", False),
    ("StdinOnce", "bool", False),
    ("Env", "strlist", False),
    ("Cmd", "strslice", False),
    ("Healthcheck", "health", True),
    ("ArgsEscaped", "bool", True),
    ("Image", "str", False),
    ("Volumes", "set", False),
    ("WorkingDir", "str", False),
    ("Entrypoint", "strslice", False),
    ("NetworkDisabled", "bool", True),
    ("MacAddress", "str", True),
    ("OnBuild", "strlist", False),
    ("Labels", "strmap", False),
    ("StopSignal", "str", True),
    ("StopTimeout", "intptr", True),
    ("Shell", "strslice", True),
)
_V1IMAGE = (
    ("id", "str", True),
    ("parent", "str", True),
    ("comment", "str", True),
    ("created", "time", False),
    ("container", "str", True),
    ("container_config", "config", False),
    ("docker_version", "str", True),
    ("author", "str", True),
    ("config", "configptr", True),
    ("architecture", "str", True),
    ("variant", "str", True),
    ("os", "str", True),
    ("Size", "int", True),
)
_STRUCTS = {"config": _CONFIG, "configptr": _CONFIG, "health": _HEALTH, "v1": _V1IMAGE}
_ZERO: dict[str, Any] = {
    "str": "",
    "bool": False,
    "int": 0,
    "time": ZERO_TIME,
}
_INT64 = 1 << 63


class _Bad(Exception):
    pass


def _field(fields: tuple[tuple[str, str, bool], ...], key: str) -> tuple[str, str] | None:
    for name, kind, _ in fields:
        if name == key:
            return name, kind
    folded = key.lower()
    for name, kind, _ in fields:
        if name.lower() == folded:
            return name, kind
    return None


def _strings(value: Any, path: str) -> list[str]:
    if not isinstance(value, list) or isinstance(value, JsonObject):
        raise _Bad(f"{path}: expected a list of strings")
    out = []
    for item in value:
        if item is None:
            out.append("")
        elif isinstance(item, str):
            out.append(go_text(item))
        else:
            raise _Bad(f"{path}: expected a list of strings")
    return out


def _object(value: Any, path: str) -> list[tuple[str, Any]]:
    if not isinstance(value, JsonObject):
        raise _Bad(f"{path}: expected an object")
    return value


def _decode_value(kind: str, value: Any, current: Any, path: str) -> Any:
    if value is None:
        return (
            None
            if kind in ("strlist", "strslice", "set", "strmap", "intptr", "health", "configptr")
            else current
        )
    if kind == "str":
        if not isinstance(value, str):
            raise _Bad(f"{path}: expected a string")
        return go_text(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise _Bad(f"{path}: expected true or false")
        return value
    if kind in ("int", "intptr"):
        if isinstance(value, bool) or not isinstance(value, int) or not -_INT64 <= value < _INT64:
            raise _Bad(f"{path}: expected an integer")
        return value
    if kind == "time":
        if not isinstance(value, str):
            raise _Bad(f"{path}: expected an RFC 3339 string")
        return go_time(value, what=path)
    if kind == "strlist":
        return _strings(value, path)
    if kind == "strslice":
        return [go_text(value)] if isinstance(value, str) else _strings(value, path)
    if kind == "set":
        merged = dict(current or {})
        for key, item in _object(value, path):
            if item is not None:
                _object(item, f"{path}.{key}")
            merged[go_text(key)] = True
        return merged
    if kind == "strmap":
        merged = dict(current or {})
        for key, item in _object(value, path):
            if item is not None and not isinstance(item, str):
                raise _Bad(f"{path}.{key}: expected a string")
            merged[go_text(key)] = go_text(item or "")
        return merged
    return _decode_struct(_STRUCTS[kind], value, current, path)


def _decode_struct(
    fields: tuple[tuple[str, str, bool], ...], value: Any, current: Any, path: str
) -> dict[str, Any]:
    out: dict[str, Any] = dict(current) if current else _zero_struct(fields)
    for key, item in _object(value, path):
        found = _field(fields, key)
        if found is None:
            continue
        name, kind = found
        out[name] = _decode_value(kind, item, out[name], f"{path}.{name}" if path else name)
    return out


def _zero_struct(fields: tuple[tuple[str, str, bool], ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, kind, _ in fields:
        if kind == "config":
            out[name] = _zero_struct(_CONFIG)
        else:
            out[name] = _ZERO.get(kind)
    return out


def decode_v1image(doc: Any, *, what: str) -> dict[str, Any]:
    """Decode a v1 JSON document (from :func:`loads_pairs`) into V1Image field values.

    Raises:
        ArchiveError: Docker's decoder would refuse it.
    """
    try:
        return _decode_struct(_V1IMAGE, doc, None, "")
    except _Bad as exc:
        raise ArchiveError(f"{what}: {exc}") from None


def _empty(value: Any) -> bool:
    """Go's ``omitempty``: false, 0, "", or a nil or empty slice, map or pointer."""
    return value is None or value == "" or value is False or value == 0 or value in ([], {})


def _marshal_value(kind: str, value: Any) -> bytes:
    if kind in ("str", "time"):
        return go_string(value)
    if kind == "bool":
        return b"true" if value else b"false"
    if value is None:
        return b"null"
    if kind in ("int", "intptr"):
        return str(value).encode()
    if kind in ("strlist", "strslice"):
        return b"[" + b",".join(go_string(item) for item in value) + b"]"
    if kind == "set":
        return b"{" + b",".join(go_string(k) + b":{}" for k in _sorted(value)) + b"}"
    if kind == "strmap":
        items = (go_string(k) + b":" + go_string(value[k]) for k in _sorted(value))
        return b"{" + b",".join(items) + b"}"
    return _marshal_struct(_STRUCTS[kind], value)


def _sorted(keys: Any) -> list[str]:
    return sorted(keys, key=lambda k: k.encode("utf-8"))


def _marshal_struct(fields: tuple[tuple[str, str, bool], ...], value: dict[str, Any]) -> bytes:
    parts = []
    for name, kind, omitempty in fields:
        item = value[name]
        if omitempty and kind != "time" and _empty(item):  # a time.Time is never empty
            continue
        parts.append(go_string(name) + b":" + _marshal_value(kind, item))
    return b"{" + b",".join(parts) + b"}"


def marshal_v1image(image: dict[str, Any]) -> bytes:
    """``json.Marshal`` of a decoded V1Image, as the pre-1.8.3 fallback does."""
    return _marshal_struct(_V1IMAGE, image)
