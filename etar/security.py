"""Guards every etar server applies before it listens: no well-known secret off loopback."""

from __future__ import annotations

import ipaddress
import os

from etar.config import Settings
from etar.errors import ConfigError

ALLOW_DEFAULTS = "ETAR_ALLOW_DEFAULT_SECRETS"
"""Set to 1 to serve a non-loopback address with a default secret anyway (a private network
the operator vouches for); the refusal's message names it."""


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
