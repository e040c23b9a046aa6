"""Exceptions of the control plane.  Packets never raise: the data plane
returns verdicts with named drop reasons instead."""


class ConfigError(Exception):
    """A command or configuration was refused; nothing was changed.

    `line` is the 1-based line number in a rules file / -R input when known.
    """

    def __init__(self, message: str, line: int | None = None) -> None:
        self.message = message
        self.line = line
        super().__init__(f"line {line}: {message}" if line is not None else message)
