"""Objects in S3 (MinIO in the compose stack, S3Proxy in the native one) via ``minio``.

Objects of a minute are named from its UTC start: ``YYYY-MM-DD_HH-MM.parquet`` (extract)
and ``YYYY-MM-DD_HH-MM.json`` (report). Writing a name again replaces the object.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from minio import Minio
from minio.error import S3Error

from etar.config import Settings, get_settings
from etar.errors import EtarError

PART_SIZE = 16 * 1024 * 1024


class ObjectMissing(EtarError):
    """The object is not in the bucket."""


def client(settings: Settings | None = None) -> Minio:
    """A ``minio`` client for the configured endpoint and credentials."""
    settings = settings or get_settings()
    url = urlsplit(settings.s3_endpoint)
    return Minio(url.netloc, access_key=settings.s3_access_key,
                 secret_key=settings.s3_secret_key.get_secret_value(),
                 secure=url.scheme == "https", region=settings.s3_region)


def ensure_bucket(settings: Settings | None = None) -> None:
    """Create the bucket unless it exists (idempotent)."""
    settings = settings or get_settings()
    s3 = client(settings)
    if not s3.bucket_exists(settings.s3_bucket):
        s3.make_bucket(settings.s3_bucket)


def object_name(minute: datetime, suffix: str) -> str:
    """``2026-01-01_10-30.parquet`` for the minute starting 10:30 UTC."""
    start = minute.astimezone(UTC) if minute.tzinfo else minute.replace(tzinfo=UTC)
    return f"{start:%Y-%m-%d_%H-%M}.{suffix.lstrip('.')}"


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


def put_json(name: str, document: Any, settings: Settings | None = None) -> None:
    data = json.dumps(document, indent=2).encode()
    upload(name, io.BytesIO(data), "application/json", len(data), settings)


def read_json(name: str, settings: Settings | None = None) -> Any:
    """The JSON document stored under ``name``; ObjectMissing when there is none."""
    settings = settings or get_settings()
    try:
        response = client(settings).get_object(settings.s3_bucket, name)
    except S3Error as exc:
        if exc.code == "NoSuchKey":
            raise ObjectMissing(f"s3://{settings.s3_bucket}/{name} does not exist") from exc
        raise
    try:
        return json.loads(response.read())
    finally:
        response.close()
        response.release_conn()


def exists(name: str, settings: Settings | None = None) -> bool:
    settings = settings or get_settings()
    try:
        client(settings).stat_object(settings.s3_bucket, name)
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchObject"):
            return False
        raise
    return True


def remove(name: str, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    client(settings).remove_object(settings.s3_bucket, name)
