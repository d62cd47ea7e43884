"""enginescope: observability for LLM inference engines (composition root: CLI, sidecar, demo)."""

__version__ = "0.1.0"
