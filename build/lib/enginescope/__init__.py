"""enginescope: observability for LLM inference engines (composition root: CLI, sidecar, demo).

The repository's top-level folders (``collectors/``, ``exporters/``, ...) install as sub-packages
``enginescope.collectors``, ``enginescope.exporters``, ... (see ``[tool.setuptools.package-dir]``).
"""

from pathlib import Path

__version__ = "0.2.0"

# In a source checkout the sub-packages are siblings of this folder, not children as in a wheel.
# Listing the checkout root in __path__ makes each one resolve to its own folder, which Modal needs:
# a deployed function's file must lie under its top-level package's __path__.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "collectors" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 (a package's __path__ exists at import time)
