"""Airflow's REST API (v2) as etar uses it: unpause a DAG, trigger it, read its runs.

Used by ``etar up`` / ``etar demo`` / ``etar replay --airflow``, the reconciliation (it
triggers a run of the pipeline for each minute it redoes), the benchmarks and the tests;
works against any Airflow 3 api-server whose simple-auth user is in the settings.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import httpx

from etar.config import Settings, get_settings
from etar.errors import EtarError, ServiceUnavailable
from etar.minute import InvalidMinute, Minute

PIPELINE_DAG = "etar_pipeline"
REPLAY_DAG = "etar_notebook_replay"
ACTIVE = ("queued", "running")
"""States of a run that has not ended."""
PAGE = 100
"""Runs per request (the api-server's default ``maximum_page_limit``)."""


class AirflowError(EtarError):
    """The Airflow API refused a request."""


class AirflowApi:
    """A logged-in client of the api-server (a JWT from ``/auth/token``)."""

    def __init__(self, settings: Settings | None = None, timeout: float = 10.0) -> None:
        self.settings = settings or get_settings()
        self._http = httpx.Client(base_url=self.settings.airflow_api_url.rstrip("/"),
                                  timeout=timeout)
        self._token: str | None = None

    def __enter__(self) -> AirflowApi:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def _login(self) -> str:
        response = self._send("POST", "/auth/token", authorized=False, json={
            "username": self.settings.airflow_admin_user,
            "password": self.settings.airflow_admin_password.get_secret_value()})
        token: str = response.json()["access_token"]
        return token

    def _send(self, method: str, path: str, authorized: bool = True,
              **kwargs: Any) -> httpx.Response:
        headers = {}
        if authorized:
            self._token = self._token or self._login()
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"Airflow at {self.settings.airflow_api_url} is "
                                     f"unreachable ({exc}); is the stack up?") from exc
        if response.status_code >= 400:
            raise AirflowError(f"Airflow answered {method} {path} with "
                               f"{response.status_code}: {response.text[:500]}")
        return response

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self._send("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": paused})

    def dag(self, dag_id: str) -> dict[str, Any]:
        document: dict[str, Any] = self._send("GET", f"/api/v2/dags/{dag_id}").json()
        return document

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None,
                logical_date: datetime | None = None) -> dict[str, Any]:
        """Start a run now (``logical_date`` None: a run without a data interval)."""
        body = {"logical_date": logical_date.isoformat() if logical_date else None,
                "conf": conf or {}}
        run: dict[str, Any] = self._send("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                                         json=body).json()
        return run

    def trigger_minute(self, dag_id: str, minute: Minute, run_id: str,
                       conf: dict[str, Any] | None = None, note: str | None = None,
                       ) -> dict[str, Any]:
        """Start a run whose data interval is ``minute``, under ``run_id``. Its logical date
        is the trigger time: unique, so it never collides with the scheduled run of any minute
        (a logical date of ``minute.end`` would be the next minute's)."""
        body = {"dag_run_id": run_id, "logical_date": datetime.now(UTC).isoformat(),
                "data_interval_start": minute.start.isoformat(),
                "data_interval_end": minute.end.isoformat(), "conf": conf or {}, "note": note}
        run: dict[str, Any] = self._send("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                                         json=body).json()
        return run

    def runs(self, dag_id: str, limit: int = 50, states: Iterable[str] = (),
             run_id_prefix: str | None = None,
             ended_since: datetime | None = None) -> list[dict[str, Any]]:
        """The most recent runs, newest first; only those in ``states``, whose id starts with
        ``run_id_prefix`` or that ended since ``ended_since`` when given."""
        params: dict[str, Any] = {"limit": limit, "order_by": "-run_after"}
        if states:
            params["state"] = list(states)
        if run_id_prefix:
            params["run_id_prefix_pattern"] = run_id_prefix
        if ended_since:
            params["end_date_gte"] = ended_since.isoformat()
        page = self._send("GET", f"/api/v2/dags/{dag_id}/dagRuns", params=params).json()
        runs: list[dict[str, Any]] = page["dag_runs"]
        return runs

    def active_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every run that is queued or running (at most :data:`PAGE`, newest first)."""
        return self.runs(dag_id, limit=PAGE, states=ACTIVE)

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        document: dict[str, Any] = self._send(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()
        return document

    def run_of_minute(self, minute: Minute, dag_id: str = PIPELINE_DAG) -> dict[str, Any] | None:
        """The scheduled run whose data interval is ``minute``, if any."""
        for run in self.runs(dag_id):
            if minute_of_run(run) == minute:
                return run
        return None

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """Task id → task instance (state, start_date, end_date, try_number…) of one run."""
        page = self._send("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()
        return {ti["task_id"]: ti for ti in page["task_instances"]}

    def extra_links(self, dag_id: str, run_id: str, task_id: str) -> dict[str, str | None]:
        """Name → URL of a task instance's extra links (None: not set for that run)."""
        links: dict[str, str | None] = self._send(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links"
        ).json()["extra_links"]
        return links

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """Task id → state of one run."""
        return {task: ti["state"] for task, ti in self.task_instances(dag_id, run_id).items()}


def minute_of_run(run: dict[str, Any]) -> Minute | None:
    """The minute a run of the pipeline covers (its data interval); None without one."""
    start = run.get("data_interval_start")
    if not start:
        return None
    try:
        return Minute(datetime.fromisoformat(start))
    except InvalidMinute:
        return None  # an interval not on a minute: not a run of one minute
