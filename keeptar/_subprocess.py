"""Child processes (``docker save``, a migration container): no credentials in, none out.

Every child keeptar starts gets :func:`child_environment`: the parent's
environment minus anything that looks like a credential.  A variable is
dropped when its name, upper-cased,

* contains ``TOKEN``, ``SECRET``, ``PASSW`` (PASSWORD, PASSWD) or ``CREDENTIAL``
  anywhere (``ARVADOS_API_TOKEN``, ``GITHUB_TOKEN``, ``AWS_SECRET_ACCESS_KEY``), or
* has ``KEY``, ``KEYS``, ``APIKEY``, ``AUTH`` or ``PASS`` as one of its
  ``_``-separated parts (``API_KEY``, ``SSH_AUTH_SOCK``, ``REGISTRY_PASS``).

Everything else is kept, so ``DOCKER_HOST``, ``DOCKER_CONFIG``, ``DOCKER_CERT_PATH``,
``PATH``, ``HOME``, ``TMPDIR`` and the locale reach the child unchanged.

What a child writes on stderr is shown only through :func:`child_message`,
which removes the values of those variables and every API token keeptar
knows of (:func:`keeptar.backends.arvados.scrub`) before it is printed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["child_environment", "child_message", "is_secret_name"]

_SECRET_WORDS = ("TOKEN", "SECRET", "PASSW", "CREDENTIAL")
_SECRET_PARTS = frozenset({"KEY", "KEYS", "APIKEY", "AUTH", "PASS"})
_MIN_SECRET = 6  # shorter values ("1", "yes") would blank out ordinary words


def is_secret_name(name: str) -> bool:
    """Whether the environment variable *name* may hold a credential (see the module docs)."""
    upper = name.upper()
    if any(word in upper for word in _SECRET_WORDS):
        return True
    return any(part in _SECRET_PARTS for part in upper.split("_"))


def child_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """*environ* (default ``os.environ``) without the variables :func:`is_secret_name` flags."""
    source = os.environ if environ is None else environ
    return {name: value for name, value in source.items() if not is_secret_name(name)}


def child_message(raw: bytes | str, limit: int = 300) -> str:
    """A child's stderr as one line of at most *limit* characters, with secrets removed.

    Secrets are removed before the text is cut, so no part of one survives the cut.
    """
    from keeptar.backends.arvados import scrub

    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    for name, value in os.environ.items():
        if is_secret_name(name) and len(value) >= _MIN_SECRET:
            text = text.replace(value, "***")
    return " ".join(scrub(text).split())[:limit]
