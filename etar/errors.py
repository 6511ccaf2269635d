"""etar's exceptions: each message says what went wrong and what to do about it."""


class EtarError(Exception):
    """Base class of every error etar raises on purpose."""


class ConfigError(EtarError):
    """A setting or parameter is invalid."""


class ServiceUnavailable(EtarError):
    """A service etar needs (broker, registry, …) cannot be reached."""


class StackError(EtarError):
    """The native stack could not be bootstrapped, started or stopped."""
