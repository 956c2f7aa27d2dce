"""Changing real archives for tests: read a fixture's members, change some, write it back.

The one place tests rewrite a real `docker save` (or other tool's) archive, so
that every broken or altered archive differs from a real one in exactly what
the test says.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

Members = list[tuple[tarfile.TarInfo, bytes | None]]


def members_of(path: Path) -> Members:
    """Every member of the tar at *path*, in order, with its bytes (None for non-files)."""
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar]  # type: ignore[union-attr]


def write_tar(
    path: Path,
    members: Iterable[tuple[tarfile.TarInfo, bytes | None]],
    *,
    format: int = tarfile.PAX_FORMAT,
) -> Path:
    """Write *members* to a new tar at *path*; each file's size follows its bytes."""
    with tarfile.open(path, "w", format=format) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def rewrite_archive(
    source: Path,
    dest: Path,
    change: Mapping[str, bytes | None] | None = None,
    *,
    rename: Mapping[str, str] | None = None,
    extra: Iterable[tuple[tarfile.TarInfo, bytes | None]] = (),
    format: int = tarfile.PAX_FORMAT,
) -> Path:
    """Copy the archive *source* to *dest* with members changed.

    Args:
        change: member name to new bytes, or to None to leave the member out.
        rename: member name to the name it gets in *dest* (after *change*).
        extra: members appended at the end.
        format: the tar format written.
    """
    change = change or {}
    rename = rename or {}
    out: Members = []
    for info, data in members_of(source):
        if info.name in change:
            if change[info.name] is None:
                continue
            data = change[info.name]
        info.name = rename.get(info.name, info.name)
        out.append((info, data))
    return write_tar(dest, [*out, *extra], format=format)


def with_new_config(
    source: Path,
    dest: Path,
    edit: Callable[[dict[str, Any]], None] | None = None,
    *,
    layers: Mapping[int, bytes] | None = None,
    edit_manifest: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """A copy of the manifest.json archive *source* whose first image is changed.

    *edit* changes its config in place, *edit_manifest* its manifest.json entry;
    *layers* replaces layers (index in the manifest to new bytes) and sets their
    diff IDs to match.  The config gets
    the file name of its new sha256, as `docker save` names it, and manifest.json
    follows, so the result is a consistent image with a new ID.
    """
    data = {info.name: body for info, body in members_of(source)}
    manifest = json.loads(data["manifest.json"] or b"")
    old_config = manifest[0]["Config"]
    config = json.loads(data[old_config] or b"")
    if edit is not None:
        edit(config)
    if edit_manifest is not None:
        edit_manifest(manifest[0])
    change: dict[str, bytes | None] = {}
    for index, body in (layers or {}).items():
        change[manifest[0]["Layers"][index]] = body
        config["rootfs"]["diff_ids"][index] = "sha256:" + hashlib.sha256(body).hexdigest()
    config_bytes = json.dumps(config).encode()
    new_config = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest[0]["Config"] = new_config
    change[old_config] = config_bytes
    change["manifest.json"] = json.dumps(manifest).encode()
    return rewrite_archive(source, dest, change, rename={old_config: new_config})
