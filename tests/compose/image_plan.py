"""The Python steps of an image's Dockerfile, replayed natively: what its final stage copies
from the checkout and the ``uv`` commands it runs, in order (apt-get, useradd and the Maven
stage are the image's business; the S3A jars here are the same pom's, from
``etar stack install``)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests import REPO_ROOT


@dataclass
class Plan:
    """The final stage of a Dockerfile, as far as its Python environment goes."""

    workdir: str = ""
    """The first WORKDIR: the project folder of the image (``/opt/etar``)."""
    build_env: dict[str, str] = field(default_factory=dict)
    """``UV_*`` set by ENV before the uv commands."""
    runtime_env: dict[str, str] = field(default_factory=dict)
    """Every ENV of the stage, last value wins (PATH, SPARK_HOME, ETAR_*)."""
    steps: list[tuple[str, list[str]]] = field(default_factory=list)
    """("copy", [sources..., dest]) and ("uv", argv), in Dockerfile order."""


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = [line.strip() for line in joined.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines
            if line and not line.startswith("#") and " " in line]


def plan(dockerfile: Path) -> Plan:
    """Read the final stage of ``dockerfile``."""
    instructions = _instructions(dockerfile.read_text())
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    result = Plan()
    for op, args in instructions[last_from + 1:]:
        if op == "ENV":
            pairs = dict(item.split("=", 1) for item in shlex.split(args))
            result.runtime_env.update(pairs)
            if not any(kind == "uv" for kind, _ in result.steps):
                result.build_env.update({k: v for k, v in pairs.items() if k.startswith("UV_")})
        elif op == "WORKDIR" and not result.workdir:
            result.workdir = args
        elif op == "COPY" and "--from=" not in args:
            result.steps.append(("copy", [a for a in shlex.split(args) if not a.startswith("--")]))
        elif op == "RUN" and args.startswith("uv "):
            result.steps.append(("uv", shlex.split(args)))
    assert result.workdir and any(kind == "uv" for kind, _ in result.steps), dockerfile
    return result


def replay(the_plan: Plan, root: Path, venv: Path, timeout: float = 300) -> None:
    """Run the plan's copies and uv commands with ``root`` as the image's project folder and
    ``venv`` as its UV_PROJECT_ENVIRONMENT. One deviation: no bytecode compilation (it only
    saves the first import's time in an image, and costs a minute here)."""
    root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV" and not k.startswith("UV_")}
    env.update(the_plan.build_env)
    env.update({"UV_PROJECT_ENVIRONMENT": str(venv), "UV_COMPILE_BYTECODE": "0"})
    for kind, args in the_plan.steps:
        if kind == "copy":
            *sources, dest = args
            for source in sources:
                target = root / dest / Path(source).name if dest.endswith(("/", ".")) \
                    else root / dest
                if (REPO_ROOT / source).is_dir():
                    shutil.copytree(REPO_ROOT / source, target, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc",
                                                                  ".ipynb_checkpoints"))
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)  # as COPY creates it
                    shutil.copy2(REPO_ROOT / source, target)
        else:
            # the uv that runs the tests (`uv run` names itself in UV), else the one on PATH
            uv = os.environ.get("UV") or shutil.which("uv")
            assert uv, "uv is needed to replay the Dockerfiles' uv commands"
            subprocess.run([uv, *args[1:]], cwd=root, env=env, check=True, timeout=timeout,
                           capture_output=True, text=True)


def runtime_environ(the_plan: Plan, root: Path, venv: Path) -> dict[str, str]:
    """The image's ENV with its folders mapped onto ``root`` / ``venv`` here."""
    mapped = {}
    image_venv = the_plan.build_env["UV_PROJECT_ENVIRONMENT"]
    for key, value in the_plan.runtime_env.items():
        if key.startswith("UV_"):
            continue
        value = value.replace(image_venv, str(venv)).replace(the_plan.workdir, str(root))
        mapped[key] = value.replace("$PATH", os.environ["PATH"])
    return mapped
