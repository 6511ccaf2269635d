"""The dashboard API in-process (it has no services behind it): auth, validation, memory."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import settings
from pydantic import SecretStr
from schemathesis.checks import positive_data_acceptance

from dashboard.api import MAX_BODY, create_app
from etar.config import Settings
from etar.errors import ConfigError
from etar.events.event import EventType

TOKEN = "test-token"


def report(minute: str = "2026-05-01T10:30:00Z", errors: int = 2) -> dict[str, Any]:
    by_type = {t.value: {"success": 10, "error": 0} for t in EventType}
    by_type["PURCHASE"]["error"] = errors
    total = 10 * len(EventType) + errors
    return {"minute": minute, "total_events": total, "total_errors": errors,
            "error_rate": errors / total, "unique_users": 5, "revenue": 12.5,
            "by_event_type": by_type, "source": "s3a://etar/x.parquet",
            "generated_at": "2026-05-01T10:31:02Z"}


@pytest.fixture
def client() -> TestClient:
    settings = Settings(_env_file=None, dashboard_token=SecretStr(TOKEN), dashboard_history=3)
    return TestClient(create_app(settings))


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_empty_before_the_first_report(client: TestClient) -> None:
    latest = client.get("/report")
    assert latest.status_code == 204 and latest.content == b""
    assert client.get("/reports").json() == []
    assert client.get("/healthz").json() == {"status": "ok", "reports": 0, "capacity": 3,
                                              "history": "off"}


def test_post_needs_the_bearer_token(client: TestClient) -> None:
    assert client.post("/report", json=report()).status_code == 401
    assert client.post("/report", json=report(), headers=auth("wrong")).status_code == 401
    assert client.get("/reports").json() == []
    accepted = client.post("/report", json=report(), headers=auth())
    assert accepted.status_code == 201
    assert accepted.json() == {"accepted": "2026-05-01T10:30:00Z", "reports": 1}


@pytest.mark.parametrize("change, reason", [
    (lambda r: r.update(total_events=-1), "greater than or equal"),
    (lambda r: r.update(total_events=r["total_events"] + 1), "differ from by_event_type"),
    (lambda r: r["by_event_type"].update(NOT_A_TYPE={"success": 1, "error": 0}), "extra"),
    (lambda r: r.update(minute="2026-05-01T10:30:15Z"), "start of a minute"),
    (lambda r: r.pop("by_event_type"), "missing"),
    (lambda r: r.update(surprise=1), "extra"),
    (lambda r: r.update(minute="not-a-minute"), "is not a minute"),
    (lambda r: r.update(minute=1767225600), "expected an ISO 8601"),
    (lambda r: r.update(total_errors=-2), "greater than or equal"),
    (lambda r: r["by_event_type"]["PAGE_VIEW"].update(success=-10), "greater than or equal"),
    (lambda r: r.update(error_rate=0.5), "error_rate 0.5 is not total_errors / total_events"),
    (lambda r: r.update(unique_users=10_000), "exceeds total_events"),
])
def test_invalid_reports_get_422_and_are_not_kept(client: TestClient, change: Any,
                                                  reason: str) -> None:
    body = copy.deepcopy(report())
    change(body)
    response = client.post("/report", json=body, headers=auth())
    assert response.status_code == 422
    assert reason in response.text
    assert client.get("/reports").json() == []


def test_latest_history_and_the_deque_bound(client: TestClient) -> None:
    for minute in ("10:31", "10:30", "10:33", "10:32"):
        client.post("/report", json=report(f"2026-05-01T{minute}:00Z"), headers=auth())
    history = client.get("/reports").json()
    assert [r["minute"] for r in history] == ["2026-05-01T10:31:00Z", "2026-05-01T10:32:00Z",
                                              "2026-05-01T10:33:00Z"]
    assert client.get("/report").json()["minute"] == "2026-05-01T10:33:00Z"
    assert len(client.get("/reports", params={"limit": 2}).json()) == 2
    # A minute sent again replaces its report instead of adding one.
    client.post("/report", json=report("2026-05-01T10:33:00Z", errors=7), headers=auth())
    history = client.get("/reports").json()
    assert len(history) == 3 and history[-1]["total_errors"] == 7


def test_by_event_type_has_a_field_per_event_type() -> None:
    from etar.report.minute_report import ByEventType

    assert list(ByEventType.model_fields) == [t.value for t in EventType]


def test_openapi_documents_every_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/report", "/reports", "/healthz"} <= set(paths)
    assert client.get("/docs").status_code == 200


schema = schemathesis.openapi.from_asgi(
    "/openapi.json",
    create_app(Settings(_env_file=None, dashboard_token=SecretStr(TOKEN))))


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, database=None)
def test_api_conforms_to_its_openapi(case: schemathesis.Case) -> None:
    # A report's totals must add up to its per-type counts: a rule OpenAPI cannot state, so
    # schema-valid bodies that break it are rightly refused (422); that one check is off.
    case.call_and_validate(headers=auth(), excluded_checks=[positive_data_acceptance])


def test_a_huge_body_gets_413_before_it_is_parsed(client: TestClient) -> None:
    body = report()
    body["source"] = "x" * (MAX_BODY + 1)
    response = client.post("/report", json=body, headers=auth())
    assert response.status_code == 413 and "larger than" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
        yield b'{"source": "'
        for _ in range(MAX_BODY // 1024 + 1):
            yield b"y" * 1024
        yield b'"}'

    streamed = client.post("/report", content=chunks(), headers={
        **auth(), "Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert client.get("/reports").json() == []
    assert client.post("/report", json=report(), headers=auth()).status_code == 201


def test_a_body_that_is_not_json_gets_a_4xx_with_a_message(client: TestClient) -> None:
    response = client.post("/report", content=b"{not json", headers={
        **auth(), "Content-Type": "application/json"})
    assert 400 <= response.status_code < 500 and "json" in response.text.lower()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "dashboard.example"])
def test_the_default_token_is_refused_off_loopback(host: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ETAR_ALLOW_DEFAULT_SECRETS", raising=False)
    with pytest.raises(ConfigError, match="ETAR_DASHBOARD_TOKEN"):
        create_app(Settings(_env_file=None, bind_host=host))
    assert create_app(Settings(_env_file=None, bind_host=host,
                               dashboard_token=SecretStr("a-token-of-our-own")))
    monkeypatch.setenv("ETAR_ALLOW_DEFAULT_SECRETS", "1")
    assert create_app(Settings(_env_file=None, bind_host=host))


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "dashboard.example"])
def test_an_empty_token_is_refused_off_loopback(host: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETAR_ALLOW_DEFAULT_SECRETS", "1")  # no excuse for an empty one
    monkeypatch.delenv("ETAR_ALLOW_UNAUTHENTICATED_BIND", raising=False)
    with pytest.raises(ConfigError, match="empty ETAR_DASHBOARD_TOKEN"):
        create_app(Settings(_env_file=None, bind_host=host, dashboard_token=SecretStr("")))
    assert create_app(Settings(_env_file=None, bind_host="127.0.0.1",
                               dashboard_token=SecretStr("")))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_the_default_token_is_fine_on_loopback(host: str) -> None:
    assert create_app(Settings(_env_file=None, bind_host=host))


def test_a_minute_out_of_the_date_range_gets_422_not_500(client: TestClient) -> None:
    body = {"minute": "0001-01-01T00:00:00+00:01", "total_events": 0, "total_errors": 0,
            "by_event_type": {}}
    response = client.post("/report", json=body, headers=auth())
    assert response.status_code == 422, response.text
    assert "range" in response.text


def _raw() -> dict[str, str]:
    return {**auth(), "Content-Type": "application/json"}


@pytest.mark.parametrize("field, literal", [
    ("revenue", "Infinity"), ("revenue", "NaN"), ("error_rate", "NaN"),
    ("unique_users", "-Infinity"), ("revenue", "1e400"), ("surprise", "NaN"),
    ("by_event_type.PAGE_VIEW.success", "Infinity"),
])
def test_nan_and_infinity_anywhere_in_a_report_get_422(client: TestClient, field: str,
                                                       literal: str) -> None:
    body = report()
    marker = "__NUMBER__"
    *path, last = field.split(".")
    target = body
    for key in path:
        target = target[key]
    target[last] = marker
    text = json.dumps(body).replace(f'"{marker}"', literal)
    response = client.post("/report", content=text.encode(), headers=_raw())
    assert response.status_code == 422, response.text
    assert literal in response.text and "finite" in response.text
    assert client.get("/reports").json() == []
    assert client.post("/report", json=report(), headers=auth()).status_code == 201


@pytest.mark.parametrize("minute", [
    "2026-01-01T00:00:00+00:00:30",  # an offset with seconds: 23:59:30 the day before
    "2026-01-01T00:00:00-00:00:30",
    "2026-01-01T10:30Z junk", "2026-01-01T10:30:00ZZ", "2026-01-01T10", "2026-01-01T10+01:00",
    "20260101T1030", "2026-W01-4T10:30", "2026-01-01", "2026-01-01T10:30:00.5Z",
    "2026-01-01T10:30:00+0100", "2026-01-01T24:00", "2026-01-01T10:30+25:00",
])
def test_malformed_or_ambiguous_minutes_get_422(client: TestClient, minute: str) -> None:
    response = client.post("/report", json=report(minute), headers=auth())
    assert response.status_code == 422, response.text
    assert "minute" in response.text
    assert client.get("/reports").json() == []


@pytest.mark.parametrize("minute, stored", [
    ("2026-05-01T10:30:00Z", "2026-05-01T10:30:00Z"),
    ("2026-05-01T10:30", "2026-05-01T10:30:00Z"),
    ("2026-05-01 10:30:00.000+00:00", "2026-05-01T10:30:00Z"),
    ("2026-05-01T12:30:00+02:00", "2026-05-01T10:30:00Z"),
])
def test_every_documented_spelling_of_a_minute_is_accepted(client: TestClient, minute: str,
                                                            stored: str) -> None:
    response = client.post("/report", json=report(minute), headers=auth())
    assert response.status_code == 201, response.text
    assert response.json()["accepted"] == stored


def test_reloaded_reports_never_replace_a_report_posted_since_start_up() -> None:
    from dashboard.api import ReportStore
    from etar.report.minute_report import MinuteReport

    store = ReportStore(3)
    store.add(MinuteReport.model_validate(report("2026-05-01T10:33:00Z", errors=7)))
    loaded = [MinuteReport.model_validate(report(f"2026-05-01T10:{m}:00Z")) for m in (30, 31,
                                                                                      32, 33)]
    assert store.preload(loaded) == 3
    assert [(r.minute.minute, r.total_errors) for r in store.recent()] == [(31, 2), (32, 2),
                                                                            (33, 7)]


def test_get_report_is_the_newest_minute_even_when_an_older_one_is_posted_last(
        client: TestClient) -> None:
    """A redone older minute posted late (a reconciliation, a replay) does not become
    ``/report``; the newest minute stays, in a full store too."""
    for minute in ("10:30", "10:31", "10:32"):
        client.post("/report", json=report(f"2026-05-01T{minute}:00Z"), headers=auth())
    redone = client.post("/report", json=report("2026-05-01T10:31:00Z", errors=9),
                         headers=auth())
    assert redone.status_code == 201
    assert client.get("/report").json()["minute"] == "2026-05-01T10:32:00Z"
    # Older than every minute held (capacity 3): kept out, and never served as the newest.
    client.post("/report", json=report("2026-05-01T10:00:00Z", errors=5), headers=auth())
    assert client.get("/report").json()["minute"] == "2026-05-01T10:32:00Z"
    assert [r["minute"][11:16] for r in client.get("/reports").json()] == ["10:30", "10:31",
                                                                            "10:32"]


def test_errors_per_error_code_are_kept_and_must_add_up(client: TestClient) -> None:
    body = report(errors=3)
    body["by_error_code"] = {"PAYMENT_DECLINED": 2, "TIMEOUT": 1}
    assert client.post("/report", json=body, headers=auth()).status_code == 201
    assert client.get("/report").json()["by_error_code"] == {"PAYMENT_DECLINED": 2,
                                                             "TIMEOUT": 1}
    body["by_error_code"] = {"PAYMENT_DECLINED": 2}
    refused = client.post("/report", json=body, headers=auth())
    assert refused.status_code == 422 and "by_error_code counts 2 errors" in refused.text
    body["by_error_code"] = {"": 3}
    assert client.post("/report", json=body, headers=auth()).status_code == 422


def test_a_report_without_error_codes_is_still_read(client: TestClient) -> None:
    """Reports made before the per-code breakdown (the bucket's history) stay valid."""
    older = report("2026-05-01T09:00:00Z")
    assert "by_error_code" not in older
    assert client.post("/report", json=older, headers=auth()).status_code == 201
    assert client.get("/report").json()["by_error_code"] is None


def _executed(folder: Path, name: str, fail: bool) -> Path:
    """An executed notebook as papermill leaves it: two code cells, the second failing."""
    import nbformat
    from nbformat import v4

    cells = [v4.new_code_cell("x = 1", execution_count=1),
             v4.new_code_cell("explode()" if fail else "x + 1", execution_count=2,
                              outputs=[v4.new_output("error", ename="ZeroDivisionError",
                                                     evalue="division by zero",
                                                     traceback=["ZeroDivisionError"])]
                              if fail else [v4.new_output("execute_result", {"text/plain": "2"},
                                                          execution_count=2)])]
    path = folder / name
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(v4.new_notebook(cells=[v4.new_markdown_cell("# title"), *cells]), str(path))
    return path


def test_a_minutes_executed_notebooks_are_listed_and_served_as_html(tmp_path: Path) -> None:
    from etar.orchestration.replay import publish

    settings = Settings(_env_file=None, dashboard_token=SecretStr(TOKEN), state_dir=tmp_path)
    folder = settings.notebook_runs_dir / "2026-05-01_10-30"
    assert publish(_executed(folder, "03_extract.ipynb", fail=False)) is not None
    failed = publish(_executed(folder, "04_analyze.ipynb", fail=True))
    assert failed is not None and (failed.cell, failed.cell_index) == (2, 2)
    api = TestClient(create_app(settings))

    listed = api.get("/notebooks/2026-05-01_10-30").json()
    assert [(n["notebook"], n["status"]) for n in listed] == [("03_extract", "succeeded"),
                                                              ("04_analyze", "failed")]
    assert listed[1]["cell"] == 2 and listed[1]["error"] == "ZeroDivisionError: division by zero"
    # links for a browser: the API's address (the API's own view of its host would be the
    # compose network's name), or the public one when set
    assert listed[1]["url"] == "http://127.0.0.1:8000/notebooks/2026-05-01_10-30/04_analyze"
    public = settings.model_copy(update={"dashboard_api_public_url": "http://localhost:18000/"})
    relisted = TestClient(create_app(public)).get("/notebooks/2026-05-01_10-30").json()
    assert relisted[0]["url"] == "http://localhost:18000/notebooks/2026-05-01_10-30/03_extract"
    page = api.get("/notebooks/2026-05-01_10-30/04_analyze")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "ZeroDivisionError" in page.text and "explode" in page.text  # code shown

    assert api.get("/notebooks/2026-05-01_10-31").json() == []  # not replayed
    assert api.get("/notebooks/2026-05-01_10-30/05_report").status_code == 404
    assert api.get("/notebooks/2026-05-01_10-30/..%2F..%2Fx").status_code == 404
    assert api.get("/notebooks/not-a-minute").status_code == 422
    assert api.get("/notebooks/not-a-minute/03_extract").status_code == 422


def test_publish_without_an_output_notebook_is_none(tmp_path: Path) -> None:
    from etar.orchestration.replay import publish

    assert publish(tmp_path / "03_extract.ipynb") is None
    assert list(tmp_path.iterdir()) == []
