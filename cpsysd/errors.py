"""The project's exceptions: each carries a one-line, user-facing message and an optional hint.

Library code raises these and never prints or exits; ``cpsysd.cli`` turns them into one line on
stderr and a non-zero exit code (a traceback only with ``--debug``).
"""

from __future__ import annotations

ERROR_PREFIX = "cpsysd: error: "  # how every command starts its one-line error on stderr
WARNING_PREFIX = "cpsysd: warning: "  # like ERROR_PREFIX: a line on stderr, but exit status 0


class CpsysdError(Exception):
    """An error the user can act on. ``str(err)`` is the message; ``err.hint`` says what to do."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint on a single line, control characters made visible."""
        text = self.message if not self.hint else f"{self.message} ({self.hint})"
        return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class SpecError(CpsysdError):
    """The app description (cpsysd.toml) is invalid. ``field`` names the offending key."""

    exit_code = 2

    def __init__(self, field: str, message: str, hint: str | None = None) -> None:
        super().__init__(f"{field}: {message}", hint)
        self.field = field


class InstallError(CpsysdError):
    """Writing, enabling or removing units failed, or would clobber something not ours."""


class CommandError(CpsysdError):
    """An external command (systemctl, systemd-analyze, ...) failed."""


class VerifyError(CpsysdError):
    """``systemd-analyze`` found a problem in the generated units."""


class ActivationError(CpsysdError):
    """The socket-activation environment handed to ``cpsysd serve`` is unusable."""

    exit_code = 3


class TLSError(CpsysdError):
    """Key or certificate material is invalid, mismatched or unsafe."""


class HarnessError(CpsysdError):
    """The ephemeral systemd container could not be booted or used."""
