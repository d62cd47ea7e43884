"""Read-only sandbox for untrusted ad-hoc SQL on a store connection.

DuckDB 2.0.1 has no read-only variant of ``allowed_directories``: a directory allowed for
reading also accepts ``COPY ... TO`` and ``ATTACH``. So the sandbox disables the local
filesystem entirely and mounts the store through an fsspec filesystem (``esstore://``) that
only opens files for reading and only inside the store; ``enable_external_access=false``
blocks everything else and ``lock_configuration`` stops SQL from undoing it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import duckdb

from enginescope.store.location import StoreLocation, pyarrow_filesystem

STORE_PROTOCOL = "esstore"
ANCHOR_PROTOCOL = "esanchor"


def _read_only_fs(scheme: str, root: Path) -> Any:
    try:
        from fsspec.implementations.local import LocalFileSystem
    except ImportError as exc:  # pragma: no cover - fsspec is a declared dependency
        raise RuntimeError("open_store(sandbox=True) needs the 'fsspec' package") from exc

    root_real = os.path.realpath(root)

    class ReadOnlyRootFS(LocalFileSystem):
        """``<scheme>://<relative path>`` -> a file under ``root``; every write raises."""

        protocol = (scheme,)
        cachable = False

        @classmethod
        def _strip_protocol(cls, path: Any) -> str:
            text = str(path)
            for prefix in (f"{scheme}://", f"{scheme}:"):
                text = text.removeprefix(prefix)
            if not (text == root_real or text.startswith(root_real + os.sep)):  # fsspec strips repeatedly
                text = os.path.join(root_real, text.lstrip("/"))
            real = os.path.realpath(text)
            if real != root_real and not real.startswith(root_real + os.sep):
                raise PermissionError(f"sandbox: {path} is outside the store")
            return real

        def _open(self, path: Any, mode: str = "rb", **kwargs: Any) -> Any:
            if mode != "rb":
                raise PermissionError(f"sandbox: the store is read-only, cannot write {path}")
            return super()._open(path, mode="rb", **kwargs)

        def glob(self, path: Any, **kwargs: Any) -> list[str]:
            # Views pass exact file lists; wildcards are not offered inside the sandbox.
            text = str(path)
            if any(ch in text for ch in "*?["):
                raise PermissionError("sandbox: glob patterns are not supported, query the views")
            return [text] if os.path.isfile(self._strip_protocol(text)) else []

        def _refuse(self, *args: Any, **kwargs: Any) -> None:
            raise PermissionError("sandbox: the store is read-only")

        rm = rm_file = rmdir = mkdir = makedirs = touch = mv = cp_file = put_file = _refuse

    return ReadOnlyRootFS()


def _read_only_object_store(location: StoreLocation) -> Any:
    """fsspec filesystem answering ``s3://...`` reads with pyarrow's S3 client; writes raise.

    DuckDB's own S3 support is an extension it would download at run time; this serves the
    same URLs from packages already installed, with the same AWS environment variables."""
    from fsspec.implementations.arrow import ArrowFSWrapper

    arrow_fs, _ = pyarrow_filesystem(location)
    scheme = location.root.split("://", 1)[0]

    class ReadOnlyObjectStore(ArrowFSWrapper):
        protocol = (scheme,)
        cachable = False

        @classmethod
        def _strip_protocol(cls, path: Any) -> str:
            text = str(path)
            return text.split("://", 1)[1] if "://" in text else text

        def _open(self, path: Any, mode: str = "rb", **kwargs: Any) -> Any:
            if mode != "rb":
                raise PermissionError(f"the store is read-only here, cannot write {path}")
            return super()._open(path, mode="rb", **kwargs)

        def _refuse(self, *args: Any, **kwargs: Any) -> None:
            raise PermissionError("the store is read-only here")

        rm = rm_file = rmdir = mkdir = makedirs = touch = mv = cp_file = put_file = _refuse

    return ReadOnlyObjectStore(arrow_fs)


def mount_object_store(con: duckdb.DuckDBPyConnection, location: StoreLocation) -> None:
    """Let ``con`` read the data files of an object-store ``location`` (read-only)."""
    con.register_filesystem(_read_only_object_store(location))


def mount_read_only(
    con: duckdb.DuckDBPyConnection, location: StoreLocation, anchors: Path
) -> tuple[str, str]:
    """Register read-only filesystems for the store and the anchors; return their path prefixes."""
    con.register_filesystem(_read_only_fs(ANCHOR_PROTOCOL, anchors))
    if not location.is_local:
        mount_object_store(con, location)
        _ALLOWED[id(con)] = location.root
        return location.root, f"{ANCHOR_PROTOCOL}://"
    con.register_filesystem(_read_only_fs(STORE_PROTOCOL, location.path))
    return f"{STORE_PROTOCOL}://", f"{ANCHOR_PROTOCOL}://"


_ALLOWED: dict[int, str] = {}  # connection id -> object-store root also allowed by lock_down


def lock_down(con: duckdb.DuckDBPyConnection) -> None:
    """Forbid local files, extensions and config changes for the rest of the connection's life."""
    allowed = [f"{STORE_PROTOCOL}://", f"{ANCHOR_PROTOCOL}://"]
    if id(con) in _ALLOWED:
        allowed.append(_ALLOWED.pop(id(con)) + "/")
    con.execute(f"SET allowed_directories = {allowed!r}")
    con.execute("SET enable_external_access = false")
    con.execute("SET disabled_filesystems = 'LocalFileSystem'")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")
