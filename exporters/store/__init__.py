"""Parquet store: one writer per replica, DuckDB views for readers (see docs/CONTRACTS.md)."""

from exporters.store.compaction import CompactionPolicy
from exporters.store.reader import open_store, query
from exporters.store.writer import StoreWriter

__all__ = ["CompactionPolicy", "StoreWriter", "open_store", "query"]
