"""Where a store lives: a local folder or an object-store URL (``s3://bucket/prefix``).

Each store table is a Delta Lake table at ``<store>/<table>``. delta-rs reads credentials and
endpoints from the standard AWS environment variables by itself; the same variables configure the
pyarrow filesystem the writer uploads Parquet files with and the read-only filesystem DuckDB
reads them through, so one ``export AWS_...`` serves every component.
"""

from __future__ import annotations

import argparse
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

# Environment variable -> delta-rs storage option (what object_store understands).
_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "aws_access_key_id",
    "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
    "AWS_SESSION_TOKEN": "aws_session_token",
    "AWS_REGION": "aws_region",
    "AWS_DEFAULT_REGION": "aws_region",
    "AWS_ENDPOINT_URL": "aws_endpoint_url",
    "AWS_ENDPOINT_URL_S3": "aws_endpoint_url",
    "AWS_ALLOW_HTTP": "aws_allow_http",
    "AWS_S3_ALLOW_UNSAFE_RENAME": "aws_s3_allow_unsafe_rename",
    "AWS_CONDITIONAL_PUT": "aws_conditional_put",
    "AWS_S3_LOCKING_PROVIDER": "aws_s3_locking_provider",
}
URL_SCHEMES = ("s3", "s3a", "gs", "az", "abfs", "abfss")


class StoreLocationError(ValueError):
    """A ``--store`` value that is neither a folder nor a supported URL."""


@dataclass(frozen=True)
class StoreLocation:
    """``root`` is an absolute local path or a URL without trailing slash."""

    root: str
    is_local: bool
    storage_options: dict[str, str] = field(default_factory=dict, compare=False)

    def table_uri(self, table: str) -> str:
        return f"{self.root}/{table}"

    @property
    def path(self) -> Path:
        """The local folder (only for a local store)."""
        if not self.is_local:
            raise StoreLocationError(f"store {self.root} is not a local folder")
        return Path(self.root)

    def __str__(self) -> str:
        return self.root


def store_location(store: str | Path | StoreLocation) -> StoreLocation:
    """Parse ``store``: a path (``~`` expanded, made absolute) or ``scheme://bucket/prefix``."""
    if isinstance(store, StoreLocation):
        return store
    text = str(store)
    scheme = urllib.parse.urlsplit(text).scheme if "://" in text else ""
    if scheme in ("", "file"):
        local = text.removeprefix("file://")
        return StoreLocation(str(Path(local).expanduser().resolve()), True)
    if scheme not in URL_SCHEMES:
        raise StoreLocationError(f"--store {text}: unsupported URL scheme {scheme!r} (use a folder or s3://)")
    if not urllib.parse.urlsplit(text).netloc:
        raise StoreLocationError(f"--store {text}: the URL names no bucket")
    return StoreLocation(text.rstrip("/"), False, aws_storage_options())


def aws_storage_options(env: dict[str, str] | None = None) -> dict[str, str]:
    """delta-rs storage options from the standard AWS environment variables."""
    env = dict(os.environ) if env is None else env
    options = {opt: env[var] for var, opt in _AWS_ENV.items() if env.get(var)}
    endpoint = options.get("aws_endpoint_url", "")
    if endpoint.startswith("http://"):
        options.setdefault("aws_allow_http", "true")
    if not {"aws_s3_locking_provider", "aws_s3_allow_unsafe_rename"} & set(options):
        # Safe concurrent commits without a lock service: a new log version is written with
        # a conditional PUT (If-None-Match), so two writers can never both create version N.
        options.setdefault("aws_conditional_put", "etag")
    return options


def store_arg(text: str) -> Path | str:
    """argparse ``type`` for ``--store``: a Path for a folder, the URL text for object storage."""
    try:
        location = store_location(text)
    except StoreLocationError as exc:  # argparse prints this message as the usage error
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return location.path if location.is_local else location.root


def pyarrow_filesystem(location: StoreLocation) -> tuple[pafs.FileSystem, str]:
    """(filesystem, base path inside it) for writing and reading data files of ``location``."""
    if location.is_local:
        return pafs.LocalFileSystem(), location.root
    parts = urllib.parse.urlsplit(location.root)
    if parts.scheme not in ("s3", "s3a"):
        raise StoreLocationError(f"store {location.root}: only s3:// is supported for writing here")
    opts = location.storage_options
    endpoint = opts.get("aws_endpoint_url")
    kwargs: dict[str, Any] = {
        "access_key": opts.get("aws_access_key_id"),
        "secret_key": opts.get("aws_secret_access_key"),
        "session_token": opts.get("aws_session_token"),
        "region": opts.get("aws_region", "us-east-1"),
    }
    if endpoint:
        endpoint_parts = urllib.parse.urlsplit(endpoint)
        kwargs["endpoint_override"] = endpoint_parts.netloc
        kwargs["scheme"] = endpoint_parts.scheme or "https"
    return pafs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None}), parts.netloc + parts.path


def relative_to_root(location: StoreLocation, uri: str) -> str:
    """``uri`` (a data file of the store) relative to the store root."""
    root = location.root
    return uri[len(root) :].lstrip("/") if uri.startswith(root) else uri
