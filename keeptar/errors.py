"""keeptar's error types and the exit code each one maps to.

Every failure keeptar knows about is a :class:`KeeptarError` subclass.  The CLI
turns one into a single line on stderr and the documented exit code below; no
other module exits the process.

=====  ==========================  ==============================================
code   error                       meaning
=====  ==========================  ==============================================
1      KeeptarError                any other failure keeptar recognised
2      UsageError                  bad command-line usage or a bad reference
3      ArchiveError                the input is not a readable image archive
4      VerificationError           digests in the archive do not match its data
5      BackendError                the storage backend (Keep, API) failed
6      NotFoundError               a collection, project or image does not exist
7      ConflictError               the request conflicts with what is stored
70     (any other exception)       a bug in keeptar (``KEEPTAR_DEBUG=1`` shows it)
130    (KeyboardInterrupt)         interrupted by Ctrl-C
=====  ==========================  ==============================================
"""

from __future__ import annotations

from typing import TypeVar

__all__ = [
    "ArchiveError",
    "BackendError",
    "ConflictError",
    "KeeptarError",
    "NotFoundError",
    "Parameter",
    "UsageError",
    "VerificationError",
    "cli_message",
    "naming",
]


class Parameter:
    """A caller's parameter that an error message names, by its Python name.

    The library's message calls it "the NAME argument"; the command line, which
    knows its own flags, calls it ``--NAME`` (underscores as dashes): see
    :func:`cli_message`.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Parameter({self.name!r})"

    def python(self) -> str:
        """How the library's message names it."""
        return f"the {self.name} argument"

    def flag(self) -> str:
        """How the command line's message names it."""
        return "--" + self.name.replace("_", "-")


class KeeptarError(Exception):
    """Base class of every error keeptar reports; ``exit_code`` is its CLI exit status.

    ``parts`` is set (by :func:`naming`) when the message names caller parameters:
    the text pieces and :class:`Parameter` s it was made of.
    """

    exit_code = 1
    parts: tuple[str | Parameter, ...] = ()


_E = TypeVar("_E", bound=KeeptarError)


def naming(cls: type[_E], *parts: str | Parameter) -> _E:
    """An error of *cls* whose message is *parts* joined, each :class:`Parameter` in Python terms.

    Data in the text parts is never interpreted (no format strings), so hostile
    names cannot forge a parameter.
    """
    error = cls("".join(part if isinstance(part, str) else part.python() for part in parts))
    error.parts = parts
    return error


def cli_message(error: KeeptarError) -> str:
    """*error*'s message with each parameter it names spelled as its command-line flag."""
    if not error.parts:
        return str(error)
    return "".join(part if isinstance(part, str) else part.flag() for part in error.parts)


class UsageError(KeeptarError):
    """The caller asked for something that cannot be done as asked."""

    exit_code = 2


class ArchiveError(KeeptarError):
    """The input is not a well-formed image archive.

    Args:
        message: what is wrong, naming the member involved.
        offset: the byte offset in the (decompressed) stream where it was found.
    """

    exit_code = 3

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset
        super().__init__(message if offset is None else f"{message} at byte {offset}")


class VerificationError(ArchiveError):
    """A digest recorded in the archive does not match the bytes it names."""

    exit_code = 4


class BackendError(KeeptarError):
    """Keep or the API server failed or could not be reached."""

    exit_code = 5


class NotFoundError(KeeptarError):
    """A named collection, project, link or image does not exist."""

    exit_code = 6


class ConflictError(KeeptarError):
    """What was asked conflicts with what the backend already holds."""

    exit_code = 7
