"""S3 for the native stack: versitygw (Apache-2.0, Go) serving a local folder.

Chosen on evidence (``tests/integration/test_s3_clients.py`` is the probe): today's AWS SDKs
(boto3 >= 1.36, s3fs/pandas, the AWS CLI) send flexible checksums by default
(``x-amz-checksum-*``, aws-chunked bodies with trailing checksums, a checksum on
DeleteObjects). S3Proxy 3.0 refused them (1 of 11 probe checks); versitygw v1.8.0 passes all of
them and serves the ``minio`` client, Spark's S3A and ClickHouse's ``s3()`` as before.

``etar stack install`` builds it once with ``go install`` from the Go module proxy into
``<state>/lib/versitygw/<version>/`` (1-6 minutes on 2 cores). Buckets are folders of
``<state>/data/s3`` and objects are files in them, the layout S3Proxy used, so existing data
keeps working; :func:`migrate` adds the metadata versitygw keeps in extended attributes (ETag,
content type, bucket owner) to objects S3Proxy wrote. Credentials reach the server through its
environment, never its command line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from etar.config import Settings
from etar.errors import StackError
from etar.security import require_secrets
from etar_stack.supervisor import Service, port_open

log = logging.getLogger(__name__)

MODULE = "github.com/versity/versitygw/cmd/versitygw"
VERSION = "v1.8.0"
GO_MIN = (1, 21)
"""Oldest Go that builds it: versitygw needs Go 1.25, which Go >= 1.21 fetches by itself
(``GOTOOLCHAIN=auto``) from the Go module proxy."""


def lib_dir(settings: Settings) -> Path:
    return settings.state_dir / "lib" / "versitygw" / VERSION


def binary(settings: Settings) -> Path:
    return lib_dir(settings) / "versitygw"


def data_dir(settings: Settings) -> Path:
    """The folder served: one sub-folder per bucket (the same as S3Proxy's)."""
    return settings.state_dir / "data" / "s3"


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise StackError(
            f"Go (`go`, >= {GO_MIN[0]}.{GO_MIN[1]}) is needed once to build the native S3 server "
            f"(versitygw {VERSION}, `go install {MODULE}@{VERSION}`); put Go on PATH and run "
            "`etar stack install` again")
    version = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True,
                             check=False).stdout.strip()
    found = re.match(r"go(\d+)\.(\d+)", version)
    if found is None or (int(found[1]), int(found[2])) < GO_MIN:
        raise StackError(
            f"{go} is {version or 'of an unknown version'}; building versitygw {VERSION} needs "
            f"Go >= {GO_MIN[0]}.{GO_MIN[1]} (it then fetches the 1.25 toolchain itself)")
    return go


def install(settings: Settings) -> Path:
    """Build versitygw once (skipped when present), then migrate S3Proxy's data if any."""
    target = binary(settings)
    if not os.access(target, os.X_OK):
        go = _go()
        lib_dir(settings).mkdir(parents=True, exist_ok=True)
        log.info("building versitygw %s with `go install` (first time only, a few minutes "
                 "on 2 cores) into %s", VERSION, target.parent)
        begin = time.monotonic()
        with tempfile.TemporaryDirectory(dir=lib_dir(settings)) as gobin:
            command = [go, "install", "-trimpath", "-ldflags=-s -w", f"{MODULE}@{VERSION}"]
            env = {**os.environ, "GOBIN": gobin, "CGO_ENABLED": "0"}
            if subprocess.run(command, env=env, check=False).returncode != 0:
                raise StackError(f"`go install {MODULE}@{VERSION}` failed; see above")
            Path(gobin, "versitygw").replace(target)
        log.info("versitygw %s built in %.0f s", VERSION, time.monotonic() - begin)
    _forget_s3proxy(settings)
    migrate(settings)
    return target


def _forget_s3proxy(settings: Settings) -> None:
    """Remove what S3Proxy left besides the data: its jars and its config (a secret in it)."""
    for leftover in (settings.state_dir / "lib" / "s3proxy", settings.state_dir / "s3proxy"):
        if leftover.exists():
            shutil.rmtree(leftover)
            log.info("removed %s (S3Proxy is replaced by versitygw)", leftover)


# --- S3Proxy's data, served by versitygw ----------------------------------------------------
# S3Proxy (jclouds filesystem-nio2) keeps `user.user.content-md5` (raw MD5) and
# `user.user.content-type` on each object; versitygw reads `user.etag` ("<hex md5>", quoted),
# `user.content-type`, and, on a bucket folder, `user.acl` (owner) and `user.ownership`.
_S3PROXY_MD5 = "user.user.content-md5"
_S3PROXY_TYPE = "user.user.content-type"


def _xattr(path: Path, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name)
    except OSError:
        return None


def _bucket_acl(settings: Settings) -> bytes:
    """What versitygw writes on a bucket it creates: owned by the root account, full control."""
    owner = settings.s3_access_key
    return json.dumps({"Owner": owner, "Grantees": [
        {"Permission": "FULL_CONTROL", "Access": owner, "Type": "CanonicalUser"}]},
        separators=(",", ":")).encode()


def migrate(settings: Settings) -> tuple[int, int]:
    """Give S3Proxy's buckets and objects versitygw's metadata, in place (idempotent).

    Returns (buckets, objects) migrated. Objects are not copied: the files stay where they are.
    """
    root = data_dir(settings)
    if not root.is_dir():
        return 0, 0
    buckets = objects = 0
    for bucket in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if _xattr(bucket, "user.acl") is None:
            os.setxattr(bucket, "user.acl", _bucket_acl(settings))
            os.setxattr(bucket, "user.ownership", b"BucketOwnerEnforced")
            buckets += 1
        for folder, _, files in os.walk(bucket):
            for name in files:
                path = Path(folder, name)
                if _xattr(path, "user.etag") is not None or path.is_symlink():
                    continue
                md5 = _xattr(path, _S3PROXY_MD5)
                if md5 is None or len(md5) != 16:
                    with open(path, "rb") as handle:
                        md5 = hashlib.file_digest(handle, "md5").digest()
                os.setxattr(path, "user.etag", f'"{md5.hex()}"'.encode())
                content_type = _xattr(path, _S3PROXY_TYPE)
                if content_type and _xattr(path, "user.content-type") is None:
                    os.setxattr(path, "user.content-type", content_type)
                objects += 1
    if buckets or objects:
        log.warning("migrated S3Proxy's data in %s for versitygw: %d bucket(s) given an owner, "
                    "%d object(s) an ETag and content type (files unchanged, in place)",
                    root, buckets, objects)
    return buckets, objects


def ready(settings: Settings) -> bool:
    """versitygw answers an authenticated request (not tried before the port is open, so the
    client does not retry and warn while the server starts)."""
    from etar.extract import storage

    if not port_open(settings.bind_host, settings.s3_port):
        return False
    storage.client(settings).list_buckets()
    return True


def prepare(settings: Settings) -> None:
    """Install when missing (a no-op after `etar stack install`) and create the data folder."""
    require_secrets(settings, settings.bind_host, "s3_secret_key")
    install(settings)
    data_dir(settings).mkdir(parents=True, exist_ok=True)


def environment(settings: Settings) -> dict[str, str]:
    """versitygw's settings, credentials included: the environment, never argv."""
    return {
        "VGW_PORT": f"{settings.bind_host}:{settings.s3_port}",
        "ROOT_ACCESS_KEY_ID": settings.s3_access_key,
        "ROOT_SECRET_ACCESS_KEY": settings.s3_secret_key.get_secret_value(),
        "VGW_REGION": settings.s3_region,
        "VGW_KEEP_ALIVE": "true",
        "VGW_QUIET": "true",  # no line per request; errors are still logged
    }


def service(settings: Settings) -> Service:
    from etar.extract import storage

    return Service(
        name="s3",
        command=[str(binary(settings)), "posix", str(data_dir(settings))],
        port=settings.s3_port,
        url=f"{settings.s3_endpoint} (bucket {settings.s3_bucket})",
        ready=lambda: ready(settings),
        prepare=lambda: prepare(settings),
        after_start=lambda: storage.ensure_bucket(settings),
        env=environment(settings),
        start_timeout=60,
    )
