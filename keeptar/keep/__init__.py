"""Keep data model: blocks, locators, manifests and portable data hashes."""

from keeptar.keep.manifest import *  # noqa: F403
from keeptar.keep.manifest import __all__ as __all__
