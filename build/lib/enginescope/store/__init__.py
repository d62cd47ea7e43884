"""Parquet store: one writer per replica, DuckDB views for readers (see docs/CONTRACTS.md)."""

from enginescope.store.compaction import CompactionPolicy
from enginescope.store.reader import open_store, query
from enginescope.store.writer import StoreWriter

__all__ = ["CompactionPolicy", "StoreWriter", "open_store", "query"]
