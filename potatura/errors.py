"""User-facing errors: one clear line, exit code 2, no traceback (the CLI catches these)."""


class PotaturaError(Exception):
    """An error caused by the user's input (file, field, layer, shape), not by a bug."""

    exit_code = 2


class ConfigError(PotaturaError):
    """A flow file or option is malformed: the message names the field and accepted values."""


class DataError(PotaturaError):
    """A dataset file is missing, truncated or malformed."""


class UnsupportedError(PotaturaError):
    """A layer or operator a stage cannot handle: the message names it and what is supported."""
