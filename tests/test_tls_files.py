"""cpsysd.tls.certfiles: private keys are never readable by others, not even for a moment; nothing
is
half-written; existing files survive unless --force; passphrases come from files/credentials."""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cpsysd.errors import TLSError
from cpsysd.tls import certfiles
from cpsysd.tls.pki import KeyType

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x2, 0x4, 0x8, 0x80, 0x100
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC


class ModeWatcher:
    """Records every mode seen on every file in a directory while it runs.

    Two observers: inotify (IN_CREATE/IN_MOVED_TO/IN_ATTRIB/... on the directory, each event
    answered by an lstat of that name) and a thread listing and lstat-ing the directory in a
    tight loop. A file created with loose bits and chmod-ed afterwards is caught by either
    (the test below proves the watcher sees exactly that mistake).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.modes: dict[str, set[int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        assert self._fd >= 0, os.strerror(ctypes.get_errno())
        mask = IN_CREATE | IN_MOVED_TO | IN_ATTRIB | IN_MODIFY | IN_CLOSE_WRITE
        assert libc.inotify_add_watch(self._fd, str(directory).encode(), mask) >= 0
        self._threads = [
            threading.Thread(target=self._poll, daemon=True),
            threading.Thread(target=self._inotify, daemon=True),
        ]

    def _record(self, name: str) -> None:
        try:
            mode = os.lstat(self.directory / name).st_mode
        except FileNotFoundError:
            return
        with self._lock:
            self.modes.setdefault(name, set()).add(stat.S_IMODE(mode))

    def _poll(self) -> None:
        while not self._stop.is_set():
            for name in os.listdir(self.directory):
                self._record(name)

    def _inotify(self) -> None:
        while not self._stop.is_set():
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                time.sleep(0.0005)
                continue
            offset = 0
            while offset < len(data):
                _wd, _mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                raw = data[offset + 16 : offset + 16 + length]
                offset += 16 + length
                self._record(raw.split(b"\0", 1)[0].decode())

    def seen(self, name: str) -> bool:
        with self._lock:
            return name in self.modes

    def __enter__(self) -> ModeWatcher:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        os.close(self._fd)

    def key_modes(self, *final_names: str) -> dict[str, set[int]]:
        """Modes of the named files and of their staging files (``.NAME.*.tmp``)."""
        return {
            name: modes
            for name, modes in self.modes.items()
            if name in final_names or any(name.startswith(f".{f}.") for f in final_names)
        }


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """With umask 0 a key created 0644 (or 0666) would show it: the test would be meaningless
    under the usual 022 or 077."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _loose(modes: dict[str, set[int]]) -> dict[str, list[str]]:
    return {
        name: [oct(m) for m in ms if m & 0o077]
        for name, ms in modes.items()
        if any(m & 0o077 for m in ms)
    }


def test_the_watcher_catches_a_key_written_then_chmod_ed(tmp_path: Path, umask_zero: None) -> None:
    with ModeWatcher(tmp_path) as watcher:
        fd = os.open(tmp_path / "bad.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b"secret")
        deadline = time.monotonic() + 5
        while not watcher.seen("bad.key") and time.monotonic() < deadline:
            time.sleep(0.001)
        os.fchmod(fd, 0o600)
        os.close(fd)
        time.sleep(0.05)
    assert _loose(watcher.key_modes("bad.key")) == {"bad.key": ["0o644"]}


def _run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    script = 'umask 000 && exec "$@"'
    argv = ["bash", "-c", script, "_", sys.executable, "-m", "cpsysd", "cert", *args]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False, timeout=120)


@pytest.mark.parametrize(
    "commands",
    [
        [
            ["selfsigned", "--cert", "c.pem", "--key", "k.pem", "localhost"],
            [
                "selfsigned",
                "--cert",
                "c.pem",
                "--key",
                "k.pem",
                "--force",
                "--key-type",
                "rsa-2048",
                "localhost",
            ],
        ],
        [
            ["ca", "--dir", "ca"],
            ["issue", "--ca", "ca", "--cert", "c.pem", "--key", "k.pem", "localhost", "127.0.0.1"],
        ],
        [["csr", "--key", "k.pem", "--out", "r.csr", "example.org"]],
    ],
    ids=["selfsigned-and-force", "ca-and-issue", "csr"],
)
def test_keys_never_show_group_or_other_bits(tmp_path: Path, commands: list[list[str]]) -> None:
    (tmp_path / "ca").mkdir()  # watched too (cert ca creates files in it)
    (tmp_path / "ca").chmod(0o700)
    with ModeWatcher(tmp_path) as top, ModeWatcher(tmp_path / "ca") as ca_dir:
        for args in commands:
            if args[0] == "ca":
                args = [*args, "--force"]  # the directory exists (empty), so it is watched
            result = _run_cli(args, tmp_path)
            assert result.returncode == 0, result.stderr
        time.sleep(0.05)
    keys = top.key_modes("k.pem") | ca_dir.key_modes("ca.key")
    assert any(name in keys for name in ("k.pem", "ca.key"))
    assert _loose(keys) == {}
    assert {m for ms in keys.values() for m in ms} == {0o600}
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    public = [p for p in ("c.pem", "r.csr") if (tmp_path / p).exists()]
    assert all(stat.S_IMODE((tmp_path / p).stat().st_mode) == 0o644 for p in public)
    assert not [p.name for p in tmp_path.rglob(".*.tmp")]  # no staging leftovers


def test_key_files_are_created_exclusively_with_mode_0600(tmp_path: Path, umask_zero: None) -> None:
    """Python's audit events: the key is opened with O_CREAT|O_EXCL|O_NOFOLLOW and never
    chmod-ed (the event carries no permission bits: the strace test below checks those)."""
    events: list[tuple[str, tuple[object, ...]]] = []
    recording = True

    def hook(event: str, args: tuple[object, ...]) -> None:
        if recording and event in ("open", "os.chmod"):
            events.append((event, args))

    sys.addaudithook(hook)
    certfiles.make_self_signed(
        tmp_path / "c.pem", tmp_path / "k.pem", ["localhost"], KeyType.EC_P256, 10
    )
    recording = False
    key_opens = [
        a for e, a in events if e == "open" and str(a[0]).startswith(str(tmp_path / ".k.pem."))
    ]
    assert len(key_opens) == 1
    flags = key_opens[0][2]
    assert isinstance(flags, int)
    assert flags & (os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW) == (
        os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
    )
    chmods = [a for e, a in events if e == "os.chmod"]
    assert all(a[1] == 0o644 for a in chmods), chmods  # only the public certificate
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "c.pem").stat().st_mode) == 0o644


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_syscalls_create_the_key_0600_and_never_chmod_it(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    argv = [
        "strace",
        "-f",
        "-qq",
        "-o",
        str(trace),
        "-e",
        "trace=openat,open,creat,chmod,fchmod,fchmodat,link,linkat,rename,renameat,renameat2",
        sys.executable,
        "-m",
        "cpsysd",
        "cert",
        "selfsigned",
        "--cert",
        "c.pem",
        "--key",
        "k.pem",
        "localhost",
    ]
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    lines = [line.split(None, 1)[1] for line in trace.read_text().splitlines()]
    key_open = next(
        i for i, line in enumerate(lines) if line.startswith('openat(AT_FDCWD, ".k.pem.')
    )
    opened = re.fullmatch(
        r'openat\(AT_FDCWD, "\.k\.pem\.[0-9]+-[0-9a-f]{12}\.tmp", '
        r"O_WRONLY\|O_CREAT\|O_EXCL\|O_NOFOLLOW\|O_CLOEXEC, 0600\) = \d+",
        lines[key_open],
    )
    assert opened, lines[key_open]
    published = [line for line in lines if '"k.pem"' in line]
    assert len(published) == 1
    assert re.fullmatch(r'link\("\.k\.pem\.[0-9]+-[0-9a-f]{12}\.tmp", "k\.pem"\) = 0', published[0])
    # While the key's file is open nothing is chmod-ed; the only chmod is the certificate's
    # (0644 despite the umask).
    next_open = next(
        (i for i in range(key_open + 1, len(lines)) if lines[i].startswith("openat(")), len(lines)
    )
    assert not [line for line in lines[key_open:next_open] if "chmod" in line]
    chmods = [line for line in lines if "chmod" in line]
    assert len(chmods) == 1, chmods
    assert re.fullmatch(r"fchmod\(\d+, 0644\)\s+= 0", chmods[0]), chmods


def _listing(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(directory.rglob("*"))
    }


@pytest.mark.parametrize("failing_call", [1, 2, 3])
def test_a_failure_while_publishing_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_call: int
) -> None:
    """Fault injection: link(2) fails (ENOSPC) at the 1st, 2nd or 3rd file of cert issue."""
    ca_dir = tmp_path / "ca"
    certfiles.create_ca(ca_dir, KeyType.EC_P256, 30)
    before = _listing(tmp_path)
    real_link = os.link
    calls = 0

    def link(src: str | Path, dst: str | Path) -> None:
        nonlocal calls
        calls += 1
        if calls == failing_call:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link)
    with pytest.raises(TLSError, match="no space left"):
        certfiles.issue_from_ca(
            ca_dir, tmp_path / "c.pem", tmp_path / "k.pem", ["localhost"], KeyType.EC_P256, 10
        )
    assert _listing(tmp_path) == before


def test_existing_files_survive_without_force(tmp_path: Path) -> None:
    certfiles.make_self_signed(
        tmp_path / "c.pem", tmp_path / "k.pem", ["localhost"], KeyType.EC_P256, 10
    )
    before = _listing(tmp_path)
    for cert, key in (("c.pem", "new.key"), ("new.pem", "k.pem")):
        with pytest.raises(TLSError, match="already exists"):
            certfiles.make_self_signed(
                tmp_path / cert, tmp_path / key, ["localhost"], KeyType.EC_P256, 10
            )
    assert _listing(tmp_path) == before
    certfiles.make_self_signed(
        tmp_path / "c.pem", tmp_path / "k.pem", ["localhost"], KeyType.EC_P256, 10, force=True
    )
    after = _listing(tmp_path)
    assert set(after) == set(before)
    assert after["k.pem"] != before["k.pem"]


def test_a_file_appearing_meanwhile_is_not_clobbered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the up-front check and publishing someone creates the key file: link(2) refuses."""
    real_stage: Callable[[certfiles.OutputFile], Path] = certfiles._stage

    def stage(output: certfiles.OutputFile) -> Path:
        if output.path.name == "k.pem" and not output.path.exists():
            output.path.write_bytes(b"someone else's")
        return real_stage(output)

    monkeypatch.setattr(certfiles, "_stage", stage)
    with pytest.raises(TLSError, match="appeared while writing"):
        certfiles.make_self_signed(
            tmp_path / "c.pem", tmp_path / "k.pem", ["localhost"], KeyType.EC_P256, 10
        )
    assert _listing(tmp_path) == {"k.pem": b"someone else's"}


def test_staging_files_of_killed_writers_are_swept(tmp_path: Path) -> None:
    """A SIGKILL-ed writer leaves its 0600 staging file; the next write of the same file
    removes it, but not one whose writer still runs, nor other files' or foreign names."""
    dead = subprocess.Popen([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = [
            f".k.pem.{dead.pid}-{'a' * 12}.tmp",  # the killed writer's: swept
            f".k.pem.{live.pid}-{'b' * 12}.tmp",  # a running writer's: kept
            f".other.pem.{dead.pid}-{'c' * 12}.tmp",  # another file's: kept
            f".k.pem.{'d' * 12}.tmp",  # not cpsysd's naming: kept
        ]
        for name in names:
            fd = os.open(tmp_path / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        certfiles.make_self_signed(
            tmp_path / "c.pem", tmp_path / "k.pem", ["localhost"], KeyType.EC_P256, 10
        )
        left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
        assert left == sorted(names[1:])
    finally:
        live.kill()
        live.wait()


def test_outputs_are_validated_before_any_key_is_made(tmp_path: Path) -> None:
    cases: list[tuple[Callable[[], object], str]] = [
        (
            lambda: certfiles.make_self_signed(
                tmp_path / "no/dir/c.pem", tmp_path / "k.pem", ["localhost"], KeyType.EC_P256, 10
            ),
            "does not exist",
        ),
        (
            lambda: certfiles.make_self_signed(
                tmp_path / "same.pem", tmp_path / "same.pem", ["localhost"], KeyType.EC_P256, 10
            ),
            "named twice",
        ),
        (
            lambda: certfiles.make_self_signed(
                tmp_path, tmp_path / "k.pem", ["localhost"], KeyType.EC_P256, 10
            ),
            "is a directory",
        ),
        (
            lambda: certfiles.make_self_signed(
                tmp_path / "c.pem", tmp_path / "k.pem", ["DNS:10.1.1.1"], KeyType.EC_P256, 10
            ),
            "is an IP address",
        ),
        (
            lambda: certfiles.make_self_signed(
                tmp_path / "c.pem", tmp_path / "k.pem", ["localhost"], KeyType.EC_P256, 0
            ),
            "at least one day",
        ),
        (
            lambda: certfiles.issue_from_ca(
                tmp_path / "noca",
                tmp_path / "c.pem",
                tmp_path / "k.pem",
                ["localhost"],
                KeyType.EC_P256,
                10,
            ),
            "does not exist",
        ),
        (lambda: certfiles.create_ca(tmp_path / "a/b", KeyType.EC_P256, 0), "at least one day"),
    ]
    for call, message in cases:
        with pytest.raises(TLSError, match=message):
            call()
    assert _listing(tmp_path) == {}


def test_ca_directory_is_private_and_created_once(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    certfiles.create_ca(ca_dir, KeyType.EC_P384, 100)
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((ca_dir / "ca.key").stat().st_mode) == 0o600
    before = _listing(tmp_path)
    with pytest.raises(TLSError, match="a CA already exists"):
        certfiles.create_ca(ca_dir, KeyType.EC_P256, 100)
    assert _listing(tmp_path) == before


def test_ca_directory_with_missing_parents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old_umask = os.umask(0o077)
    try:
        certfiles.create_ca(tmp_path / "etc/cpsysd/ca", KeyType.EC_P256, 10)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "etc").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "etc/cpsysd/ca").stat().st_mode) == 0o700
    (tmp_path / "file").write_text("x")
    with pytest.raises(TLSError, match="is not a directory"):
        certfiles.create_ca(tmp_path / "file/ca", KeyType.EC_P256, 10)

    def failing_write(outputs: object, force: bool) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(certfiles, "write_outputs", failing_write)
    before = _listing(tmp_path)
    with pytest.raises(TLSError, match="no space left"):
        certfiles.create_ca(tmp_path / "x/y/ca", KeyType.EC_P256, 10)
    assert _listing(tmp_path) == before  # the directories it made are gone again


def test_passphrase_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_bytes(b"s3cret\n")
    assert certfiles.read_passphrase(str(tmp_path / "pw")) == b"s3cret"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "tls-pass").write_bytes(b"from systemd")
    with pytest.raises(TLSError, match="needs \\$CREDENTIALS_DIRECTORY"):
        certfiles.read_passphrase(credential="tls-pass")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert certfiles.read_passphrase(credential="tls-pass") == b"from systemd"
    for bad in ("../pw", ".."):
        with pytest.raises(TLSError, match="not a credential name"):
            certfiles.read_passphrase(credential=bad)
    with pytest.raises(TLSError, match="does not exist"):
        certfiles.read_passphrase(credential="missing")
    with pytest.raises(TLSError, match="not both"):
        certfiles.read_passphrase(str(tmp_path / "pw"), "tls-pass")
    (tmp_path / "empty").write_bytes(b"\n")
    with pytest.raises(TLSError, match="is empty"):
        certfiles.read_passphrase(str(tmp_path / "empty"))
    assert certfiles.read_passphrase() is None


def test_chain_path_next_to_the_certificate() -> None:
    assert certfiles.chain_path_for(Path("/etc/x/server.pem")) == Path("/etc/x/server.chain.pem")
    assert certfiles.chain_path_for(Path("/etc/x/server.crt")) == Path("/etc/x/server.chain.pem")
    assert certfiles.chain_path_for(Path("/etc/x/server")) == Path("/etc/x/server.chain.pem")
