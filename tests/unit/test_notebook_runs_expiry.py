"""The replay DAG's executed notebooks expire with the table's retention (reconcile's expiry)."""

from __future__ import annotations

from pathlib import Path

from etar.config import Settings
from etar.minute import Minute
from etar.orchestration.replay import expire_runs


def test_runs_older_than_the_window_are_deleted_others_kept(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, state_dir=tmp_path)  # type: ignore[call-arg]
    runs = settings.notebook_runs_dir
    first = Minute.parse("2026-12-05T10:00:00+00:00")
    names = ["2026-12-05_09-58", "2026-12-05_09-59", "2026-12-05_10-00", "2026-12-05_10-01"]
    for name in names:
        (runs / name).mkdir(parents=True)
        (runs / name / "03_extract.html").write_text("<html/>")
    (runs / "notes").mkdir()  # not named after a minute: never touched
    (runs / "2026-12-05_09-00.txt").write_text("a file, not a run folder")

    assert expire_runs(first, settings) == names[:2]
    assert sorted(p.name for p in runs.iterdir()) == [
        "2026-12-05_09-00.txt", *names[2:], "notes"]
    assert expire_runs(first, settings) == []


def test_no_runs_folder_yet(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, state_dir=tmp_path / "fresh")  # type: ignore[call-arg]
    assert expire_runs(Minute.parse("2026-12-05T10:00:00+00:00"), settings) == []
