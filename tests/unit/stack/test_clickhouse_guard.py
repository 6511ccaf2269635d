"""The endpoint's confinement rules as pure logic: paths, URLs, addresses, locked settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from etar_stack.clickhouse_http import guard
from etar_stack.clickhouse_http.engine import EngineError
from etar_stack.clickhouse_http.guard import Guard


@pytest.fixture
def rules(tmp_path: Path) -> Guard:
    (tmp_path / "uf" / "sub").mkdir(parents=True)
    (tmp_path / "uf" / "a.csv").write_text("1\n")
    return Guard(str(tmp_path / "uf"), frozenset({"s3.local:9000", "files.example"}))


@pytest.mark.parametrize("path", [
    "/etc/passwd", "../x", "sub/../../x", "a..b/../../x", "/etc/*", "{1..3}/../../x",
    "/{etc/passwd,tmp/x}", "out_{_partition_id}.csv", "bad\0name",
])
def test_paths_outside_are_refused(rules: Guard, path: str) -> None:
    with pytest.raises(EngineError) as refused:
        rules.confine(path)
    assert refused.value.code == 291
    assert "is not inside" in refused.value.message


@pytest.mark.parametrize("path", ["a.csv", "sub/*.csv", "data_{1..3}.csv", "sub", "new.txt"])
def test_paths_inside_are_absolute(rules: Guard, path: str) -> None:
    assert rules.confine(path).startswith(rules.user_files + "/")


def test_an_absolute_path_inside_is_kept(rules: Guard) -> None:
    assert rules.confine(f"{rules.user_files}/a.csv") == f"{rules.user_files}/a.csv"


def test_symlinks_out_are_refused_even_behind_a_glob(rules: Guard) -> None:
    root = Path(rules.user_files)
    (root / "sub" / "out").symlink_to("/etc")
    for path in ("sub/out/passwd", "sub/*", "sub", "*/out"):
        with pytest.raises(EngineError):
            rules.confine(path)
    (root / "in").symlink_to(root / "sub")
    (root / "sub" / "out").unlink()
    assert rules.confine("in/x.csv").endswith("/in/x.csv")


@pytest.mark.parametrize("url", [
    "http://s3.local:9000/bucket/x", "https://files.example/x", "http://files.example:8080/y",
])
def test_allowed_urls(rules: Guard, url: str) -> None:
    rules.check_url(url)


@pytest.mark.parametrize("url", [
    "http://s3.local:9001/x", "http://s3.local/x", "http://127.0.0.1:8081/subjects",
    "http://files.example@127.0.0.1/x", "http://{files.example,127.0.0.1}/x",
    "ftp://files.example/x", "file:///etc/passwd", "http://files.example\\@127.0.0.1/",
    "http://files.example /x", "//files.example/x", "http://127.0.0.1:80:80/", "",
])
def test_other_urls_are_refused(rules: Guard, url: str) -> None:
    with pytest.raises(EngineError) as refused:
        rules.check_url(url)
    assert refused.value.code == 491


def test_addresses(rules: Guard) -> None:
    rules.check_address("s3.local:9000", 3306)
    rules.check_address("files.example", 3306)
    for bad in ("s3.local", "127.0.0.1:9000", "files.example,127.0.0.1", "s3.local:9000 x"):
        with pytest.raises(EngineError):
            rules.check_address(bad, 3306)


def test_locked_settings_any_case() -> None:
    guard.locked(["max_threads"])
    for name in ("format_schema", "Dialect", "url_base", "output_format_schema"):
        with pytest.raises(EngineError) as refused:
            guard.locked([name])
        assert refused.value.code == 452
