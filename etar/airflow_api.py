"""Airflow's REST API (v2) as etar uses it: unpause a DAG, trigger it, read its runs.

Used by ``etar up`` / ``etar demo`` / ``etar replay --airflow``, the benchmarks and the tests;
works against any Airflow 3 api-server whose simple-auth user is in the settings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from etar.config import Settings, get_settings
from etar.errors import EtarError, ServiceUnavailable
from etar.minute import Minute

PIPELINE_DAG = "etar_pipeline"
REPLAY_DAG = "etar_notebook_replay"


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

    def runs(self, dag_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The most recent runs, newest first."""
        page = self._send("GET", f"/api/v2/dags/{dag_id}/dagRuns",
                          params={"limit": limit, "order_by": "-run_after"}).json()
        runs: list[dict[str, Any]] = page["dag_runs"]
        return runs

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        document: dict[str, Any] = self._send(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()
        return document

    def run_of_minute(self, minute: Minute, dag_id: str = PIPELINE_DAG) -> dict[str, Any] | None:
        """The scheduled run whose data interval is ``minute``, if any."""
        for run in self.runs(dag_id):
            start = run.get("data_interval_start")
            if start and datetime.fromisoformat(start) == minute.start:
                return run
        return None

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """Task id → task instance (state, start_date, end_date, try_number…) of one run."""
        page = self._send("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()
        return {ti["task_id"]: ti for ti in page["task_instances"]}

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """Task id → state of one run."""
        return {task: ti["state"] for task, ti in self.task_instances(dag_id, run_id).items()}
