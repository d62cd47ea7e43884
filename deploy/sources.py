"""Ship enginescope's source into a Modal image under its one import namespace.

The installed distribution maps folders of this repository (``collectors/``, ``exporters/``, ...) to
``enginescope.collectors``, ``enginescope.exporters``, ...  ``Image.add_local_python_source`` copies
one folder per top-level import name, which would miss the mapped sub-packages, so each package folder
is added at ``/root/enginescope/<name>``; ``/root`` is on a Modal container's ``sys.path``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path

import modal

REMOTE_ROOT = "/root/enginescope"
# What the images pip-install: pyproject.toml's [project] dependencies and its extras, which a
# Modal image cannot read (it gets our sources, not the distribution); a test keeps them equal.
CORE_REQUIREMENTS = (
    "opentelemetry-sdk>=1.30", "opentelemetry-exporter-otlp>=1.30", "prometheus-client>=0.20", "duckdb>=1.1",
    "nvidia-ml-py>=12.0", "pyarrow>=15", "numpy>=1.24", "deltalake>=1.6,<2",
)  # fmt: skip
DASHBOARD_REQUIREMENTS = ("streamlit>=1.40", "polars>=1.0", "fsspec>=2023.1")
MODAL_REQUIREMENTS = ("modal>=1.6.4",)
IGNORE = ["**/__pycache__", "**/*.pyc"]


def package_dir(name: str) -> Path:
    """Where ``enginescope.<name>`` (or ``enginescope`` itself for ``""``) lives on this machine."""
    module = importlib.import_module(f"enginescope.{name}" if name else "enginescope")
    return Path(next(iter(module.__path__))).resolve()


def with_sources(image: modal.Image, packages: Iterable[str]) -> modal.Image:
    """``image`` plus the ``enginescope`` root package and each named sub-package (e.g. ``"collectors"``)."""
    image = image.add_local_dir(package_dir(""), REMOTE_ROOT, ignore=IGNORE)
    for name in packages:
        image = image.add_local_dir(package_dir(name), f"{REMOTE_ROOT}/{name}", ignore=IGNORE)
    return image
