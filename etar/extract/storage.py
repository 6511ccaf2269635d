"""Objects in S3 (versitygw in both stacks) via ``minio``, the S3 client library.

Objects of a minute are named by ``etar.minute.Minute``: ``YYYY-MM-DD_HH-MM.parquet``
(extract) and ``YYYY-MM-DD_HH-MM.json`` (report). Writing a name again replaces the object.
One client per process and endpoint (``client``); reads and stats go through the helpers here
(``read_bytes``, ``read_json``, ``stat``, ``exists``), which name a missing object clearly.

Those names sort in time order, so listings stay bounded however old the bucket is: a window
of minutes is listed per day prefix (``list_minutes``), and expired objects are the first
names of the bucket (``expire_minutes``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from minio import Minio
from minio.error import S3Error

from etar.config import Settings, get_settings
from etar.errors import EtarError
from etar.minute import InvalidMinute, Minute

PART_SIZE = 16 * 1024 * 1024


class ObjectMissing(EtarError):
    """The object is not in the bucket."""


def client(settings: Settings | None = None) -> Minio:
    """The process's ``minio`` client for the configured endpoint and credentials."""
    settings = settings or get_settings()
    return _client(settings.s3_endpoint, settings.s3_access_key,
                   settings.s3_secret_key.get_secret_value(), settings.s3_region)


@lru_cache(maxsize=8)
def _client(endpoint: str, access_key: str, secret_key: str, region: str) -> Minio:
    url = urlsplit(endpoint)
    return Minio(url.netloc, access_key=access_key, secret_key=secret_key,
                 secure=url.scheme == "https", region=region)


def ensure_bucket(settings: Settings | None = None) -> None:
    """Create the bucket unless it exists (idempotent)."""
    settings = settings or get_settings()
    s3 = client(settings)
    if not s3.bucket_exists(settings.s3_bucket):
        s3.make_bucket(settings.s3_bucket)


def drop_bucket(settings: Settings | None = None) -> None:
    """Delete the bucket and every object in it (what a test or a benchmark created)."""
    from minio.deleteobjects import DeleteObject

    settings = settings or get_settings()
    s3 = client(settings)
    if not s3.bucket_exists(settings.s3_bucket):
        return
    names = [DeleteObject(item.object_name) for item in
             s3.list_objects(settings.s3_bucket, recursive=True) if item.object_name]
    errors = list(s3.remove_objects(settings.s3_bucket, names))
    if errors:
        raise EtarError(f"could not empty bucket {settings.s3_bucket}: {errors[0]}")
    s3.remove_bucket(settings.s3_bucket)


def storage_options(settings: Settings | None = None) -> dict[str, Any]:
    """fsspec/s3fs options for ``s3://`` paths in pandas and pyarrow.

    ``pd.read_parquet("s3://etar/2026-11-27_10-30.parquet", storage_options=storage_options())``
    """
    settings = settings or get_settings()
    return {"key": settings.s3_access_key, "secret": settings.s3_secret_key.get_secret_value(),
            "client_kwargs": {"endpoint_url": settings.s3_endpoint,
                              "region_name": settings.s3_region}}


def s3a_url(name: str, settings: Settings | None = None) -> str:
    """The object as Spark's S3A connector addresses it."""
    settings = settings or get_settings()
    return f"s3a://{settings.s3_bucket}/{name}"


def upload(name: str, stream: BinaryIO, content_type: str, length: int = -1,
           settings: Settings | None = None) -> None:
    """Stream ``stream`` into the bucket (multipart when the length is unknown)."""
    settings = settings or get_settings()
    client(settings).put_object(settings.s3_bucket, name, stream, length,
                                content_type=content_type, part_size=PART_SIZE)


_MISSING = ("NoSuchKey", "NoSuchObject")


@dataclass(frozen=True)
class ObjectStat:
    """What the bucket says about one object."""

    name: str
    size: int
    last_modified: datetime | None


@contextmanager
def _missing_as_object_missing(name: str, settings: Settings) -> Iterator[None]:
    """S3's "no such key / bucket" for ``name`` raised as ObjectMissing; other errors as is."""
    try:
        yield
    except S3Error as exc:
        if exc.code in _MISSING:
            raise ObjectMissing(f"s3://{settings.s3_bucket}/{name} does not exist") from exc
        raise


def read_bytes(name: str, settings: Settings | None = None) -> bytes:
    """The object stored under ``name``, whole; ObjectMissing when there is none."""
    settings = settings or get_settings()
    with _missing_as_object_missing(name, settings):
        response = client(settings).get_object(settings.s3_bucket, name)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def read_json(name: str, settings: Settings | None = None) -> Any:
    """The JSON document stored under ``name``; ObjectMissing when there is none."""
    return json.loads(read_bytes(name, settings))


def stat(name: str, settings: Settings | None = None) -> ObjectStat:
    """The size and modification time of ``name``; ObjectMissing when there is none."""
    settings = settings or get_settings()
    with _missing_as_object_missing(name, settings):
        info = client(settings).stat_object(settings.s3_bucket, name)
    return ObjectStat(name, info.size or 0, info.last_modified)


def exists(name: str, settings: Settings | None = None) -> bool:
    try:
        stat(name, settings)
    except ObjectMissing:
        return False
    return True


def remove(name: str, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    client(settings).remove_object(settings.s3_bucket, name)


def _minute_of(name: str) -> Minute | None:
    try:
        return Minute.from_object_name(name)
    except InvalidMinute:
        return None


def day_prefixes(first: Minute, last: Minute) -> list[str]:
    """``YYYY-MM-DD_`` of every UTC day from ``first`` to ``last``: the prefixes to list."""
    day, prefixes = first.start.date(), []
    while day <= last.start.date():
        prefixes.append(f"{day:%Y-%m-%d}_")
        day += timedelta(days=1)
    return prefixes


def list_minutes(first: Minute, last: Minute, suffix: str,
                 settings: Settings | None = None) -> dict[Minute, str]:
    """Minute → ETag of the objects ``<minute><suffix>`` (``.json``, ``.parquet``) from ``first``
    to ``last`` inclusive. Listed per day prefix, starting at ``first``: the cost follows the
    window, never what else the bucket holds."""
    settings = settings or get_settings()
    s3, found = client(settings), dict[Minute, str]()
    prefixes = day_prefixes(first, last)
    for prefix in prefixes:
        start_after = first.stem if prefix == prefixes[0] else None
        for item in s3.list_objects(settings.s3_bucket, prefix=prefix, recursive=True,
                                    start_after=start_after):
            name = item.object_name or ""
            minute = _minute_of(name)
            if minute is not None and minute > last:
                break  # names sort in time order: the rest of the day is after the window
            if minute is not None and minute >= first and name.endswith(suffix):
                found[minute] = (item.etag or "").strip('"')
    return found


def expire_minutes(before: Minute, limit: int, settings: Settings | None = None) -> list[str]:
    """Delete the objects of minutes earlier than ``before`` (at most ``limit``, oldest first);
    the names deleted. They are the first names of the bucket, so the listing stops at the
    first object to keep: each call costs what it deletes, not the bucket's size."""
    from minio.deleteobjects import DeleteObject

    settings = settings or get_settings()
    s3, expired = client(settings), list[str]()
    for item in s3.list_objects(settings.s3_bucket, recursive=True):
        name = item.object_name or ""
        minute = _minute_of(name)
        if minute is None:
            if name[:1].isdigit():
                continue  # a stray name among the minutes' (e.g. "2026.txt"): not ours
            break  # past every name that starts with a year
        if minute >= before or len(expired) >= limit:
            break
        expired.append(name)
    if expired:
        errors = list(s3.remove_objects(settings.s3_bucket,
                                        [DeleteObject(name) for name in expired]))
        if errors:
            raise EtarError(f"could not delete expired objects from {settings.s3_bucket}: "
                            f"{errors[0]}")
    return expired
