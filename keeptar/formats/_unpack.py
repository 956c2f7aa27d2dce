"""What ``docker load`` makes of an archive's members: a dry run of its extraction.

``docker load`` first extracts the whole archive into a scratch directory, with
the extracting process chrooted into it (moby ``pkg/chrootarchive``, unpacking at
``/``).  So nothing escapes, but:

- a name that climbs out (``../x``) or is absolute (``/x``) is written at the
  root, as ``x``, replacing any ``x`` already there;
- a hard link needs its target (resolved the same way) to exist already and not
  to be a directory, or ``link(2)`` fails and Docker refuses the whole archive;
- a member whose parent directory is reached through a symlink needs that
  symlink to lead to a directory that exists (inside the chroot), or creating
  it fails and Docker refuses the whole archive.

:class:`UnpackCheck` replays these rules on member headers as they arrive,
keeping only the tree of names (no data), and records the first member Docker
would refuse, plus members Docker would read in place of others keeptar reads.
Checked against dockerd 20.10 by ``tests/test_docker_refusals.py``.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from keeptar.streaming import MemberHeader, MemberType

__all__ = ["UnpackCheck"]

_DIR = "dir"
_MAX_SYMLINK_HOPS = 40  # Linux's MAXSYMLINKS


@dataclass(frozen=True, slots=True)
class _Node:
    kind: str  # "dir", "file", "symlink", "other"
    target: str = ""  # a symlink's target, as stored


def chroot_path(name: str) -> str:
    """*name* as it lands inside the chroot: ``..`` stops at the root, no leading ``/``."""
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


class _Missing(Exception):
    """A path does not resolve to something that exists."""


class UnpackCheck:
    """Replays Docker's extraction of member headers; see the module docstring.

    Attributes:
        refusal: why ``docker load`` would refuse the archive (the first reason),
            or None.
        shadowed: members Docker writes over another member keeptar reads by
            that name (``../manifest.json`` over ``manifest.json``), as
            ``(name, path it lands at)``.
    """

    def __init__(self) -> None:
        self._nodes: dict[str, _Node] = {"": _Node(_DIR)}
        self.refusal: str | None = None
        self._climbers: list[tuple[str, str]] = []
        self._plain: set[str] = set()

    @property
    def shadowed(self) -> list[tuple[str, str]]:
        return [(name, at) for name, at in self._climbers if at in self._plain]

    def add(self, header: MemberHeader) -> None:
        """Replay one member's extraction."""
        if self.refusal is not None:
            return
        name = chroot_path(header.name)
        if header.path.startswith(".."):
            self._climbers.append((header.name, name))
        else:
            self._plain.add(header.path)
        if not name:
            return  # the root itself
        try:
            self._extract(name, header)
        except _Missing as exc:
            self.refusal = f"member {header.name!r}: {exc}"

    def _extract(self, name: str, header: MemberHeader) -> None:
        parent, base = posixpath.split(name)
        if self._lookup(parent, follow_last=False) is None:
            self._mkdir_all(parent, header)
        directory = self._resolve(parent, follow_last=True)
        if directory is None or self._nodes[directory].kind != _DIR:
            raise _Missing(f"its directory {parent!r} leads nowhere inside the archive")
        path = posixpath.join(directory, base) if directory else base
        existing = self._nodes.get(path)
        is_dir = header.type is MemberType.DIRECTORY
        if existing is not None and not (existing.kind == _DIR and is_dir):
            self._remove(path)
        if is_dir:
            self._nodes.setdefault(path, _Node(_DIR))
        elif header.type is MemberType.SYMLINK:
            self._nodes[path] = _Node("symlink", header.linkname)
        elif header.type is MemberType.HARDLINK:
            target = self._lookup(chroot_path(header.linkname), follow_last=False)
            if target is None:
                raise _Missing(
                    f"a hard link to {header.linkname!r}, which is not in the archive before it"
                )
            if self._nodes[target].kind == _DIR:
                raise _Missing(f"a hard link to {header.linkname!r}, a directory")
            self._nodes[path] = self._nodes[target]
        else:
            kind = "file" if header.type is MemberType.FILE else "other"
            self._nodes[path] = _Node(kind)

    def _remove(self, path: str) -> None:
        self._nodes.pop(path, None)
        prefix = path + "/"
        for key in [k for k in self._nodes if k.startswith(prefix)]:
            del self._nodes[key]

    def _mkdir_all(self, path: str, header: MemberHeader) -> None:
        """``os.MkdirAll``: create missing directories, following symlinks on the way."""
        current = ""
        for part in path.split("/"):
            candidate = posixpath.join(current, part) if current else part
            resolved = self._resolve(candidate, follow_last=True)
            if resolved is None:
                if candidate in self._nodes:  # a dangling symlink, or a symlink loop
                    raise _Missing(f"its directory {path!r} leads nowhere inside the archive")
                self._nodes[candidate] = _Node(_DIR)
                resolved = candidate
            elif self._nodes[resolved].kind != _DIR:
                raise _Missing(f"its directory {path!r} is not a directory")
            current = resolved

    def _lookup(self, path: str, *, follow_last: bool) -> str | None:
        return self._resolve(path, follow_last=follow_last)

    def _resolve(self, path: str, *, follow_last: bool, hops: int = 0) -> str | None:
        """Where *path* leads inside the chroot (symlinks followed), or None if nowhere."""
        current = ""
        parts = [part for part in path.split("/") if part]
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            candidate = posixpath.join(current, part) if current else part
            node = self._nodes.get(candidate)
            if node is None:
                return None
            if node.kind == "symlink" and (follow_last or not last):
                hops += 1
                if hops > _MAX_SYMLINK_HOPS:
                    return None
                base = "" if node.target.startswith("/") else current
                joined = chroot_path(posixpath.join("/" + base, node.target))
                resolved = self._resolve(joined, follow_last=True, hops=hops)
                if resolved is None:
                    return None
                candidate = resolved
            if not last and self._nodes[candidate].kind != _DIR:
                return None
            current = candidate
        return current
