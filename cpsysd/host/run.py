"""The one place cpsysd runs external commands (systemctl, systemd-analyze, ...).

Every argv is logged at debug level and checked; a failure becomes a
:class:`~cpsysd.errors.CommandError` whose message quotes the command and its stderr.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from cpsysd.errors import CommandError

log = logging.getLogger("cpsysd.command")


def run_command(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 120,
    input_text: str | None = None,
    env: dict[str, str] | None = None,
    umask: int = -1,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (no shell), capture its output as text, raise CommandError on failure.
    ``umask``: the child's (subprocess.Popen; -1 keeps this process's)."""
    cmdline = shlex.join(argv)
    log.debug("running %s", cmdline)
    if shutil.which(argv[0]) is None:
        raise CommandError(
            f"{argv[0]} not found", "install systemd (it provides systemctl and systemd-analyze)"
        )
    try:
        result = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input_text,
            env=env,
            umask=umask,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CommandError(f"{cmdline} did not finish within {timeout:.0f} s") from None
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit status {result.returncode}"
        raise CommandError(f"{cmdline} failed: {last}")
    return result


def systemd_running() -> bool:
    """True when systemd is the init system (sd_booted(3): /run/systemd/system exists)."""
    return Path("/run/systemd/system").is_dir()


def systemctl(
    *args: str, user: bool = False, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``systemctl [--user] ARGS...`` through :func:`run_command`."""
    argv = ["systemctl", *(["--user"] if user else []), *args]
    return run_command(argv, check=check)
