"""Guards every etar server applies before it listens: no well-known secret off loopback, no
unauthenticated service off loopback unless asked, a private state folder."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

from etar.config import Settings
from etar.errors import ConfigError

ALLOW_DEFAULTS = "ETAR_ALLOW_DEFAULT_SECRETS"
"""Set to 1 to serve a non-loopback address with a default secret anyway (a private network
the operator vouches for); the refusal's message names it."""

ALLOW_UNAUTHENTICATED = "ETAR_ALLOW_UNAUTHENTICATED_BIND"
"""The setting (``Settings.allow_unauthenticated_bind``) that lets a service without any
authentication listen off loopback; the refusal's message names it."""

STATE_DIR_MODE = 0o700
"""The state folder's mode: data, logs and generated configuration are the user's alone."""


def is_loopback(host: str) -> bool:
    """``127.0.0.0/8``, ``::1`` or ``localhost``; a wildcard (``0.0.0.0``, ``::``) is not."""
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def default_secret(settings: Settings, name: str) -> bool:
    """Whether the secret setting ``name`` still has its published default value."""
    default = type(settings).model_fields[name].default
    value = getattr(settings, name)
    return bool(default is not None and value.get_secret_value() == default.get_secret_value())


def refuse_default_secrets(settings: Settings, host: str, *names: str) -> None:
    """ConfigError when ``host`` is not loopback and one of ``names`` is a default secret."""
    if is_loopback(host) or os.environ.get(ALLOW_DEFAULTS) == "1":
        return
    defaults = [name for name in names if default_secret(settings, name)]
    if defaults:
        variables = ", ".join(f"ETAR_{name.upper()}" for name in defaults)
        raise ConfigError(f"refusing to serve on {host} with the well-known default "
                          f"{variables}: set a secret of your own (or {ALLOW_DEFAULTS}=1 on a "
                          "private network)")


def refuse_unauthenticated_bind(settings: Settings, host: str, service: str) -> None:
    """ConfigError when ``host`` is not loopback and ``service`` (which has no authentication
    at all) would listen there, unless ``allow_unauthenticated_bind`` is set."""
    if is_loopback(host) or settings.allow_unauthenticated_bind:
        return
    raise ConfigError(f"refusing to serve {service} on {host}: it has no authentication, so "
                      f"anyone who can reach {host} could read and change it. Bind to loopback "
                      f"(ETAR_BIND_HOST=127.0.0.1), or set {ALLOW_UNAUTHENTICATED}=1 on a "
                      "network you trust")


def require_secrets(settings: Settings, host: str, *names: str) -> None:
    """Off loopback, each secret ``names`` must be set (an empty one often means no
    authentication) and not the published default (:func:`refuse_default_secrets`)."""
    if is_loopback(host):
        return
    empty = [name for name in names if not getattr(settings, name).get_secret_value()]
    if empty and not settings.allow_unauthenticated_bind:
        variables = ", ".join(f"ETAR_{name.upper()}" for name in empty)
        raise ConfigError(f"refusing to serve on {host} with an empty {variables}: set a secret "
                          f"(or {ALLOW_UNAUTHENTICATED}=1 on a network you trust)")
    refuse_default_secrets(settings, host, *names)


def secure_state_dir(path: Path) -> Path:
    """Create the state folder with mode 0700, or tighten an existing one to it."""
    path.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != STATE_DIR_MODE:
        path.chmod(STATE_DIR_MODE)
    return path
