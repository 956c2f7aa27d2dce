"""Keep data model: blocks, locators, manifests and portable data hashes."""

from keeptar.keep.manifest import (
    BLOCK_SIZE,
    EMPTY_BLOCK,
    FileSegment,
    Locator,
    ManifestFile,
    escape_name,
    is_portable_data_hash,
    manifest_from_segments,
    parse_manifest,
    portable_data_hash,
    portable_manifest,
    single_file_manifest,
    unescape_name,
)

__all__ = [
    "BLOCK_SIZE",
    "EMPTY_BLOCK",
    "FileSegment",
    "Locator",
    "ManifestFile",
    "escape_name",
    "is_portable_data_hash",
    "manifest_from_segments",
    "parse_manifest",
    "portable_data_hash",
    "portable_manifest",
    "single_file_manifest",
    "unescape_name",
]
