"""tools/compose_check.py's waiting logic, against a stand-in `docker` that answers `compose ps`
as Compose v2 does (JSON lines or, before 2.21, one array): what it accepts as up, what fails."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from tests import REPO_ROOT


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compose_check",
                                                  REPO_ROOT / "tools" / "compose_check.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, containers: list[dict[str, object]],
            array: bool = False) -> None:
    lines = [json.dumps(containers)] if array else [json.dumps(c) for c in containers]
    out = tmp_path / "ps.json"
    out.write_text("\n".join(lines) + "\n")
    script = tmp_path / "docker"
    script.write_text(f'#!/bin/sh\ncase "$*" in *" ps "*) cat {out};; *) echo "log line";; esac\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")


UP = [{"Service": "broker", "State": "running", "Health": "healthy", "ExitCode": 0},
      {"Service": "kafka-init", "State": "exited", "Health": "", "ExitCode": 0},
      {"Service": "jupyter", "State": "running", "Health": "", "ExitCode": 0}]


@pytest.mark.parametrize("array", [False, True])
def test_healthy_running_and_one_shots_that_exited_0_are_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, array: bool) -> None:
    check = _load()
    _docker(tmp_path, monkeypatch, UP, array)
    check.wait_healthy(timeout=5)


def test_a_failed_one_shot_fails_at_once_and_an_unhealthy_service_times_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check = _load()
    _docker(tmp_path, monkeypatch, [*UP, {"Service": "s3-init", "State": "exited",
                                          "Health": "", "ExitCode": 1}])
    with pytest.raises(check.CheckFailed, match="s3-init exited 1"):
        check.wait_healthy(timeout=60)
    _docker(tmp_path, monkeypatch, [*UP, {"Service": "connect", "State": "running",
                                          "Health": "starting", "ExitCode": 0}])
    with pytest.raises(check.CheckFailed, match=r"connect \(starting\)"):
        check.wait_healthy(timeout=0.1)
