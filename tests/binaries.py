"""External binaries some tests run (Debian's ``promtool`` and ``prometheus``).

Where one is missing the test is skipped on a workstation but fails under CI (the ``CI``
environment variable set, as GitHub Actions, GitLab CI and most runners set it), so CI cannot
pass by silently skipping the checks it exists for. Use :func:`require` in the test, or in an
autouse fixture for a whole module; it returns the binary's path.
"""

from __future__ import annotations

import os
import shutil

import pytest

INSTALL_HINT = {"promtool": "apt-get install prometheus", "prometheus": "apt-get install prometheus"}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(binary: str) -> str:
    """Path of ``binary``; skips the calling test if it is not on PATH, or fails it under CI."""
    path = shutil.which(binary)
    if path is not None:
        return path
    hint = INSTALL_HINT.get(binary, f"install {binary}")
    if in_ci():
        pytest.fail(
            f"{binary} is not on PATH ({hint}) and CI is set: this test must run in CI", pytrace=False
        )
    pytest.skip(f"{binary} is not on PATH ({hint})")
