"""Command-line values of plain types, converted without importing pydantic.

typer 0.29 converts every parameter value through a pydantic ``TypeAdapter``
(``typer/_adapters.py``), even a ``str`` that is already a ``str`` or an
optional flag left at ``None``.  Importing pydantic and building the adapters
costs more than all the rest of ``keeptar inspect``'s start-up.

:func:`light_coercion` gives each parameter whose value needs no conversion
(a ``str``, a ``bool`` flag, a member or exact value of an Enum) a converter
that returns it as it is, and hands anything else to typer's own pydantic
converter, so results and error messages stay typer's.  It uses typer
internals (``_TyperParameter._runtime_param``, ``typer._coercion``); if they
change, it does nothing and typer works as usual, only slower
(``tests/test_startup.py`` then fails and says so).
"""

from __future__ import annotations

import enum
from typing import Any

__all__ = ["light_coercion"]

try:
    from typer._coercion import RuntimeParam, build_runtime_param
except ImportError:  # pragma: no cover - another typer: leave its conversion alone
    RuntimeParam = None  # type: ignore[assignment,misc]


if RuntimeParam is not None:

    # No @dataclass here: it adds no field, so RuntimeParam's generated methods
    # serve as they are, and decorating again would compile them anew (~1 ms).
    class _PassThrough(RuntimeParam):
        """Values that already have the parameter's type are returned unchanged."""

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            kind = self.annotation
            if kind is str and isinstance(value, str):
                return value
            if kind is bool and isinstance(value, bool):
                return value
            if isinstance(kind, type) and issubclass(kind, enum.Enum):
                if isinstance(value, kind):
                    return value
                exact = self.parameter_info.case_sensitive and ctx.token_normalize_func is None
                if exact and isinstance(value, str):
                    for choice in kind:
                        if str(choice.value) == value:
                            return choice
            # Anything else (a bad choice, a bool from an environment variable…):
            # typer's own conversion, with its own error messages.
            typer_param = build_runtime_param(param.type_descriptor)
            return typer_param._coerce_value(value, param=param, ctx=ctx)


def _is_plain(annotation: Any) -> bool:
    if annotation is str or annotation is bool:
        return True
    return isinstance(annotation, type) and issubclass(annotation, enum.Enum)


def light_coercion(command: Any, ctx: Any) -> None:
    """Give *command*'s parameters of plain types a converter that needs no pydantic.

    *ctx* is the click context the command is parsed in, or its parent's: it
    decides the ``--help`` option, a parameter too.
    """
    if RuntimeParam is None or command is None:  # pragma: no cover
        return
    for param in command.get_params(ctx):
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or getattr(param, "_runtime_param", False) is not None:
            continue  # not a typer parameter, or its converter is already built
        info = descriptor.parameter_info
        if (
            _is_plain(descriptor.annotation)
            and info.parser is None
            and descriptor.file_annotation is None
            and param.nargs == 1
            and not param.multiple
        ):
            param._runtime_param = _PassThrough(
                parameter_info=info, annotation=descriptor.annotation
            )
