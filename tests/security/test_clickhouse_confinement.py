"""The ClickHouse endpoint confined like a server: each check tries a hole on a real endpoint.

The endpoint runs as its own process (chdb hosts one engine per process) on a free port with a
temporary state folder, its allow-list holding one fake host only.
"""

from __future__ import annotations

import gzip
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

WRITER = ("default", "writer-secret")
READER = ("reader", "reader-secret")
EXTERNAL_LIMIT = 64 * 1024
_PIDS: dict[str, int] = {}
_ALLOWED: dict[str, str] = {}
"""The one allow-listed host:port (a small HTTP server of the module's own)."""


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello from an allowed host\n")

    def log_message(self, *args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(URL, user_files folder) of an endpoint of this module's own."""
    root = tmp_path_factory.mktemp("chsec")
    port = _free_port()
    allowed = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=allowed.serve_forever, daemon=True).start()
    _ALLOWED["host"] = f"127.0.0.1:{allowed.server_address[1]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETAR_")}
    env.update({"ETAR_STATE_DIR": str(root / ".etar"), "ETAR_CLICKHOUSE_PORT": str(port),
                "ETAR_CLICKHOUSE_PASSWORD": WRITER[1], "ETAR_CLICKHOUSE_READER_USER": READER[0],
                "ETAR_CLICKHOUSE_READER_PASSWORD": READER[1],
                "ETAR_CLICKHOUSE_REMOTE_URL_ALLOW_HOSTS": _ALLOWED["host"],
                "ETAR_CLICKHOUSE_ALLOWED_ORIGINS": "http://localhost:3000",
                "ETAR_CLICKHOUSE_MAX_SESSIONS": "5",
                "ETAR_CLICKHOUSE_MAX_EXTERNAL_BYTES": str(EXTERNAL_LIMIT)})
    log = (root / "endpoint.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "etar_stack.clickhouse_http"], env=env,
                               cwd=root, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    _PIDS[url] = process.pid
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                if httpx.get(f"{url}ping", timeout=2).text == "Ok.\n":
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, (root / "endpoint.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the endpoint did not start in 90 s"
            time.sleep(0.3)
        user_files = root / ".etar" / "data" / "clickhouse" / "user_files"
        user_files.mkdir(parents=True, exist_ok=True)
        (user_files / "inside.csv").write_text("1,inside\n")
        (user_files / "sub").mkdir(exist_ok=True)
        (user_files / "sub" / "a.csv").write_text("2,sub\n")
        yield url, user_files
    finally:
        allowed.shutdown()
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def _post(endpoint: tuple[str, Path], sql: str | bytes, auth: tuple[str, str] = WRITER,
          **kwargs: object) -> httpx.Response:
    url, _ = endpoint
    params = kwargs.pop("params", None)
    headers = kwargs.pop("headers", None)
    return httpx.post(url, content=sql, auth=auth, params=params,  # type: ignore[arg-type]
                      headers=headers, timeout=60)  # type: ignore[arg-type]


def _code(response: httpx.Response) -> int:
    return int(response.headers.get("X-ClickHouse-Exception-Code", 0))


# -- file(), INTO OUTFILE, FROM INFILE, File engine: confined to user_files -----------------

@pytest.mark.parametrize("sql", [
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "select * from FILE('/etc/passwd', 'LineAsString')",
    "SELECT * FROM /* a comment */ `file`('/etc/passwd', 'LineAsString')",
    "SELECT * FROM file('../../../../../../etc/passwd', 'LineAsString')",
    "SELECT * FROM file('sub/../../../../../../../etc/passwd', 'LineAsString')",
    "SELECT * FROM file('/etc/pass*', 'LineAsString')",
    "SELECT * FROM file('/{etc/passwd,tmp/x}', 'LineAsString')",
    "SELECT * FROM file('{1..2}/../../../../../../../etc/passwd', 'LineAsString')",
    "SELECT * FROM file(concat('/etc/', 'passwd'), 'LineAsString')",
    "WITH '/etc/passwd' AS p SELECT * FROM file(p, 'LineAsString')",
    "SELECT file('/etc/passwd')",
    "SELECT 1 WHERE 1 IN (SELECT count() FROM file('/etc/passwd', 'LineAsString'))",
    "WITH t AS (SELECT * FROM file('/etc/passwd', 'LineAsString')) SELECT * FROM t",
    "SELECT * FROM view(SELECT * FROM file('/etc/passwd', 'LineAsString'))",
    "DESCRIBE TABLE file('/etc/passwd', 'LineAsString')",
    "INSERT INTO FUNCTION file('/tmp/etar-chsec-x.txt', 'LineAsString') SELECT 'hi'",
    "SELECT 'hi' INTO OUTFILE '/tmp/etar-chsec-y.txt'",
    "SELECT 'hi' INTO OUTFILE '../etar-chsec-y.txt'",
    "CREATE TABLE f (s String) ENGINE = File(LineAsString, '/etc/passwd')",
    "CREATE VIEW v AS SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "CREATE TABLE t2 AS file('/etc/passwd', 'LineAsString')",
])
def test_paths_outside_user_files_are_refused(endpoint: tuple[str, Path], sql: str) -> None:
    response = _post(endpoint, sql)
    assert response.status_code != 200, response.text
    assert _code(response) in (291, 62), response.text
    assert "root:" not in response.text
    assert not Path("/tmp/etar-chsec-x.txt").exists()
    assert not Path("/tmp/etar-chsec-y.txt").exists()


def test_from_infile_outside_is_refused(endpoint: tuple[str, Path]) -> None:
    _post(endpoint, "CREATE TABLE IF NOT EXISTS lines (s String) ENGINE = Memory")
    response = _post(endpoint, "INSERT INTO lines FROM INFILE '/etc/passwd' FORMAT LineAsString")
    assert _code(response) == 291, response.text
    assert _post(endpoint, "SELECT count() FROM lines").text == "0\n"


def test_a_symlink_out_of_user_files_is_refused(endpoint: tuple[str, Path]) -> None:
    _, user_files = endpoint
    link = user_files / f"link-{uuid.uuid4().hex[:6]}"
    link.symlink_to("/etc/passwd")
    folder = user_files / f"dir-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    (folder / "out").symlink_to("/etc")
    try:
        for sql in (f"SELECT * FROM file('{link.name}', 'LineAsString')",
                    f"SELECT * FROM file('{folder.name}/*', 'LineAsString')",
                    f"SELECT * FROM file('{folder.name}/out/passwd', 'LineAsString')"):
            response = _post(endpoint, sql)
            assert _code(response) == 291, (sql, response.text)
            assert "root:" not in response.text
    finally:
        link.unlink()
        (folder / "out").unlink()
        folder.rmdir()


def test_the_error_is_a_servers(endpoint: tuple[str, Path]) -> None:
    _, user_files = endpoint
    response = _post(endpoint, "SELECT * FROM file('/etc/passwd', 'LineAsString')")
    assert response.status_code == 403
    assert response.text.startswith(
        f"Code: 291. DB::Exception: File `/etc/passwd` is not inside `{user_files.resolve()}`")
    assert "(DATABASE_ACCESS_DENIED)" in response.text


def test_user_files_are_served(endpoint: tuple[str, Path]) -> None:
    _, user_files = endpoint
    assert _post(endpoint, "SELECT * FROM file('inside.csv', 'CSV')").text == "1\tinside\n"
    assert _post(endpoint, f"SELECT * FROM file('{user_files}/sub/*.csv', 'CSV')"
                 ).text == "2\tsub\n"
    name = f"out-{uuid.uuid4().hex[:6]}.txt"
    assert _post(endpoint, f"SELECT 'hi' INTO OUTFILE '{name}'").status_code == 200
    assert (user_files / name).read_text() == "hi\n"
    assert _post(endpoint, f"INSERT INTO FUNCTION file('w-{name}', 'LineAsString') "
                           "SELECT 'yo'").status_code == 200
    assert (user_files / f"w-{name}").read_text() == "yo\n"


# -- url(), s3(), remote(), mysql(), dictionaries, engines: allow-listed hosts only --------

@pytest.mark.parametrize("sql", [
    "SELECT * FROM url('http://127.0.0.1:1/subjects', 'LineAsString')",
    "SELECT * FROM URL('http://127.0.0.1:1/subjects', 'LineAsString')",
    "SELECT * FROM url('http://localhost:1/x', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.2@127.0.0.1:1/x', 'LineAsString')",
    "SELECT * FROM url('http://{127.0.0.1,127.0.0.2}:1/x', 'LineAsString')",
    "SELECT * FROM url(concat('http://127.0.0.1', ':1/x'), 'LineAsString')",
    "SELECT * FROM s3('http://127.0.0.1:1/bucket/x.csv', 'CSV')",
    "SELECT * FROM s3Cluster('default', 'http://127.0.0.1:1/b/x.csv')",
    "SELECT * FROM remote('127.0.0.1:1', system.one)",
    "SELECT * FROM remoteSecure('127.0.0.1:1', system.one)",
    "SELECT * FROM cluster('default', system.one)",
    "SELECT * FROM mysql('127.0.0.1:1', 'db', 't', 'u', 'p')",
    "SELECT * FROM postgresql('127.0.0.1:1', 'db', 't', 'u', 'p')",
    "SELECT * FROM mongodb('127.0.0.1:1', 'db', 't', 'u', 'p', 'x String')",
    "SELECT * FROM redis('127.0.0.1:1', 'k', 'k String')",
    "SELECT * FROM hdfs('hdfs://127.0.0.1:1/x', 'CSV')",
    "SELECT * FROM jdbc('jdbc:mysql://127.0.0.1:1/db', 't')",
    "SELECT * FROM odbc('DSN=x', 't')",
    "SELECT * FROM azureBlobStorage('http://127.0.0.1:1/x', 'c', 'b')",
    "SELECT * FROM icebergS3('http://127.0.0.1:1/x')",
    "SELECT * FROM deltaLake('http://127.0.0.1:1/x')",
    "SELECT * FROM hudi('http://127.0.0.1:1/x')",
    "SELECT * FROM gcs('http://127.0.0.1:1/x', 'CSV')",
    "SELECT * FROM sqlite('/etc/x.db', 't')",
    "SELECT * FROM executable('x.sh', 'CSV', 'x String')",
    "SELECT * FROM urlCluster('default', 'http://127.0.0.1:1/x')",
    "CREATE TABLE u (s String) ENGINE = URL('http://127.0.0.1:1/x', LineAsString)",
    "CREATE TABLE u (s String) ENGINE = S3('http://127.0.0.1:1/b/x', 'CSV')",
    "CREATE TABLE u (s String) ENGINE = MySQL('127.0.0.1:1', 'd', 't', 'u', 'p')",
    "CREATE TABLE u (s String) ENGINE = Kafka('127.0.0.1:1', 't', 'g', 'JSONEachRow')",
    "CREATE TABLE u (s String) ENGINE = Distributed('default', 'system', 'one')",
    "CREATE TABLE u (s String) ENGINE = Executable('x.sh', 'CSV')",
    "CREATE DATABASE d ENGINE = Filesystem('/etc')",
    "CREATE DATABASE d ENGINE = URL",
    "CREATE DATABASE d ENGINE = MySQL('127.0.0.1:1', 'd', 'u', 'p')",
    "CREATE DICTIONARY dh (k UInt64, v String) PRIMARY KEY k SOURCE(HTTP(url "
    "'http://127.0.0.1:1/x' format 'TSV')) LAYOUT(FLAT()) LIFETIME(0)",
    "CREATE DICTIONARY dm (k UInt64, v String) PRIMARY KEY k SOURCE(MYSQL(host '127.0.0.1' "
    "port 1 user 'u' password 'p' db 'd' table 't')) LAYOUT(FLAT()) LIFETIME(0)",
    "CREATE DICTIONARY dc (k UInt64, v String) PRIMARY KEY k SOURCE(CLICKHOUSE(query "
    "'SELECT * FROM file(''/etc/passwd'')')) LAYOUT(FLAT()) LIFETIME(0)",
    "BACKUP TABLE system.one TO File('/tmp/etar-chsec-b')",
    "CREATE TABLE m (x Int8) ENGINE = MergeTree ORDER BY x "
    "SETTINGS disk = disk(type = local, path = '/tmp/etar-chsec-d/')",
    "ATTACH TABLE a FROM '/etc' (s String) ENGINE = File(LineAsString)",
])
def test_remote_and_host_reaching_things_are_refused(endpoint: tuple[str, Path],
                                                     sql: str) -> None:
    response = _post(endpoint, sql)
    assert response.status_code == 403, response.text
    assert _code(response) in (491, 291, 344), response.text


def test_the_url_error_is_a_servers(endpoint: tuple[str, Path]) -> None:
    response = _post(endpoint, "SELECT * FROM url('http://127.0.0.1:1/subjects', 'LineAsString')")
    assert response.text.startswith('Code: 491. DB::Exception: URL "http://127.0.0.1:1/subjects" '
                                     "is not allowed in configuration file, see "
                                     "<remote_url_allow_hosts>")


def test_an_allowed_host_is_reached(endpoint: tuple[str, Path]) -> None:
    host = _ALLOWED["host"]
    response = _post(endpoint, f"SELECT * FROM url('http://{host}/x', 'LineAsString')")
    assert response.text == "hello from an allowed host\n"
    other = _post(endpoint, f"SELECT * FROM url('http://{host}0/x', 'LineAsString')")
    assert _code(other) == 491, other.text


@pytest.mark.parametrize("sql", [
    "SELECT 1; SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SHOW TABLES; SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "CREATE TABLE IF NOT EXISTS ms (x Int8) ENGINE = Memory;\n"
    "INSERT INTO FUNCTION file('/tmp/etar-chsec-x.txt', 'LineAsString') SELECT 'x'",
])
def test_multi_statements_are_refused(endpoint: tuple[str, Path], sql: str) -> None:
    response = _post(endpoint, sql)
    assert _code(response) == 62, response.text
    assert "Multi-statements are not allowed" in response.text
    assert not Path("/tmp/etar-chsec-x.txt").exists()


def test_values_data_is_never_sql(endpoint: tuple[str, Path]) -> None:
    _post(endpoint, "CREATE TABLE IF NOT EXISTS vals (s String) ENGINE = Memory")
    smuggled = _post(endpoint, "INSERT INTO vals VALUES ('a'); "
                               "INSERT INTO FUNCTION file('/tmp/etar-chsec-x.txt', "
                               "'LineAsString') SELECT 'x'")
    assert not Path("/tmp/etar-chsec-x.txt").exists(), smuggled.text
    expression = _post(endpoint, "INSERT INTO vals VALUES (file('/etc/passwd'))")
    assert _code(expression) == 291, expression.text
    streamed = _post(endpoint, "INSERT INTO vals FORMAT Values (file('/etc/passwd'))")
    assert streamed.status_code != 200, streamed.text
    assert _post(endpoint, "INSERT INTO vals VALUES ('b'), (concat('c', ''))").status_code == 200
    assert _post(endpoint, "SELECT s FROM vals WHERE s != 'a' ORDER BY s").text == "b\nc\n"


@pytest.mark.parametrize(("sql", "params"), [
    ("SELECT 1 SETTINGS format_schema = '/etc/passwd:X'", None),
    ("SELECT 1 SETTINGS output_format_schema = '/tmp/etar-chsec-s'", None),
    ("SELECT 1", {"url_base": "http://127.0.0.1:1/"}),
    ("SELECT 1", {"dialect": "prql"}),
    ("SET dialect = 'prql'", None),
    ("SET input_format_values_interpret_expressions = 1", None),
])
def test_settings_naming_paths_urls_or_parsers_are_locked(
        endpoint: tuple[str, Path], sql: str, params: dict[str, str] | None) -> None:
    response = _post(endpoint, sql, params=params)
    assert _code(response) == 452, response.text


def test_a_query_parameter_cannot_carry_a_path(endpoint: tuple[str, Path]) -> None:
    response = _post(endpoint, "SELECT * FROM file({p:String}, 'LineAsString')",
                     params={"param_p": "/etc/passwd"})
    assert _code(response) == 291, response.text


# -- readonly -------------------------------------------------------------------------------

def test_readonly_in_the_url_is_enforced(endpoint: tuple[str, Path]) -> None:
    name = f"ro_{uuid.uuid4().hex[:6]}"
    one = _post(endpoint, f"CREATE TABLE {name} (x Int8) ENGINE = Memory",
                params={"readonly": "1"})
    assert _code(one) == 164, one.text
    two = _post(endpoint, f"CREATE TABLE {name} (x Int8) ENGINE = Memory",
                params={"readonly": "2"})
    assert _code(two) == 164, two.text
    assert _post(endpoint, f"EXISTS TABLE {name}").text == "0\n"
    assert _code(_post(endpoint, "SELECT 1", params={"readonly": "1", "max_threads": "1"})
                 ) == 164
    assert _post(endpoint, "SELECT 1", params={"readonly": "2", "max_threads": "1"}
                 ).text == "1\n"


def test_readonly_in_a_session(endpoint: tuple[str, Path]) -> None:
    sid = {"session_id": f"ro-{uuid.uuid4().hex[:6]}"}
    assert _post(endpoint, "SET readonly = 1", params=sid).status_code == 200
    assert _code(_post(endpoint, "CREATE TABLE s_ro (x Int8) ENGINE = Memory", params=sid)
                 ) == 164
    assert _code(_post(endpoint, "SET readonly = 0", params=sid)) == 164
    writer = {"session_id": f"rw-{uuid.uuid4().hex[:6]}"}
    assert _post(endpoint, "CREATE TEMPORARY TABLE tmp (x Int8)", params=writer
                 ).status_code == 200
    refused = _post(endpoint, "INSERT INTO tmp VALUES (1)", params={**writer, "readonly": "1"})
    assert _code(refused) == 164, refused.text
    assert _post(endpoint, "INSERT INTO tmp VALUES (2)", params=writer).status_code == 200
    assert _post(endpoint, "SELECT x FROM tmp", params=writer).text == "2\n"


def test_the_reader_reads_and_cannot_write_or_lower_its_readonly(
        endpoint: tuple[str, Path]) -> None:
    assert _post(endpoint, "SELECT 1", auth=READER).text == "1\n"
    assert _post(endpoint, "SELECT 1", auth=READER, params={"max_threads": "1"}).text == "1\n"
    for sql in ("CREATE TABLE r (x Int8) ENGINE = Memory", "DROP TABLE IF EXISTS vals",
                "INSERT INTO FUNCTION file('r.txt', 'LineAsString') SELECT 'x'"):
        assert _code(_post(endpoint, sql, auth=READER)) == 164, sql
    assert _code(_post(endpoint, "SELECT 1", auth=READER, params={"readonly": "0"})) == 164
    assert _code(_post(endpoint, "SET readonly = 0", auth=READER,
                       params={"session_id": "reader-1"})) == 164
    assert _code(_post(endpoint, "CREATE TABLE r (x Int8) ENGINE = Memory", auth=READER,
                       params={"session_id": "reader-1"})) == 164


def test_a_session_belongs_to_its_user(endpoint: tuple[str, Path]) -> None:
    sid = {"session_id": f"own-{uuid.uuid4().hex[:6]}"}
    assert _post(endpoint, "CREATE TEMPORARY TABLE mine (x Int8)", params=sid).status_code == 200
    other = _post(endpoint, "SELECT * FROM mine", auth=READER, params=sid)
    assert _code(other) == 60, other.text  # the reader's own new session has no such table


# -- browsers: cross-origin requests ----------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Origin": "http://127.0.0.1:1"},
    {"Sec-Fetch-Site": "cross-site"},
])
def test_cross_origin_requests_are_refused_before_anything(
        endpoint: tuple[str, Path], headers: dict[str, str]) -> None:
    name = f"co_{uuid.uuid4().hex[:6]}"
    response = _post(endpoint, f"CREATE TABLE {name} (x Int8) ENGINE = Memory",
                     headers=headers, params={"add_http_cors_header": "1"})
    assert response.status_code == 403
    assert not any(k.lower().startswith("access-control") for k in response.headers)
    assert _post(endpoint, f"EXISTS TABLE {name}").text == "0\n"
    unauthenticated = _post(endpoint, "SELECT 1", auth=("default", "wrong"), headers=headers)
    assert unauthenticated.status_code == 403 and "X-ClickHouse-Exception-Code" not in (
        unauthenticated.headers)


def test_an_allowed_origin_is_served(endpoint: tuple[str, Path]) -> None:
    response = _post(endpoint, "SELECT 1", headers={"Origin": "http://localhost:3000"},
                     params={"add_http_cors_header": "1"})
    assert response.text == "1\n"
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


# -- bodies, sessions -----------------------------------------------------------------------

def _zeros_gzip(total: int) -> bytes:
    """A gzip stream of ``total`` zero bytes, built without holding them."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(16 * 1024 * 1024)
    parts = [packer.compress(chunk) for _ in range(total // len(chunk))]
    return b"".join([*parts, packer.flush()])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_a_decompression_bomb_gets_a_limit_error_with_bounded_memory(
        endpoint: tuple[str, Path]) -> None:
    bomb = _zeros_gzip(1024 ** 3)  # 1 GiB of zeros in about 1 MiB (the old endpoint: 5.6 GB)
    assert len(bomb) < 1100 * 1024
    url, _ = endpoint
    pid = _PIDS[url]
    before = _rss_kib(pid)
    started = time.monotonic()
    response = _post(endpoint, bomb, headers={"Content-Encoding": "gzip"})
    assert _code(response) == 229, response.text[:500]
    assert "max_query_size" in response.text
    assert time.monotonic() - started < 30
    assert _rss_kib(pid) - before < 200 * 1024  # KiB: far below the 1 GiB it expands to
    plain = _post(endpoint, b"SELECT 1 -- " + b"x" * (2 * 1024 * 1024))
    assert _code(plain) == 229
    assert gzip.decompress(gzip.compress(b"SELECT 1")) == b"SELECT 1"


@pytest.mark.parametrize("timeout", ["inf", "nan", "-1", "1e9", "3601", "1.5", ""])
def test_a_bad_session_timeout_is_refused(endpoint: tuple[str, Path], timeout: str) -> None:
    response = _post(endpoint, "SELECT 1", params={"session_id": f"t-{uuid.uuid4().hex[:6]}",
                                                   "session_timeout": timeout})
    assert _code(response) == 374, response.text


def test_sessions_are_capped(endpoint: tuple[str, Path]) -> None:
    codes = [_code(_post(endpoint, "SELECT 1", params={
        "session_id": f"cap-{i}-{uuid.uuid4().hex[:6]}", "session_timeout": "5"}))
        for i in range(8)]
    assert 700 in codes, codes


def test_the_default_reader_password_is_refused_off_loopback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETAR_")}
    env.update({"ETAR_STATE_DIR": str(tmp_path / ".etar"), "ETAR_BIND_HOST": "0.0.0.0",
                "ETAR_CLICKHOUSE_PORT": str(_free_port()),
                "ETAR_CLICKHOUSE_PASSWORD": "a-writer-secret-of-its-own"})
    done = subprocess.run([sys.executable, "-m", "etar_stack.clickhouse_http"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "ETAR_CLICKHOUSE_READER_PASSWORD" in done.stderr + done.stdout
    assert "ETAR_CLICKHOUSE_PASSWORD," not in done.stderr + done.stdout


# -- multipart/form-data: external tables and form fields pass the same rules ---------------
def _form(endpoint: tuple[str, Path], fields: dict[str, str],
          files: dict[str, bytes] | None = None, params: dict[str, str] | None = None,
          auth: tuple[str, str] = WRITER) -> httpx.Response:
    """A multipart/form-data request: text fields, then files (each a named part)."""
    url, _ = endpoint
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
             f"{value}\r\n".encode() for name, value in fields.items()]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
              f'filename="{name}.tsv"\r\n\r\n'.encode() + data + b"\r\n"
              for name, data in (files or {}).items()]
    body = b"".join([*parts, f"--{boundary}--\r\n".encode()])
    return httpx.post(url, content=body, params=params, auth=auth, timeout=60, headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})


@pytest.mark.parametrize("structure", [
    "a String DEFAULT file('/etc/passwd')",
    "a UInt8) ENGINE = File(TSV, '/etc/passwd') --",
    "a UInt8) ENGINE = Memory AS SELECT * FROM file('/etc/passwd') --",
    "a UInt8 MATERIALIZED 1",
])
def test_an_external_tables_structure_is_columns_only(endpoint: tuple[str, Path],
                                                      structure: str) -> None:
    response = _form(endpoint, {"query": "SELECT count() FROM ext"}, {"ext": b"1\n"},
                     params={"ext_structure": structure})
    assert _code(response) in (36, 62, 291), response.text[:300]
    assert "root:" not in response.text


def test_external_data_takes_its_limit_and_a_bad_format(endpoint: tuple[str, Path]) -> None:
    big = _form(endpoint, {"query": "SELECT count() FROM ext"},
                {"ext": b"1\n" * EXTERNAL_LIMIT}, params={"ext_types": "UInt8"})
    assert _code(big) == 229, big.text[:300]
    fine = _form(endpoint, {"query": "SELECT sum(_1) FROM ext"}, {"ext": b"1\n2\n"},
                 params={"ext_types": "UInt8"})
    assert fine.text == "3\n", fine.text[:300]
    odd = _form(endpoint, {"query": "SELECT 1 FROM ext"}, {"ext": b"1\n"},
                params={"ext_types": "UInt8", "ext_format": "TSV; DROP"})
    assert _code(odd) == 36


def test_form_fields_are_bounded_and_locked_like_the_url(endpoint: tuple[str, Path]) -> None:
    long = _form(endpoint, {"query": "SELECT 1 -- " + "x" * (2 * 1024 * 1024)})
    assert _code(long) == 229, long.text[:300]
    locked = _form(endpoint, {"query": "SELECT 1", "format_schema": "/etc/passwd"})
    assert _code(locked) == 452, locked.text[:300]
    outside = _form(endpoint, {"query": "SELECT * FROM file({p:String})", "param_p": "/etc/passwd"})
    assert _code(outside) in (291, 36), outside.text[:300]
    assert "root:" not in outside.text


def test_the_reader_gets_external_data_but_no_writes(endpoint: tuple[str, Path]) -> None:
    read = _form(endpoint, {"query": "SELECT sum(_1) FROM ext"}, {"ext": b"4\n5\n"},
                 params={"ext_types": "UInt8"}, auth=READER)
    assert read.text == "9\n", read.text[:300]
    write = _form(endpoint, {"query": "CREATE TABLE nope (a UInt8) ENGINE = Memory"},
                  {"ext": b"4\n"}, params={"ext_types": "UInt8"}, auth=READER)
    assert _code(write) == 164, write.text[:300]
