"""The wheels and the venvs of tests/packaging, built once per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.packaging import venvs


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    return {name: venvs.build_wheel(name, out) for name in ("etar", "etar-stack")}


@pytest.fixture(scope="session")
def venv_with(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
              ) -> Callable[..., Path]:
    """``venv_with("spark")``: a venv of the etar wheel with those extras (made once)."""
    made: dict[tuple[str, ...], Path] = {}

    def get(*extras: str) -> Path:
        key = tuple(sorted(extras))
        if key not in made:
            root = tmp_path_factory.mktemp("venv-" + ("-".join(key) or "base"))
            made[key] = venvs.make_venv(root, wheels["etar"], key)
        return made[key]

    return get
