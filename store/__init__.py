"""The store: Delta Lake tables (one folder or object-store prefix), DuckDB views for readers."""

from enginescope.store.compaction import CompactionPolicy
from enginescope.store.legacy import LegacyStoreError
from enginescope.store.location import StoreLocationError, store_location
from enginescope.store.reader import open_store, query
from enginescope.store.writer import StoreWriter

__all__ = [
    "CompactionPolicy",
    "LegacyStoreError",
    "StoreLocationError",
    "StoreWriter",
    "open_store",
    "query",
    "store_location",
]
