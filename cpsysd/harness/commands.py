"""What a running :class:`cpsysd.harness.container.Container` offers: commands, files and the
journal.

Everything here enters the container through the namespaces of its PID 1 (nsenter(1)), never
through a mount: no host directory is ever visible inside. Commands entered with nsenter would
keep the host's capabilities, so :meth:`ContainerCommands.enter_argv` drops the same bounding
set as the container's PID 1 (setpriv(1)) and starts from a clean environment.
"""

from __future__ import annotations

import io
import re
import shlex
import tarfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath

from cpsysd.errors import CommandError, HarnessError
from cpsysd.harness import init as harness_init
from cpsysd.harness.process import stream_tar
from cpsysd.host.run import CompletedProcess, capture

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
INSIDE_ENV = {
    "PATH": harness_init.CONTAINER_PATH,
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "HOME": "/root",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}


# ActiveState values a unit leaves by itself (org.freedesktop.systemd1(5); "refreshing" is newer
# than systemd 252).
_TRANSITIONAL = ("activating", "deactivating", "reloading", "refreshing")


class ContainerCommandError(CommandError):
    """A command inside the container failed or timed out; its output is kept."""

    def __init__(
        self, argv: Sequence[str], returncode: int | None, stdout: str, stderr: str, what: str
    ) -> None:
        tail = "\n".join(stderr.strip().splitlines()[-20:] or stdout.strip().splitlines()[-20:])
        super().__init__(f"{shlex.join(argv)} {what}" + (f":\n{tail}" if tail else ""))
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


class ContainerCommands:
    """The command, file and journal API of :class:`cpsysd.harness.container.Container`, which
    boots and
    tears down the container and sets the attributes declared here."""

    name: str
    network: str
    pid1: int
    _state: str
    _identities: dict[str, tuple[int, int, str]]

    # --- commands inside ------------------------------------------------------------------------

    def _require_running(self) -> None:
        if self._state not in ("up", "booting-systemd") or not self.pid1:
            raise HarnessError(
                f"container {self.name} is not running", "use it inside `with Container() as box:`"
            )

    def _identity(self, user: str) -> tuple[int, int, str]:
        if user not in self._identities:
            entry = self.run(["getent", "passwd", user], check=False).stdout.strip().split(":")
            if len(entry) < 7:
                raise HarnessError(
                    f"no user {user!r} in container {self.name}",
                    "create it first, e.g. useradd -m NAME",
                )
            self._identities[user] = (int(entry[2]), int(entry[3]), entry[5])
        return self._identities[user]

    def enter_argv(self, env: dict[str, str] | None = None, user: str | None = None) -> list[str]:
        """The argv prefix that runs a command inside: all namespaces of PID 1 (nsenter), the
        container's capability bounding set (setpriv), a clean environment (env -i)."""
        self._require_running()
        variables = dict(INSIDE_ENV)
        ids: list[str] = []
        if user is not None:
            uid, gid, home = self._identity(user)
            ids = ["--reuid", str(uid), "--regid", str(gid), "--init-groups"]
            variables.update(HOME=home, USER=user, LOGNAME=user, XDG_RUNTIME_DIR=f"/run/user/{uid}")
        for key, value in (env or {}).items():
            if not _ENV_NAME.fullmatch(key) or "\0" in value:
                raise HarnessError(f"environment variable {key!r} is invalid")
            variables[key] = value
        drop = ",".join(f"-{cap}" for cap in harness_init.DROPPED_CAPABILITIES)
        if self.network == "host":
            drop += f",-{harness_init.NET_ADMIN[0]}"
        return [
            "nsenter", "-t", str(self.pid1), "-a",
            "setpriv", "--bounding-set", drop, *ids, "--",
            "env", "-i", *(f"{key}={value}" for key, value in variables.items()),
        ]  # fmt: skip

    def run(
        self,
        argv: list[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
        env: dict[str, str] | None = None,
        user: str | None = None,
    ) -> CompletedProcess[str]:
        """Run ``argv`` inside the container (as root, or as ``user``) and capture its output.
        With ``check``, a non-zero exit raises :class:`ContainerCommandError`; a timeout always
        does (the command and its children are killed)."""
        result = capture(self.enter_argv(env, user) + list(argv), input_text=input, timeout=timeout)
        status, out, err = result.status, result.stdout, result.stderr
        if status is None:
            raise ContainerCommandError(argv, None, out, err, f"timed out after {timeout:g} s")
        if check and status != 0:
            raise ContainerCommandError(argv, status, out, err, f"exited with status {status}")
        return CompletedProcess(argv, status, out, err)

    def sh(self, script: str, **kw: object) -> CompletedProcess[str]:
        """Run a bash script inside; keywords as for :meth:`run`."""
        return self.run(["bash", "-c", script], **kw)  # type: ignore[arg-type]

    def wait_settled(self, unit: str, *, user: str | None = None, timeout: float = 120) -> str:
        """Wait while ``unit`` is activating, reloading or deactivating; return its settled
        ``ActiveState/SubState`` (e.g. ``active/running``). A socket-activated Type=notify
        service answers its first request before it has said READY=1, so its status read right
        after that request may still say "activating". ``timeout`` only keeps a broken run from
        hanging (systemd itself ends a start at TimeoutStartSec); when it passes, the state
        then is returned."""
        argv = ["systemctl", *(["--user"] if user else []), "show", unit]
        argv += ["--property=ActiveState,SubState"]
        deadline = time.monotonic() + timeout
        while True:
            out = self.run(argv, user=user).stdout
            state = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
            active = state.get("ActiveState", "")
            if active not in _TRANSITIONAL or time.monotonic() > deadline:
                return f"{active}/{state.get('SubState', '')}"
            time.sleep(0.02)

    def journal(self, unit: str | None = None, *, extra: Sequence[str] = ()) -> str:
        """``journalctl`` inside: the whole journal, or one unit's (``-u``), plus ``extra`` args."""
        argv = ["journalctl", "--no-pager", "--quiet"]
        if unit:
            argv += ["--unit", unit]
        return self.run([*argv, *extra]).stdout

    # --- files ------------------------------------------------------------------------------------

    def send_tar(
        self, directory: str, fill: Callable[[tarfile.TarFile], None], timeout: float = 300
    ) -> None:
        """Stream a tar archive, written by ``fill``, into ``directory`` inside (created if
        missing) through nsenter: no host directory is ever mounted into the container."""
        if not directory.startswith("/"):
            raise HarnessError(f"{directory!r} is not an absolute path inside the container")
        script = 'mkdir -p -- "$1" && exec tar --extract --file=- --directory="$1" --numeric-owner'
        command = [*self.enter_argv(), "sh", "-c", script, "sh", directory]
        status, message = stream_tar(command, fill, timeout)
        if status != 0:
            where = f"{directory} in container {self.name}"
            why = f"status {status}" if status is not None else f"timed out after {timeout:g} s"
            raise HarnessError(f"copying into {where} failed: {message or why}")

    def copy_in(
        self, host_path: str | Path, container_path: str, *, exclude: Iterable[str] = ()
    ) -> None:
        """Copy a host file or directory tree to ``container_path`` (owned by root, modes kept).
        ``exclude``: names (globs) of files and directories to leave out, e.g. ``__pycache__``."""
        source = Path(host_path)
        if not source.exists():
            raise HarnessError(f"{source} does not exist")
        target = PurePosixPath(container_path)
        patterns = list(exclude)

        def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
            name = PurePosixPath(info.name).name
            if any(PurePosixPath(name).match(pattern) for pattern in patterns):
                return None
            return _root_owned(info)

        self.send_tar(
            str(target.parent),
            lambda archive: archive.add(source, arcname=target.name, filter=keep),
        )

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        """Create or replace ``path`` inside with ``text`` (UTF-8), owned by root."""
        target = PurePosixPath(path)
        data = text.encode()

        def fill(archive: tarfile.TarFile) -> None:
            info = _root_owned(tarfile.TarInfo(target.name))
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            archive.addfile(info, io.BytesIO(data))

        self.send_tar(str(target.parent), fill)

    def read_file(self, path: str) -> str:
        """The text of ``path`` inside the container."""
        return self.run(["cat", "--", path]).stdout
