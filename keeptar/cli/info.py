"""``keeptar info``: which backend keeptar uses, as whom, and what the cluster accepts."""

from __future__ import annotations

from typing import Any

from keeptar.cli._app import BackendOption, JsonOption, VersionOption, app
from keeptar.cli._output import echo, emit_json, reporting_errors


@app.command("info")
def info_command(
    backend: BackendOption = None,
    as_json: JsonOption = False,
    version: VersionOption = False,
) -> None:
    """Show the storage backend, the user, and the image formats the cluster accepts."""
    from keeptar.backends import open_backend

    with reporting_errors():
        store = open_backend(backend, quiet=True, read_only=True)
        facts = store.server_facts()
        user = store.current_user()
        doc: dict[str, Any] = {
            "backend": store.kind,
            "location": _location(store),
            "user_uuid": user.uuid,
            "is_admin": user.is_admin,
            "uuid_prefix": facts.uuid_prefix,
            "docker_image_formats": list(facts.docker_image_formats),
            "default_replication": facts.default_replication,
        }
    if as_json:
        emit_json(doc)
        return
    for key, value in doc.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        echo(f"{key.replace('_', ' ').capitalize() + ':':<22}{shown}")


def _location(store: object) -> str:
    home = getattr(store, "home", None)
    if home is not None:
        return str(home)
    from keeptar.backends import arvados_settings

    return arvados_settings().get("ARVADOS_API_HOST", "")
