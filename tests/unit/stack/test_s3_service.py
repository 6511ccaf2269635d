"""The native S3 service: its command and environment, and S3Proxy's data migrated in place."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from etar.config import Settings
from etar.errors import StackError
from etar_stack.services import s3


def _settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, state_dir=tmp_path, bind_host="127.0.0.1",  # type: ignore[call-arg]
                    s3_endpoint="http://127.0.0.1:19000", s3_access_key="ak",
                    s3_secret_key=SecretStr("very-secret-value"))


def test_credentials_in_the_environment_never_on_the_command_line(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    service = s3.service(settings)
    assert "very-secret-value" not in " ".join(service.command)
    assert service.command == [str(s3.binary(settings)), "posix", str(tmp_path / "data" / "s3")]
    assert service.env["VGW_PORT"] == "127.0.0.1:19000"
    assert service.env["ROOT_ACCESS_KEY_ID"] == "ak"
    assert service.env["ROOT_SECRET_ACCESS_KEY"] == "very-secret-value"
    assert service.port == 19000


def test_a_missing_go_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3.shutil, "which", lambda name: None)
    with pytest.raises(StackError, match=r"Go .* is needed .*versitygw"):
        s3.install(_settings(tmp_path))


def _etag(body: bytes) -> bytes:
    return f'"{hashlib.md5(body).hexdigest()}"'.encode()


def test_s3proxy_objects_get_etag_and_content_type(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    bucket = tmp_path / "data" / "s3" / "etar"
    (bucket / "a" / "b").mkdir(parents=True)
    with_md5, without_md5 = bucket / "a" / "b" / "x.json", bucket / "y.bin"
    with_md5.write_bytes(b'{"a": 1}')
    os.setxattr(with_md5, "user.user.content-md5", hashlib.md5(b'{"a": 1}').digest())
    os.setxattr(with_md5, "user.user.content-type", b"application/json")
    without_md5.write_bytes(b"12345")
    assert s3.migrate(settings) == (1, 2)
    assert os.getxattr(with_md5, "user.etag") == _etag(b'{"a": 1}')
    assert os.getxattr(with_md5, "user.content-type") == b"application/json"
    assert os.getxattr(without_md5, "user.etag") == _etag(b"12345")
    assert os.getxattr(bucket, "user.acl").startswith(b'{"Owner":"ak","Grantees":[')
    assert s3.migrate(settings) == (0, 0)  # idempotent
