"""What a SOURCE argument names: the one resolver behind ``load``, ``inspect`` and ``tag``.

The library takes explicit kinds (``keeptar.api``, ``load_image(source_kind=…)``);
the command line works the kind out here, the same way for every command:

- ``-`` is standard input;
- an existing path is a file (a plain file, a named pipe, or a path inside an
  arv-mount collection: ``load`` tells those apart);
- a collection PDH or UUID is a collection;
- anything spelled like a path (``/``, ``./``, ``../``, ``~``, an archive suffix)
  is a file, so that a missing one fails as "cannot open";
- anything else is a stored image's ``REPO[:TAG]`` or image ID prefix.
"""

import enum
from pathlib import Path

__all__ = ["SourceArg", "classify_source"]

_ARCHIVE_SUFFIXES = (".tar", ".tgz", ".gz", ".zst", ".zstd", ".xz", ".bz2", ".tbz2", ".txz")


class SourceArg(str, enum.Enum):
    """The kinds of thing a SOURCE argument can name."""

    STDIN = "stdin"
    FILE = "file"
    COLLECTION = "collection"
    IMAGE = "image"

    @property
    def is_stored(self) -> bool:
        """Whether it names something already in Keep (a collection or an image)."""
        return self in (SourceArg.COLLECTION, SourceArg.IMAGE)


def classify_source(argument: str) -> SourceArg:
    """The kind of thing *argument* names (see the module docstring)."""
    if argument == "-":
        return SourceArg.STDIN
    if Path(argument).exists():
        return SourceArg.FILE
    from keeptar.keep.manifest import is_collection_ref

    if is_collection_ref(argument):
        return SourceArg.COLLECTION
    if (
        argument.startswith(("/", "./", "../", "~"))
        or argument.lower().endswith(_ARCHIVE_SUFFIXES)
        or "\\" in argument
    ):
        return SourceArg.FILE
    return SourceArg.IMAGE
