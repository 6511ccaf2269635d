"""The S3 endpoint in settings serves today's AWS SDK clients unchanged.

boto3 in its *default* configuration (since 1.36 it sends flexible checksums: CRC32 headers,
aws-chunked bodies with trailing checksums, a checksum on DeleteObjects), and pandas on an
``s3://`` path through s3fs. Written against whatever endpoint the settings name (the native
stack's versitygw, the compose stack's MinIO), each test in a bucket of its own that is removed
afterwards. Running this module is also the probe used to choose the native S3 server.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest

from etar.config import Settings
from etar.extract import storage

boto3 = pytest.importorskip("boto3")
botocore_config = pytest.importorskip("botocore.config")
botocore_exceptions = pytest.importorskip("botocore.exceptions")

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def _client(settings: Settings, secret: str | None = None) -> Any:
    """boto3's S3 client with nothing but the endpoint, region and credentials set."""
    return boto3.session.Session().client(
        "s3", endpoint_url=settings.s3_endpoint, region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=secret or settings.s3_secret_key.get_secret_value())


@pytest.fixture
def bucket(stack_settings: Settings, unique: str) -> Iterator[tuple[Any, Settings]]:
    """A boto3 client and settings naming a fresh bucket (created by boto3, dropped after)."""
    settings = stack_settings.model_copy(update={"s3_bucket": f"s3c-{unique}"})
    s3 = _client(settings)
    s3.create_bucket(Bucket=settings.s3_bucket)
    yield s3, settings
    storage.drop_bucket(settings)


def test_bucket_is_listed(bucket: tuple[Any, Settings]) -> None:
    s3, settings = bucket
    assert settings.s3_bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket=settings.s3_bucket)


def test_put_then_get(bucket: tuple[Any, Settings]) -> None:
    s3, settings = bucket
    s3.put_object(Bucket=settings.s3_bucket, Key="dir/a.json", Body=b'{"a": 1}',
                  ContentType="application/json")
    got = s3.get_object(Bucket=settings.s3_bucket, Key="dir/a.json")
    assert got["Body"].read() == b'{"a": 1}'


def test_head_gives_size_type_and_md5_etag(bucket: tuple[Any, Settings]) -> None:
    s3, settings = bucket
    body = os.urandom(1000)
    s3.put_object(Bucket=settings.s3_bucket, Key="h.bin", Body=body,
                  ContentType="application/octet-stream")
    head = s3.head_object(Bucket=settings.s3_bucket, Key="h.bin")
    assert head["ContentLength"] == 1000
    assert head["ContentType"] == "application/octet-stream"
    assert head["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    with pytest.raises(botocore_exceptions.ClientError) as missing:
        s3.head_object(Bucket=settings.s3_bucket, Key="nothing-here")
    assert missing.value.response["Error"]["Code"] in ("404", "NoSuchKey")


def test_ranged_get(bucket: tuple[Any, Settings]) -> None:
    s3, settings = bucket
    body = bytes(range(256)) * 40
    s3.put_object(Bucket=settings.s3_bucket, Key="r.bin", Body=body)
    got = s3.get_object(Bucket=settings.s3_bucket, Key="r.bin", Range="bytes=100-1099")
    assert got["Body"].read() == body[100:1100]
    assert got["ContentRange"] == f"bytes 100-1099/{len(body)}"


def test_multipart_upload_reads_back_byte_equal(bucket: tuple[Any, Settings]) -> None:
    s3, settings = bucket
    body = os.urandom(12 * MiB)  # over the default 8 MiB threshold: two parts
    s3.upload_fileobj(io.BytesIO(body), settings.s3_bucket, "big.bin")
    head = s3.head_object(Bucket=settings.s3_bucket, Key="big.bin")
    assert head["ContentLength"] == len(body)
    assert head["ETag"].strip('"').endswith("-2")  # the multipart ETag: md5-of-md5s-partcount
    out = io.BytesIO()
    s3.download_fileobj(settings.s3_bucket, "big.bin", out)
    assert hashlib.sha256(out.getvalue()).digest() == hashlib.sha256(body).digest()


def test_list_v2_with_prefix(bucket: tuple[Any, Settings]) -> None:
    s3, settings = bucket
    for key in ("p/1.txt", "p/2.txt", "p/sub/3.txt", "q/4.txt"):
        s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=key.encode())
    flat = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix="p/")
    assert sorted(o["Key"] for o in flat["Contents"]) == ["p/1.txt", "p/2.txt", "p/sub/3.txt"]
    assert flat["KeyCount"] == 3
    nested = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix="p/", Delimiter="/")
    assert [o["Key"] for o in nested["Contents"]] == ["p/1.txt", "p/2.txt"]
    assert [p["Prefix"] for p in nested["CommonPrefixes"]] == ["p/sub/"]
    paged = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix="p/", MaxKeys=2)
    assert paged["IsTruncated"] and len(paged["Contents"]) == 2
    rest = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix="p/",
                              ContinuationToken=paged["NextContinuationToken"])
    assert [o["Key"] for o in rest["Contents"]] == ["p/sub/3.txt"]


def test_presigned_get(bucket: tuple[Any, Settings]) -> None:
    s3, settings = bucket
    s3.put_object(Bucket=settings.s3_bucket, Key="shared.txt", Body=b"hello")
    # boto3 presigns with SigV4 when asked to; its default for this region is the legacy
    # query signature, which not every server accepts, so SigV4 is what etar documents.
    signer = boto3.session.Session().client(
        "s3", endpoint_url=settings.s3_endpoint, region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key.get_secret_value(),
        config=botocore_config.Config(signature_version="s3v4"))
    url = signer.generate_presigned_url(
        "get_object", Params={"Bucket": settings.s3_bucket, "Key": "shared.txt"}, ExpiresIn=60)
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url
    assert httpx.get(url).content == b"hello"
    assert httpx.get(url.replace("X-Amz-Signature=", "X-Amz-Signature=0")).status_code == 403


def test_copy(bucket: tuple[Any, Settings]) -> None:
    s3, settings = bucket
    s3.put_object(Bucket=settings.s3_bucket, Key="src.txt", Body=b"copy me")
    s3.copy_object(Bucket=settings.s3_bucket, Key="dst/copy.txt",
                   CopySource={"Bucket": settings.s3_bucket, "Key": "src.txt"})
    got = s3.get_object(Bucket=settings.s3_bucket, Key="dst/copy.txt")
    assert got["Body"].read() == b"copy me"


def test_delete_objects(bucket: tuple[Any, Settings]) -> None:
    s3, settings = bucket
    keys = [f"d/{i}.txt" for i in range(5)]
    for key in keys:
        s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=b"x")
    result = s3.delete_objects(Bucket=settings.s3_bucket,
                               Delete={"Objects": [{"Key": k} for k in keys[:4]]})
    assert sorted(d["Key"] for d in result["Deleted"]) == keys[:4]
    assert not result.get("Errors")
    left = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix="d/")
    assert [o["Key"] for o in left["Contents"]] == keys[4:]


def test_wrong_secret_is_refused(bucket: tuple[Any, Settings]) -> None:
    _, settings = bucket
    intruder = _client(settings, secret="not-the-secret")
    with pytest.raises(botocore_exceptions.ClientError) as refused:
        intruder.put_object(Bucket=settings.s3_bucket, Key="evil.txt", Body=b"x")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(botocore_exceptions.ClientError):
        intruder.list_objects_v2(Bucket=settings.s3_bucket)


def test_pandas_parquet_on_an_s3_path(bucket: tuple[Any, Settings]) -> None:
    pytest.importorskip("s3fs")
    _, settings = bucket
    frame = pd.DataFrame({"event_id": [f"e{i}" for i in range(1000)],
                          "amount": [i * 0.5 for i in range(1000)],
                          "event_type": ["VIEW", "CLICK"] * 500})
    path = f"s3://{settings.s3_bucket}/frames/2026-11-27_10-30.parquet"
    options = storage.storage_options(settings)
    frame.to_parquet(path, index=False, storage_options=options)
    pd.testing.assert_frame_equal(pd.read_parquet(path, storage_options=options), frame)
    assert storage.exists("frames/2026-11-27_10-30.parquet", settings)  # minio sees it too
