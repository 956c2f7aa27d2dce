"""Image references (``repo:tag``) as Arvados stores them in ``docker_image_repo+tag`` links.

A name is stored exactly as given: as typed after ``--tag`` or as written in
the archive's ``RepoTags``, never shortened (``docker.io/library/ubuntu:22.04``
stays that).  ``arvados-cwl-runner`` and the API server match link names
verbatim, so a rewritten name would miss.  ``--tag`` follows ``arv-keepdocker``:
the tag is what follows the last ``:`` when it matches ``\\w[-.\\w]{0,127}``
(so ``host:5000/repo`` has no tag), the default tag is ``latest``, and
``host:443/`` loses its redundant port.

Validity follows Docker's reference grammar (``distribution/reference``
``regexp.go`` and ``normalize.go``, as ``docker tag`` and ``docker load``
apply it): lowercase path components, a tag of at most 128 characters, no
name that is 64 hex digits (it reads as an image ID), no ``sha256`` name, no
digest.  Where Docker versions differ, the stricter rule of Docker 20.10
holds, because ``docker load`` refuses a whole archive over one name it
cannot parse: a repository name of at most 255 characters counted with its
registry (``docker.io/library/x``), no upper case in a first component
without ``.`` or ``:``, no IPv6 registry.

Matching (``keeptar images REPO[:TAG]``, ``--image``) is lenient: spellings
Docker treats as one repository (``ubuntu``, ``library/ubuntu``,
``docker.io/library/ubuntu``…) match each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from keeptar.errors import UsageError

__all__ = [
    "MAX_NAME_LENGTH",
    "ImageRef",
    "abbreviate",
    "collection_name_problem",
    "familiar_name",
    "link_name_problem",
    "parse_image_ref",
    "reference_problem",
    "same_repository_names",
    "split_image_ref",
]

# distribution/reference regexp.go; Go's \w is ASCII, hence re.ASCII.
_TAG = r"[\w][\w.-]{0,127}"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"  # 20.10: no [IPv6]
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*", re.ASCII)
_TAG_RE = re.compile(_TAG, re.ASCII)
_IMAGE_ID = re.compile(r"[a-f0-9]{64}")
# arv-keepdocker's own split (keepdocker.py): ``image ends with :valid-tag``.
_KEEPDOCKER_TAG = re.compile(r":\w[-.\w]{0,127}$")

_DEFAULT_DOMAIN = "docker.io"
_LEGACY_DOMAIN = "index.docker.io"
_OFFICIAL = "library/"
_MAX_NAME = 255  # reference.NameTotalLengthMax
_MAX_TEXT = 1024  # longer than any valid reference; checked before any regex runs


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A repository and tag."""

    repo: str
    tag: str

    def __str__(self) -> str:
        return f"{self.repo}:{self.tag}"


def abbreviate(text: str, limit: int = 80) -> str:
    """*text* quoted for a one-line message, cut to about *limit* characters."""
    return repr(text) if len(text) <= limit else repr(text[: limit - 3]) + "..."


def _split_docker_domain(name: str) -> tuple[str, str]:
    """``splitDockerDomain``: the registry and the path Docker resolves *name* (no tag) to.

    As Docker 20.10 has it; later versions also take an upper-case first component
    (``Foo/bar``) for a registry, which 20.10 refuses as a non-lowercase name.
    """
    first, slash, rest = name.partition("/")
    if not slash:
        domain, remote = _DEFAULT_DOMAIN, name
    elif first == "localhost" or any(c in first for c in ".:"):
        domain, remote = first, rest
    else:
        domain, remote = _DEFAULT_DOMAIN, name
    if domain == _LEGACY_DOMAIN:
        domain = _DEFAULT_DOMAIN
    if domain == _DEFAULT_DOMAIN and "/" not in remote:
        remote = _OFFICIAL + remote
    return domain, remote


def familiar_name(name: str) -> str:
    """Docker's short form of a repository name (no tag): ``docker.io/library/x`` → ``x``.

    Only for matching and display; stored names are never rewritten.
    """
    domain, remote = _split_docker_domain(name)
    if domain != _DEFAULT_DOMAIN:
        return f"{domain}/{remote}"
    short = remote.removeprefix(_OFFICIAL)
    return short if "/" not in short else remote


def same_repository_names(name: str) -> list[str]:
    """Every spelling of repository *name* (no tag) that Docker resolves to the same one."""
    domain, remote = _split_docker_domain(name)
    if domain != _DEFAULT_DOMAIN:
        return [f"{domain}/{remote}"]
    short = familiar_name(name)
    spellings = [short]
    if "/" not in short:
        spellings.append(_OFFICIAL + short)
        spellings += [f"{d}/{_OFFICIAL}{short}" for d in (_DEFAULT_DOMAIN, _LEGACY_DOMAIN)]
    spellings += [f"{d}/{short}" for d in (_DEFAULT_DOMAIN, _LEGACY_DOMAIN)]
    return spellings


def _split_tag(text: str) -> tuple[str, str | None]:
    """Repository and tag as the grammar reads them: the tag is after the last ``:`` and ``/``."""
    head, colon, tail = text.rpartition(":")
    if colon and "/" not in tail:
        return head, tail
    return text, None


def reference_problem(text: str) -> str | None:
    """Why Docker would refuse ``repo:tag`` *text* as an image name, or None if it is valid.

    The rules of ``ParseNormalizedNamed`` plus what ``docker load`` and the
    reference store add: a tag is required, no digest, no ``sha256`` name.
    """
    if not text:
        return "the name is empty"
    if len(text) > _MAX_TEXT:
        return f"the name is {len(text)} characters long"
    if _IMAGE_ID.fullmatch(text):
        return "64 hex digits read as an image ID, not a name"
    if "@" in text:
        return "a digest reference (@…) is not a name to register; use the image ID"
    repo, tag = _split_tag(text)
    if not repo:
        return "the repository name is empty"
    if tag is None:
        return "it has no :TAG"
    if not _TAG_RE.fullmatch(tag):
        return (
            "invalid tag: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"
        )
    domain, remote = _split_docker_domain(repo)
    if remote.lower() != remote:
        return "the repository name must be lowercase"
    full = f"{domain}/{remote}"
    if not _NAME.fullmatch(full):
        return "invalid reference format (see Docker's reference grammar)"
    if len(full) > _MAX_NAME:
        return (
            f"the repository name is over {_MAX_NAME} characters "
            f"({len(full)} as Docker counts it, with {domain}/)"
        )
    if familiar_name(repo) == "sha256":
        return "'sha256' is reserved: it reads as a digest"
    return None


def split_image_ref(text: str) -> ImageRef:
    """``REPO[:TAG]`` split as ``arv-keepdocker`` splits it, ``latest`` by default; not checked."""
    if _KEEPDOCKER_TAG.search(text):
        repo, _, tag = text.rpartition(":")
        return ImageRef(repo, tag)
    return ImageRef(text, "latest")


def parse_image_ref(text: str) -> ImageRef:
    """A name to register, given as ``arv-keepdocker`` takes one: ``REPO[:TAG]``.

    The name is kept as typed, with two ``arv-keepdocker`` rules: ``latest``
    when there is no tag, and ``host:443/`` becomes ``host/``.

    Raises:
        UsageError: Docker's reference grammar refuses the name.
    """
    ref = split_image_ref(text)
    hostport, slash, path = ref.repo.partition("/")
    if slash and hostport.endswith(":443"):
        ref = ImageRef(f"{hostport[:-4]}/{path}", ref.tag)
    problem = reference_problem(text if _IMAGE_ID.fullmatch(text) else str(ref))
    if problem is not None:
        raise UsageError(f"{abbreviate(text)} is not a valid image name: {problem}")
    return ref


# ---- names the Arvados API server refuses ---------------------------------------------

MAX_NAME_LENGTH = 255  #: ``character varying(255)``: collection and link names


def collection_name_problem(name: str) -> str | None:
    """Why the API server would refuse *name* for a collection (422), or None.

    ``ArvadosModel#ensure_filesystem_compatible_name`` with the default
    ``Collections.ForwardSlashNameSubstitution: ""``, and the column's 255 characters.
    """
    if name in (".", ".."):
        return "a collection name cannot be '.' or '..'"
    if "/" in name:
        return "a collection name cannot contain '/'"
    if len(name) > MAX_NAME_LENGTH:
        return f"a collection name is at most {MAX_NAME_LENGTH} characters; this one is {len(name)}"
    return None


def link_name_problem(name: str) -> str | None:
    """Why the API server would refuse *name* for a link (422), or None."""
    if len(name) > MAX_NAME_LENGTH:
        return f"a link name is at most {MAX_NAME_LENGTH} characters; this one is {len(name)}"
    return None
