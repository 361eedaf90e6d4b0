"""Preflight: prove the app will start, before ``verify`` says verified, ``install`` writes a
unit or ``try`` boots a container.

``systemd-analyze verify`` judges the units, not the app: an entry object that does not exist, a
module with a syntax error, a missing CherryPy config or a key that does not match its
certificate all pass it, and show up only at the first request, in the journal. So:

- In the app's OWN interpreter (``spec.python``), with the working directory and the environment
  the service would have, :mod:`cpsysd.host.probe` reads the CherryPy config with CherryPy's own
  reader, imports the entry module, resolves the object and tells its kind.
- In cpsysd's own process: the interpreter, the config file and ``environment_file`` exist, and
  the TLS files are readable, the key matches the certificate and the chain verifies.

Every problem becomes a :class:`~cpsysd.errors.SpecError` naming the description's field and
the fix; :func:`check_preflight` raises the first.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from cpsysd.description.load import AppSpec, TLSConfig
from cpsysd.errors import CommandError, SpecError, TLSError
from cpsysd.host.run import run_command
from cpsysd.host.sessions import SessionUse, session_warnings, state_path

PROBE_TIMEOUT = 60.0  # seconds; an app that blocks at import would hang its start the same way
# systemd.exec(5), "Environment variables in spawned processes": a service starts with $PATH
# (systemd 252's default on a merged-/usr system) plus what Environment= and EnvironmentFile=
# set, not with the environment of whoever runs cpsysd.
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
NOBODY = "nobody"
PYTHON_HINT = "set python to the absolute path of the interpreter that has the app and cpsysd"


@dataclass(frozen=True)
class PreflightReport:
    """What the probe found: the kind the entry is served as (None: not probed here, see
    ``copied`` of :func:`check_preflight`), who imported it, and warnings (one line each) about
    what will start but break later (:mod:`cpsysd.host.sessions`)."""

    kind: str | None
    imported_as: str
    warnings: tuple[str, ...] = ()


def probe_identity(spec: AppSpec) -> tuple[int, int] | None:
    """The (uid, gid) to run the probe as, or None to run it as cpsysd itself (not root).

    Importing the app runs its code and everything its interpreter loads at start-up: a ``.pth``
    file in a virtualenv that someone else owns, a ``sitecustomize``, the app's own module. Done
    as root, any of those would run with uid 0, which the service itself never has. So the probe
    runs as the service's named ``user``, or as ``nobody`` for a DynamicUser (it has no more
    rights than the fresh UID systemd will allocate) or for a user that does not exist yet (a
    package may create it later).
    """
    if os.geteuid() != 0:
        return None
    try:
        account = pwd.getpwnam(spec.user or NOBODY)
    except KeyError:
        account = pwd.getpwnam(NOBODY)
    gid = account.pw_gid
    if spec.user and spec.group:
        import grp

        with contextlib.suppress(KeyError):  # as with the user: a package may create it later
            gid = grp.getgrnam(spec.group).gr_gid
    return account.pw_uid, gid


def read_environment_file(path: str) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd.exec(5) ``EnvironmentFile=`` reads them (comments with
    ``#`` or ``;``, one level of quotes); an unreadable file gives nothing (systemd reads it as
    root; cpsysd may not be)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    variables = {}
    for line in lines:
        text = line.strip()
        if not text or text[0] in "#;" or "=" not in text:
            continue
        key, value = (part.strip() for part in text.split("=", 1))
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        variables[key] = value
    return variables


def service_environment(spec: AppSpec) -> dict[str, str]:
    """The environment the service starts with; plus no byte-code writing, so a preflight
    leaves no ``__pycache__`` behind in the app (install compiles it on purpose)."""
    env = {"PATH": SERVICE_PATH, "PYTHONDONTWRITEBYTECODE": "1"}
    if spec.state_directory:  # systemd sets it for StateDirectory=; settings may read it
        env["STATE_DIRECTORY"] = state_path(spec)
    env.update(dict(spec.environment))
    if spec.environment_file:  # EnvironmentFile= overrides Environment= (systemd.exec(5))
        env.update(read_environment_file(spec.environment_file))
    return env


def _python_problem(python: str) -> SpecError | None:
    if not os.path.isabs(python):
        return SpecError("python", f"{python!r} is a relative path", PYTHON_HINT)
    if not os.path.isfile(python):
        return SpecError("python", f"{python} does not exist", PYTHON_HINT)
    if not os.access(python, os.X_OK):
        return SpecError("python", f"{python} is not executable", PYTHON_HINT)
    return None


@dataclass(frozen=True)
class ProbeResult:
    """What the import probe said: the kind (None when it failed), the problems, who ran it
    and where the app turns CherryPy sessions on."""

    kind: str | None
    problems: list[SpecError]
    who: str
    sessions: tuple[SessionUse, ...] = ()


def probe_app(spec: AppSpec) -> ProbeResult:
    """Run the import probe in ``spec.python``."""
    problem = _python_problem(spec.python)
    if problem:
        return ProbeResult(None, [problem], "")
    identity = probe_identity(spec)
    argv = [spec.python, "-", json.dumps(_probe_input(spec))]  # the script comes on stdin
    who = f"uid {os.geteuid()}"
    if identity is not None:
        uid, gid = identity
        who = f"uid {uid}"
        argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]
    source = Path(__file__).with_name("probe.py").read_text(encoding="utf-8")
    try:
        result = run_command(
            argv,
            check=False,
            timeout=PROBE_TIMEOUT,
            input_text=source,
            env=service_environment(spec),
        )
    except CommandError:
        return ProbeResult(None, [_timeout(spec)], who)
    verdict = _verdict(result.stdout)
    if verdict is None:
        said = (result.stderr or result.stdout).strip().splitlines()
        last = said[-1] if said else f"exit status {result.returncode}"
        message = f"{spec.python} could not run the import probe as {who}: {last}"
        return ProbeResult(None, [SpecError("python", message, PYTHON_HINT)], who)
    kind, found, sessions = verdict
    problems = [SpecError(field, message, hint or None) for field, message, hint in found]
    return ProbeResult(kind, problems, who, sessions)


def _probe_input(spec: AppSpec) -> dict[str, object]:
    return {
        "working_directory": spec.working_directory,
        "module": spec.module,
        "attribute": spec.attribute,
        "kind": spec.kind.value,
        "config": spec.config,
        "vhosts": bool(spec.vhosts),
    }


def _timeout(spec: AppSpec) -> SpecError:
    return SpecError(
        "entry",
        f"importing {spec.module!r} did not finish within {PROBE_TIMEOUT:.0f} s",
        "do no blocking work at import; start it in a CherryPy plugin",
    )


def _verdict(
    stdout: str,
) -> tuple[str | None, list[list[str]], tuple[SessionUse, ...]] | None:
    from cpsysd.host.probe import MARKER

    lines = [line for line in stdout.splitlines() if line.startswith(MARKER)]
    if not lines:
        return None
    try:
        data = json.loads(lines[-1].removeprefix(MARKER))
        sessions = tuple(
            SessionUse(str(use["where"]), str(use["storage"]), use["path"] and str(use["path"]))
            for use in data.get("sessions", ())
        )
        return data["kind"], list(data["problems"]), sessions
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def file_problems(spec: AppSpec) -> list[SpecError]:
    """Files the service needs that are missing here (cpsysd's own view)."""
    problems = []
    if spec.config and not os.path.exists(spec.config):
        problems.append(
            SpecError("config", f"{spec.config} does not exist", "create it, or fix config")
        )
    if spec.environment_file and not os.path.exists(spec.environment_file):
        problems.append(
            SpecError(
                "environment_file",
                f"{spec.environment_file} does not exist",
                "create it, or remove environment_file",
            )
        )
    return problems + credential_problems(spec)


def credential_problems(spec: AppSpec) -> list[SpecError]:
    """Each ``credentials`` file: a regular file cpsysd (root, as systemd will be when it
    copies it for ``LoadCredential=``) can read, and nobody else: a secret that every local
    user can read is no secret, whatever the service does with it."""
    problems = []
    for name, path in spec.credentials:
        field = f"credentials.{name}"
        try:
            # O_NONBLOCK: a FIFO planted there must not hang the preflight.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except FileNotFoundError:
            problems.append(SpecError(field, f"{path} does not exist", "create it, mode 0600"))
            continue
        except OSError as err:
            hint = "run cpsysd as root, as systemd reads it, or pass --no-preflight"
            problems.append(SpecError(field, f"cannot read {path}: {err.strerror}", hint))
            continue
        try:
            info = os.fstat(fd)
        finally:
            os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            problems.append(SpecError(field, f"{path} is not a regular file", "name a file"))
        elif info.st_mode & 0o077:
            mode = oct(stat.S_IMODE(info.st_mode))[2:]
            hint = f"chmod 600 {path}; the service gets its own copy"
            problems.append(SpecError(field, f"{path} is readable by others (mode {mode})", hint))
    return problems


def preflight_problems(
    spec: AppSpec, *, copied: bool = False
) -> tuple[list[SpecError], PreflightReport | None]:
    """Every reason the app of ``spec`` would not start, and the probe's report if it has none.
    ``copied``: see :func:`check_preflight`."""
    problems = file_problems(spec)
    probe = probe_app(spec)
    kind, probed, who = probe.kind, probe.problems, probe.who
    if copied:
        probed = [problem for problem in probed if problem.field != "working_directory"]
    reported = {problem.field for problem in problems}  # a missing config: said once
    problems += [problem for problem in probed if problem.field not in reported]
    if spec.tls is not None:
        problems += tls_problems(spec.tls)
    if problems or (kind is None and not copied):
        return problems, None
    warnings = tuple(session_warnings(spec, list(probe.sessions)))
    return [], PreflightReport(kind, who, warnings)


def check_preflight(spec: AppSpec, *, copied: bool = False) -> PreflightReport:
    """Raise the first preflight problem of ``spec`` (saying how many more there are).

    ``copied`` (``cpsysd try``): the working directory runs from a copy with its own modes, so
    that the probe's user cannot enter it HERE (a 0700 home or temporary directory on the way)
    says nothing about the service; the app is then not imported here, and ``cpsysd install``
    runs the preflight again inside the container, on the copy."""
    problems, report = preflight_problems(spec, copied=copied)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        message = first.message.removeprefix(f"{first.field}: ")
        raise SpecError(first.field, message + more, first.hint)
    assert report is not None  # preflight_problems returns a report when there is no problem
    return report


def _read_tls_file(field: str, path: str) -> tuple[bytes | None, SpecError | None]:
    try:
        return Path(path).read_bytes(), None
    except FileNotFoundError:
        hint = "fix the path, or make one with cpsysd cert selfsigned"
        return None, SpecError(field, f"{path} does not exist", hint)
    except OSError as err:
        # systemd reads it as root for LoadCredential=; run as root to check what it will see.
        hint = "run cpsysd as root, or pass --no-preflight"
        return None, SpecError(field, f"cannot read {path}: {err.strerror or err}", hint)


def _tls_error(field: str, err: TLSError, hint: str | None = None) -> SpecError:
    return SpecError(field, err.message, hint or err.hint)


def tls_problems(tls: TLSConfig) -> list[SpecError]:
    """The TLS files exist and are readable, the key matches the certificate, the chain
    verifies: what the service's ssl.SSLContext.load_cert_chain() would refuse at start."""
    from cpsysd.tls.certfiles import read_passphrase
    from cpsysd.tls.pki import Certificate, PrivateKey, verify_chain

    problems = []
    files = {"tls.cert": tls.cert, "tls.key": tls.key, "tls.chain": tls.chain}
    data = {}
    for field, path in files.items():
        if path is not None:
            data[field], problem = _read_tls_file(field, path)
            problems += [problem] if problem else []
    if problems:
        return problems
    try:
        certs = Certificate.list_from_pem(data["tls.cert"] or b"", tls.cert)
    except TLSError as err:
        return [_tls_error("tls.cert", err)]
    try:
        chain = Certificate.list_from_pem(data["tls.chain"] or b"", tls.chain) if tls.chain else []
    except TLSError as err:
        return [_tls_error("tls.chain", err)]
    try:
        passphrase = read_passphrase(tls.passphrase_file)
    except TLSError as err:
        return [_tls_error("tls.passphrase_file", err)]
    try:
        key = PrivateKey.from_pem(data["tls.key"] or b"", passphrase, tls.key)
    except TLSError as err:
        if passphrase is None and "is encrypted" in err.message:
            # Its passphrase may reach the service another way than passphrase_file: an admin's
            # drop-in with LoadCredential=tls-key-passphrase:FILE (SECURITY.md, section 3), which
            # cpsysd never reads. Without it the service says so at its start, in one line.
            return []
        return [_tls_error("tls.key", err)]
    if not key.matches(certs[0]):
        return [
            SpecError(
                "tls.key",
                f"{tls.key} does not match the certificate {tls.cert}",
                "give the key the certificate was issued for, or issue a new pair (cpsysd cert)",
            )
        ]
    issuers = certs[1:] + chain
    if issuers:
        # The top of the chain is the anchor the leaf must lead to: the certificates that no
        # other one in the chain issued.
        tops = [c for c in issuers if not any(c.is_signed_by(o) for o in issuers if o is not c)]
        try:
            verify_chain(certs[:1] + issuers, tops or issuers[-1:])
        except TLSError as err:
            hint = "put the intermediate certificates that issued cert, in order, in chain"
            return [_tls_error("tls.chain" if tls.chain else "tls.cert", err, hint)]
    return []
