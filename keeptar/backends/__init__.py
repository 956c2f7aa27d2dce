"""Storage backends behind one narrow interface: the embedded store and Arvados.

:func:`open_backend` picks one:

1. ``kind`` (the CLI's ``--backend``) or ``KEEPTAR_BACKEND``: ``local`` or ``arvados``;
2. otherwise Arvados, if a cluster is configured (``ARVADOS_API_HOST`` and
   ``ARVADOS_API_TOKEN``, in the environment or the SDK's settings file);
3. otherwise the embedded store in ``KEEPTAR_HOME``.
"""

from __future__ import annotations

import os
from pathlib import Path

from keeptar.backends._protocol import Backend, Filters, Record, ServerFacts, User
from keeptar.errors import UsageError

__all__ = [
    "BACKEND_KINDS",
    "Backend",
    "Filters",
    "Record",
    "ServerFacts",
    "User",
    "arvados_settings",
    "open_backend",
]

BACKEND_KINDS = ("local", "arvados")


def arvados_settings() -> dict[str, str]:
    """ARVADOS_* settings from the SDK's settings file, overridden by the environment."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    settings: dict[str, str] = {}
    path = Path(base) / "arvados" / "settings.conf"
    try:
        for line in path.read_text().splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and key.startswith("ARVADOS_"):
                settings[key] = value.strip()
    except OSError:
        pass
    settings.update({k: v for k, v in os.environ.items() if k.startswith("ARVADOS_")})
    return settings


def _cluster_configured() -> bool:
    settings = arvados_settings()
    return bool(settings.get("ARVADOS_API_HOST") and settings.get("ARVADOS_API_TOKEN"))


def open_backend(
    kind: str | None = None,
    *,
    quiet: bool = False,
    read_only: bool = False,
    retries: int | None = None,
) -> Backend:
    """Return the backend to use (see the module docstring).

    *quiet* silences the Arvados SDK's logging, for callers that report errors themselves.
    *read_only* is for commands that only read: the embedded store then opens its
    catalog without writing anything, so they work on a full disk.
    *retries* overrides ``KEEPTAR_RETRIES`` for Arvados requests (``--retries``).

    Raises:
        UsageError: *kind* or ``KEEPTAR_BACKEND`` names no backend, or Arvados
            was asked for with no cluster configured.
        BackendError: the cluster cannot be reached.
    """
    chosen = kind or os.environ.get("KEEPTAR_BACKEND") or None
    if chosen is not None and chosen not in BACKEND_KINDS:
        raise UsageError(f"unknown backend {chosen!r}: choose local or arvados")
    if chosen is None:
        chosen = "arvados" if _cluster_configured() else "local"
    if chosen == "arvados":
        if not _cluster_configured():
            raise UsageError(
                "the arvados backend needs ARVADOS_API_HOST and ARVADOS_API_TOKEN "
                "(environment or ~/.config/arvados/settings.conf)"
            )
        from keeptar.backends.arvados import ArvadosBackend

        return ArvadosBackend(quiet=quiet, num_retries=retries)
    from keeptar.backends.embedded import EmbeddedBackend

    return EmbeddedBackend(read_only=read_only)
