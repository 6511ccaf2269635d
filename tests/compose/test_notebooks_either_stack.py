"""Every notebook runs on either stack: read statically, what notebooks 01-05 reach.

In the compose `jupyter` there is no native stack: no etar-stack distribution (the etar image
leaves it out), no `.etar/`, and every service sits behind a compose name that only the
`ETAR_*` settings of that container carry. So, for the notebooks and every etar module they
import (directly, or inside a function):

- none but 00_stack touches the native stack; the one import of `etar_stack` is
  `workbook.services`, guarded (tests/unit/test_workbook_without_stack.py runs it without),
  and only 00 calls it;
- the notebooks take their settings from `get_settings()` and name no address themselves;
- every address setting those modules read is set in the `jupyter` service's environment to
  a compose service (left unset, it would be the default 127.0.0.1: the container itself);
  the Spark Connect address is read only in connect mode, which compose does not use;
- no module reads a port only a native service listens on, and the one state folder they
  write (the sandbox sink's progress file) is the image's own, writable state dir.
"""

from __future__ import annotations

import ast
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from etar.config import Settings
from tests import REPO_ROOT
from tests.compose.test_defects import _hosts, _state_dir

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
NATIVE_AWARE = "00_stack.ipynb"
"""Shows the native stack's services when there is one (an empty table in compose)."""

ADDRESS_OF = {
    "kafka_bootstrap_servers": "kafka_bootstrap_servers",
    "kafka_port": "kafka_bootstrap_servers",
    "kafka_members": "kafka_bootstrap_servers",
    "schema_registry_url": "schema_registry_url",
    "schema_registry_port": "schema_registry_url",
    "clickhouse_host": "clickhouse_host",
    "clickhouse_port": "clickhouse_port",
    "s3_endpoint": "s3_endpoint",
    "s3_port": "s3_endpoint",
    "spark_master": "spark_master",
    "spark_connect_url": "spark_connect_url",
    "spark_connect_port": "spark_connect_url",
    "dashboard_api_url": "dashboard_api_url",
    "dashboard_api_port": "dashboard_api_url",
    "dashboard_api_public_url": "dashboard_api_public_url",
    "dashboard_links_url": "dashboard_api_public_url",
    "airflow_api_url": "airflow_api_url",
    "airflow_api_port": "airflow_api_url",
    "bind_host": "bind_host",
}
"""Settings (fields and properties) a client reads to reach a service → the setting that
holds the address."""

CONNECT_ONLY = {"spark_connect_url"}
"""Read only when ETAR_SPARK_MODE=connect (the native stack's warm Spark Connect server)."""

NATIVE_LISTEN_ONLY = {"kafka_controller_port", "dashboard_ui_port", "postgres_port",
                      "redis_port", "airflow_worker_log_port", "airflow_triggerer_log_port",
                      "jupyter_port", "clickhouse_user_files"}
"""Ports and folders only the native stack's own services use: meaningless in compose."""

STATE_WRITERS = {"etar.sink.consumer"}
"""Modules the notebooks reach that use ``state_dir``: the sink 01_produce runs in the kernel
for its sandbox keeps its progress file there (its own state, not the native stack's)."""


def _code(notebook: Path) -> ast.Module:
    """The notebook's code cells as one module (IPython magics left out)."""
    cells = [cell for cell in json.loads(notebook.read_text())["cells"]
             if cell["cell_type"] == "code"]
    lines = [line for cell in cells for line in "".join(cell["source"]).splitlines()
             if not line.lstrip().startswith(("%", "!"))]
    return ast.parse("\n".join(lines), filename=notebook.name)


def _imported(tree: ast.AST) -> set[str]:
    """Every module (or module.name) imported anywhere in ``tree``, functions included."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _source(module: str) -> Path | None:
    path = REPO_ROOT.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _reached(tree: ast.AST) -> dict[str, ast.Module]:
    """The etar modules ``tree`` imports, transitively (and their parent packages)."""
    found: dict[str, ast.Module] = {}
    todo = [name for name in _imported(tree) if name.split(".")[0] == "etar"]
    while todo:
        name = todo.pop()
        path = _source(name)
        if path is None or name in found:
            continue
        found[name] = _tree(path)
        todo.extend(n for n in _imported(found[name]) if n.split(".")[0] == "etar")
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
    return found


def _settings_read(tree: ast.AST) -> set[str]:
    """Settings fields and properties ``tree`` reads (``x.field``, or named as text, as in
    ``settings.environ("state_dir")``)."""
    known = set(Settings.model_fields) | {
        name for name, value in vars(Settings).items() if isinstance(value, property)}
    read = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in known}
    return read | {node.value for node in ast.walk(tree)
                   if isinstance(node, ast.Constant) and node.value in known}


def _calls(tree: ast.AST) -> set[str]:
    """Dotted names called in ``tree`` (``workbook.services``, ``get_settings``…)."""
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            called.add(ast.unparse(node.func))
    return called


@pytest.mark.parametrize("notebook", [nb for nb in NOTEBOOKS if nb.name != NATIVE_AWARE],
                         ids=lambda nb: nb.stem)
def test_the_notebook_itself_needs_no_native_stack_and_names_no_address(
        notebook: Path) -> None:
    tree = _code(notebook)
    assert not {n for n in _imported(tree) if n.split(".")[0] == "etar_stack"}, \
        "etar-stack is not installed where no native stack runs (the compose images)"
    called = _calls(tree)
    assert not {c for c in called if c.split(".")[-1] in ("services", "stack", "running")}, \
        "the native stack's services are 00_stack's to show"
    assert "get_settings" in called, "settings come from get_settings() (the ETAR_* settings)"
    assert not {c for c in called if c.split(".")[-1] in ("Settings", "getenv", "model_copy")}, \
        "a notebook builds no settings of its own"
    texts = [node.value for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    for text in texts:
        assert not re.search(r"://|\.etar\b|127\.0\.0\.1|localhost|0\.0\.0\.0", text), text
    reads = _settings_read(tree)
    assert not reads & (set(ADDRESS_OF) | NATIVE_LISTEN_ONLY | {"state_dir"}), reads


def _notebook_modules() -> dict[str, ast.Module]:
    modules: dict[str, ast.Module] = {}
    for notebook in NOTEBOOKS:
        if notebook.name != NATIVE_AWARE:
            modules.update(_reached(_code(notebook)))
    modules.pop("etar.config")  # defines every setting; the others are what is read
    return modules


def _native_stack_imports(tree: ast.AST, where: str = "<module>") -> set[str]:
    """The functions of ``tree`` (``<module>``: its top level) that import etar_stack."""
    found = set()
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found |= _native_stack_imports(node, node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom) and any(
                name.split(".")[0] == "etar_stack" for name in _imported(node)):
            found.add(where)
        else:
            found |= _native_stack_imports(node, where)
    return found


def test_the_only_native_stack_import_is_guarded_and_00s_alone() -> None:
    modules = _notebook_modules()
    assert {"etar.workbook", "etar.analysis.submit", "etar.sink.consumer"} <= set(modules)
    importers = {name: found for name, tree in modules.items()
                 if (found := _native_stack_imports(tree))}
    assert importers == {"etar.workbook": {"services"}}, importers
    services = next(node for node in ast.walk(modules["etar.workbook"])
                    if isinstance(node, ast.FunctionDef) and node.name == "services")
    guard = next(node for node in ast.walk(services) if isinstance(node, ast.Try))
    assert any(n.split(".")[0] == "etar_stack"
               for n in _imported(ast.Module(body=guard.body, type_ignores=[])))
    assert any(ast.unparse(handler.type or ast.Name("BaseException")) in (
        "ImportError", "ModuleNotFoundError") for handler in guard.handlers)
    for notebook in NOTEBOOKS:
        shows = "workbook.services" in _calls(_code(notebook))
        assert shows == (notebook.name == NATIVE_AWARE), notebook.name


def test_every_address_the_notebooks_reach_is_set_in_jupyter_to_a_service(
        project: dict[str, Any]) -> None:
    jupyter = project["jupyter"]
    env = jupyter["environment"]
    read = set().union(*(_settings_read(tree) for tree in _notebook_modules().values()))
    assert not read & NATIVE_LISTEN_ONLY, read & NATIVE_LISTEN_ONLY
    addresses = {ADDRESS_OF[name] for name in read if name in ADDRESS_OF}
    assert {"kafka_bootstrap_servers", "schema_registry_url", "clickhouse_host", "s3_endpoint",
            "spark_master", "dashboard_api_url", "bind_host"} <= addresses, addresses
    assert env["ETAR_SPARK_MODE"] == "submit", "the Connect address is for connect mode only"
    defaults = Settings(_env_file=None)
    for name in sorted(addresses - CONNECT_ONLY):
        key = f"ETAR_{name.upper()}"
        assert key in env, f"jupyter leaves {key} at {getattr(defaults, name)!r}"
        if name == "bind_host":  # the Spark driver advertises it to the executors
            assert env[key] == jupyter["hostname"] == "jupyter"
        elif name == "clickhouse_port" or name.endswith("_public_url"):
            continue  # a port; the browser's URL (test_defects checks it is published)
        else:
            hosts = _hosts(key, env[key])
            assert hosts and all(host in project for host in hosts), f"{key}={env[key]}"


def test_the_state_the_notebooks_write_is_the_images_own() -> None:
    users = {name for name, tree in _notebook_modules().items()
             if "state_dir" in _settings_read(tree)}
    assert users <= STATE_WRITERS, users
    dockerfile = (REPO_ROOT / "docker" / "etar.Dockerfile").read_text()
    state = _state_dir("etar.Dockerfile")
    assert re.search(rf"mkdir -p {re.escape(state)} && chown etar {re.escape(state)}",
                     dockerfile), "the etar image's state dir is writable by its user"
    assert re.search(r"^USER etar$", dockerfile, re.MULTILINE)
