"""Image references (``repo[:tag]``) as Arvados stores them in ``docker_image_repo+tag`` links.

The rules follow ``arv-keepdocker``: the tag is what follows the last ``:``
when it matches ``\\w[-.\\w]{0,127}`` (so ``host:5000/repo`` has no tag), the
default tag is ``latest``, and ``host:443/`` loses its port.  Names from
archives are shortened the way ``docker images`` shows them
(``docker.io/library/x`` → ``x``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from keeptar.errors import UsageError

__all__ = ["ImageRef", "familiar_name", "parse_image_ref"]

_TAG = re.compile(r":(\w[-.\w]{0,127})$")
_REPO = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+|__)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+|__)*)*")
_HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]+)?")


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A repository and tag."""

    repo: str
    tag: str

    def __str__(self) -> str:
        return f"{self.repo}:{self.tag}"


def familiar_name(name: str) -> str:
    """Docker's short form: without ``docker.io/library/`` or ``docker.io/``."""
    for prefix in (
        "docker.io/library/",
        "index.docker.io/library/",
        "docker.io/",
        "index.docker.io/",
    ):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def parse_image_ref(text: str) -> ImageRef:
    """Parse ``repo[:tag]``, adding ``latest`` when there is no tag.

    Raises:
        UsageError: *text* is not a valid Docker repository reference.
    """
    text = text.strip()
    if "@" in text:
        raise UsageError(f"{text!r}: digest references are not image names; use the image ID")
    match = _TAG.search(text)
    repo, tag = (text[: match.start()], match.group(1)) if match else (text, "latest")
    repo = familiar_name(repo)
    first, _, rest = repo.partition("/")
    if rest and first.endswith(":443"):
        repo = f"{first[:-4]}/{rest}"
        first = first[:-4]
    path = rest if rest and ("." in first or ":" in first or first == "localhost") else repo
    host_ok = path is repo or _HOST.fullmatch(first)
    if not repo or not host_ok or not _REPO.fullmatch(path):
        raise UsageError(
            f"{text!r} is not a valid image name: use lowercase repository[:tag], "
            "for example library/ubuntu:22.04"
        )
    return ImageRef(repo, tag)
