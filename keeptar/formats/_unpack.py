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
  it fails and Docker refuses the whole archive;
- names longer than Linux allows (``PATH_MAX``, ``NAME_MAX``) fail too.

:class:`UnpackCheck` replays these rules on member headers as they arrive,
keeping only a tree of names (no data; each step a dictionary look-up, so a
hostile archive of long or many names costs time linear in its headers), and
records the first member Docker would refuse, plus members Docker would write
over others that keeptar reads.  Checked against dockerd 20.10 by
``tests/test_docker_refusals.py``.
"""

from __future__ import annotations

from keeptar.streaming import MemberHeader, MemberType

__all__ = ["UnpackCheck", "chroot_path"]

_MAX_SYMLINK_HOPS = 40  # Linux's MAXSYMLINKS
_PATH_MAX = 4096  # bytes, with the terminating NUL
_NAME_MAX = 255


class _Node:
    """A directory, file, symlink or other entry of the replayed tree."""

    __slots__ = ("children", "kind", "name", "parent", "target")

    def __init__(
        self, kind: str, name: str = "", parent: _Node | None = None, target: str = ""
    ) -> None:
        self.kind = kind  # "dir", "file", "symlink", "other"
        self.name = name
        self.parent = parent or self  # the root is its own parent, as in a chroot
        self.target = target  # a symlink's target, as stored
        self.children: dict[str, _Node] | None = {} if kind == "dir" else None


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


class _Refused(Exception):
    """Docker's extraction would fail here."""


class UnpackCheck:
    """Replays Docker's extraction of member headers; see the module docstring.

    Attributes:
        refusal: why ``docker load`` would refuse the archive (the first reason),
            or None.
    """

    def __init__(self) -> None:
        self._root = _Node("dir")
        self.refusal: str | None = None
        self._climbers: list[tuple[str, str]] = []
        self._plain: set[str] = set()

    @property
    def shadowed(self) -> list[tuple[str, str]]:
        """Members Docker writes over another member keeptar reads by that name
        (``../manifest.json`` over ``manifest.json``), as ``(name, where it lands)``."""
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
        try:
            _check_length(name)
            if header.type in (MemberType.SYMLINK, MemberType.HARDLINK):
                _check_length(header.linkname)
            if name:  # not the root itself
                self._extract(name.split("/"), header)
        except _Refused as exc:
            self.refusal = f"member {_short(header.name)}: {exc}"

    def _extract(self, parts: list[str], header: MemberHeader) -> None:
        parent_parts, base = parts[:-1], parts[-1]
        if self._walk(self._root, parent_parts, follow_last=False) is None:
            self._mkdir_all(parent_parts)
        directory = self._walk(self._root, parent_parts, follow_last=True)
        if directory is None or directory.children is None:
            raise _Refused(
                f"its directory {_short('/'.join(parent_parts))} leads nowhere inside the archive"
            )
        existing = directory.children.get(base)
        is_dir = header.type is MemberType.DIRECTORY
        if existing is not None and not (existing.kind == "dir" and is_dir):
            del directory.children[base]  # os.RemoveAll
            existing = None
        if is_dir:
            if existing is None:
                directory.children[base] = _Node("dir", base, directory)
        elif header.type is MemberType.SYMLINK:
            directory.children[base] = _Node("symlink", base, directory, header.linkname)
        elif header.type is MemberType.HARDLINK:
            target_parts = [p for p in chroot_path(header.linkname).split("/") if p]
            target = self._walk(self._root, target_parts, follow_last=False)
            if target is None:
                raise _Refused(
                    f"a hard link to {_short(header.linkname)}, which is not in the archive "
                    "before it"
                )
            if target.kind == "dir":
                raise _Refused(f"a hard link to {_short(header.linkname)}, a directory")
            directory.children[base] = _Node(target.kind, base, directory, target.target)
        else:
            kind = "file" if header.type is MemberType.FILE else "other"
            directory.children[base] = _Node(kind, base, directory)

    def _mkdir_all(self, parts: list[str]) -> None:
        """``os.MkdirAll``: create missing directories, following symlinks on the way."""
        current = self._root
        for part in parts:
            assert current.children is not None
            child = current.children.get(part)
            if child is None:
                child = current.children[part] = _Node("dir", part, current)
            elif child.kind == "symlink":
                resolved = self._follow(child, [0])
                if resolved is None:  # dangling, or a loop
                    raise _Refused(
                        f"its directory {_short('/'.join(parts))} leads nowhere inside the archive"
                    )
                child = resolved
            if child.children is None:
                raise _Refused(f"its directory {_short('/'.join(parts))} is not a directory")
            current = child

    def _walk(
        self, start: _Node, parts: list[str], *, follow_last: bool, hops: list[int] | None = None
    ) -> _Node | None:
        """Where *parts* lead from *start* (``..`` stops at the root), or None if nowhere.

        *hops* counts the symlinks followed in the whole resolution, nested ones too
        (Linux's limit is on the total), so a hostile tree cannot make it blow up.
        """
        hops = [0] if hops is None else hops
        current = start
        for index, part in enumerate(parts):
            children = current.children
            if children is None:
                return None  # not a directory
            if part == "..":
                current = current.parent
                continue
            if part in ("", "."):
                continue
            child = children.get(part)
            if child is None:
                return None
            if child.kind == "symlink" and (follow_last or index < len(parts) - 1):
                followed = self._follow(child, hops)
                if followed is None:
                    return None
                child = followed
            current = child
        return current

    def _follow(self, link: _Node, hops: list[int]) -> _Node | None:
        """Where symlink *link* leads, or None (dangling, or too many hops)."""
        hops[0] += 1
        if hops[0] > _MAX_SYMLINK_HOPS:
            return None
        start = self._root if link.target.startswith("/") else link.parent
        return self._walk(start, link.target.split("/"), follow_last=True, hops=hops)


def _check_length(name: str) -> None:
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) + 2 > _PATH_MAX:  # "/" + name + NUL
        raise _Refused(f"a name of {len(encoded)} bytes, longer than Linux allows (PATH_MAX)")
    if any(len(part) > _NAME_MAX for part in encoded.split(b"/")):
        raise _Refused(f"a name component over {_NAME_MAX} bytes (NAME_MAX)")


def _short(name: str) -> str:
    return repr(name if len(name) <= 80 else name[:77] + "...")
