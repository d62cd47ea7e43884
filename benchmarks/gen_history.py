"""CLI over ``tests/history.py``: write a synthetic fleet history through ``StoreWriter``.

.venv/bin/python benchmarks/gen_history.py --store /tmp/hist --replicas 20 --duration-s 86400
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.history import Fleet, Incident, default_incidents, generate, main  # noqa: E402

__all__ = ["Fleet", "Incident", "default_incidents", "generate", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
