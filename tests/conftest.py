"""Shared paths and helpers for keeptar's tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
FIXTURES = TESTS / "fixtures"
SHARED = Path(os.environ.get("KEEPTAR_SHARED", TESTS.parent.parent / "shared")) / "fixtures"


def fixture_path(name: str) -> Path:
    """Find a fixture by file name in tests/fixtures or ../shared/fixtures[/public]."""
    for folder in (FIXTURES, SHARED, SHARED / "public"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(name)


def load_truth() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / "truth.json").read_text())
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def run_keeptar(
    *args: str, input: bytes | None = None, env: dict[str, str] | None = None, stdin: Any = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the real console entry point in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "keeptar", *args],
        input=input,
        stdin=stdin,
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


@pytest.fixture(scope="session")
def truth() -> dict[str, Any]:
    return load_truth()
