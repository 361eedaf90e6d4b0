"""``cpsysd try``: run an app under a real systemd, in an ephemeral container, and report.

Boots the harness container (:mod:`cpsysd.harness.container`), provisions this cpsysd into it
together with
the distributions the app's own interpreter has beyond cpsysd's (the app imports there what it
will import once installed for real), copies the app's working directory to ``/srv/NAME``,
rewrites the description for the container (its interpreter, working directory and the files it
names), runs ``cpsysd install`` inside, makes a first request through the socket (so systemd
starts the service on demand), and collects the service's status, its first journal lines, the
first-request latency and the exposure score that the running systemd computes. The container is
torn down whatever happens.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from cpsysd.description.instances import instance_names
from cpsysd.description.load import AppSpec, Listener
from cpsysd.description.toml import spec_to_toml
from cpsysd.errors import ERROR_PREFIX, WARNING_PREFIX, HarnessError
from cpsysd.harness.commands import ContainerCommandError
from cpsysd.harness.container import Container, available, leftovers
from cpsysd.harness.provision import (
    AppInterpreter,
    Provisioned,
    ask_interpreter,
    check_app_version,
    provision_venv,
)
from cpsysd.harness.trydemos import (
    SKIPPED_NAMES,
    DeployShow,
    IdleShow,
    NextVersion,
    check_demos,
    show_deploy,
    show_idle,
)
from cpsysd.host.preflight import check_preflight
from cpsysd.host.reach import check_reachable
from cpsysd.render.workers import service_template_name

CONTAINER_DESCRIPTION_DIR = "/etc/cpsysd"
EXTRA_FILES_DIR = "/etc/cpsysd/files"  # files the description names outside its directory
_EXPOSURE = re.compile(r"Overall exposure level for \S+: ([0-9.]+) (\S+)")
NAMES_SHOWN = 8  # distributions named in a progress line; the rest are counted
# A journal line as journalctl --output=short-monotonic prints it: "[  12.345678] HOST UNIT[PID]: "
_JOURNAL_PREFIX = re.compile(r"^\[\s*[0-9.]+\] \S+ \S+: ")
# The last line of a Python traceback: "RuntimeError: ...", "sqlite3.OperationalError: ...".
_EXCEPTION_LINE = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Failures?): \S"
)
_CHANNEL_FAILURES = "ChannelFailures:"  # CherryPy's bus wrapping the exceptions it logged before


@dataclass
class TryReport:
    """What ``cpsysd try`` saw. ``problem`` is None when the first request was answered."""

    name: str
    url: str = ""
    boot_seconds: float = 0.0
    provision_seconds: float = 0.0
    install_seconds: float = 0.0
    install_output: str = ""
    http_status: int = 0
    first_request_seconds: float | None = None
    body: str = ""
    status: str = ""
    journal: list[str] = field(default_factory=list)
    exposure: str = ""
    teardown_seconds: float = 0.0
    leftovers: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what install inside warned about
    problem: str | None = None
    hint: str | None = "the status and journal above show why"
    idle: IdleShow | None = None  # with --show-idle
    deploy: DeployShow | None = None  # with --deploy


@dataclass
class _Files:
    """Host files to copy in, mapped to their paths inside the container."""

    workdir_host: Path
    workdir_inside: str
    extra: dict[str, str] = field(default_factory=dict)  # host path -> inside path

    def inside(self, host_path: str) -> str:
        path = Path(host_path)
        if path.is_relative_to(self.workdir_host):
            return str(PurePosixPath(self.workdir_inside) / path.relative_to(self.workdir_host))
        target = f"{EXTRA_FILES_DIR}/{len(self.extra)}-{path.name}"
        return self.extra.setdefault(host_path, target)

    def maybe(self, host_path: str | None) -> str | None:
        return None if host_path is None else self.inside(host_path)


def container_spec(spec: AppSpec, python: str, files: _Files) -> AppSpec:
    """``spec`` as it must read inside the container: the provisioned interpreter, the app in
    /srv/NAME, every file it names at its copied location."""
    tls = spec.tls
    if tls is not None:
        tls = dataclasses.replace(  # every path field: a new one must be listed here too
            tls,
            cert=files.inside(tls.cert),
            key=files.inside(tls.key),
            chain=files.maybe(tls.chain),
            ca_dir=files.maybe(tls.ca_dir),
            passphrase_file=files.maybe(tls.passphrase_file),
            ca_passphrase_file=files.maybe(tls.ca_passphrase_file),
        )
    return dataclasses.replace(
        spec,
        python=python,
        working_directory=files.workdir_inside,
        config=files.maybe(spec.config),
        environment_file=files.maybe(spec.environment_file),
        tls=tls,
        source=f"{CONTAINER_DESCRIPTION_DIR}/{spec.name}.toml",
    )


def request_argv(listener: Listener, path: str = "/") -> tuple[list[str], str]:
    """A curl command for the first request to ``listener`` (printing status and total time),
    and the URL it asks for."""
    scheme = "https" if listener.tls else "http"
    argv = ["curl", "--silent", "--show-error", "--max-time", "60", "--output", "/dev/stderr"]
    argv += ["--write-out", "%{http_code} %{time_total}"]
    if listener.tls:
        argv.append("--insecure")  # a trial run: the certificate may be self-signed
    if listener.is_unix:
        url = f"{scheme}://localhost{path}"
        return [*argv, "--unix-socket", str(listener.path), url], f"{url} (via {listener.path})"
    host = listener.host or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    url = f"{scheme}://{host}:{listener.port}{path}"
    return [*argv, url], url


def parse_exposure(text: str) -> str:
    """``0.2 SAFE`` from systemd-analyze security's summary line, or an empty string."""
    match = _EXPOSURE.search(text)
    return f"{match.group(1)} {match.group(2)}" if match else ""


def _names(labels: tuple[str, ...]) -> str:
    shown = ", ".join(labels[:NAMES_SHOWN])
    return shown if len(labels) <= NAMES_SHOWN else f"{shown} and {len(labels) - NAMES_SHOWN} more"


def provision_lines(app: AppInterpreter, provisioned: Provisioned) -> list[str]:
    """Progress lines saying which of the app interpreter's packages the container got, how."""
    lines = []
    count = len(provisioned.copied)
    if count:
        plural = "s" * (count != 1)
        lines.append(
            f"copied {count} package{plural} of {app.python}: {_names(provisioned.copied)}"
        )
    if provisioned.system:
        lines.append(f"seen through the system site-packages: {_names(provisioned.system)}")
    if not provisioned.copied and not provisioned.system:
        lines.append(f"{app.python} has no packages beyond cpsysd's own dependencies")
    if provisioned.left_out:
        lines.append(
            "left out (pip, and what only cpsysd's extras need): " + _names(provisioned.left_out)
        )
    if provisioned.kept_ours:
        kept = tuple(
            f"{name} {ours} (the app's has {theirs})"
            for name, theirs, ours in provisioned.kept_ours
        )
        lines.append(f"cpsysd's own versions used: {_names(kept)}")
    return lines


def try_app(
    spec: AppSpec,
    progress: Callable[[str], None] = lambda _: None,
    warn: Callable[[str], None] = lambda _: None,
    *,
    deploy: Path | None = None,
    idle: bool = False,
) -> TryReport:
    """Run ``spec``'s app under a real systemd in an ephemeral container; see the module doc.
    ``warn`` gets the preflight's warnings (what starts but breaks later, e.g. sessions) before
    anything boots, as verify and install print them.
    Raises HarnessError when the container cannot be used at all, SpecError when the preflight
    finds that the app cannot start or its interpreter cannot say which packages it has;
    problems seen under systemd are in the returned report (``problem``), with the status and
    journal that explain them. ``deploy`` and ``idle``: :mod:`cpsysd.harness.trydemos`."""
    second = check_demos(spec, deploy, idle)
    reason = available()
    if reason:
        raise HarnessError(f"cpsysd try cannot run here: {reason}")
    # Before anything boots: an interpreter try cannot use at all (missing, another Python
    # version than the container's), then an app that cannot start (the preflight).
    app = ask_interpreter(spec.python)
    check_app_version(app)
    check_reachable(spec, interpreter_only=True)  # what install would refuse, try refuses too
    for warning in check_preflight(spec, copied=True).warnings:
        warn(warning)
    report = TryReport(spec.name)
    box = Container(f"try-{spec.name[:24]}-{os.getpid()}")
    progress("booting systemd in an ephemeral container")
    with box:
        report.boot_seconds = box.boot_seconds
        progress(f"booted in {box.boot_seconds:.2f} s; copying cpsysd and the app in")
        started = time.monotonic()
        provisioned = provision_venv(box, app)
        python = provisioned.python
        for line in provision_lines(app, provisioned):
            progress(line)
        files = _Files(Path(spec.working_directory), f"/srv/{spec.name}")
        box.copy_in(spec.working_directory, files.workdir_inside, exclude=SKIPPED_NAMES)
        inside = container_spec(spec, python, files)
        for host_path, target in files.extra.items():
            box.copy_in(host_path, target)
        description = f"{CONTAINER_DESCRIPTION_DIR}/{spec.name}.toml"
        box.write_file(description, spec_to_toml(inside))
        report.provision_seconds = time.monotonic() - started
        _install_and_request(box, inside, python, description, report, progress)
        _collect(box, inside, report)
        if report.problem is None and idle:
            progress(f"waiting for the idle stop (idle_stop_sec = {spec.idle_stop_sec})")
            report.idle = show_idle(box, inside, request_argv(inside.listeners[0])[0])
            report.problem = report.idle.problem
        if report.problem is None and deploy is not None:
            progress(f"deploying release 1, then {deploy} as release 2 under load")
            following = _next_version(deploy, second, python, files, description)
            report.deploy = show_deploy(box, inside, python, description, following)
            report.problem = report.deploy.problem
            report.hint = None if report.problem else report.hint
        teardown_started = time.monotonic()
    report.teardown_seconds = time.monotonic() - teardown_started
    report.leftovers = leftovers()
    return report


def _next_version(
    deploy: Path, second: AppSpec | None, python: str, files: _Files, description: str
) -> NextVersion:
    """Release 2: a directory copied over the app's, or a description's own directory and its
    description rewritten for the container as the first one was."""
    if second is None:
        return NextVersion(deploy, files.workdir_inside)
    theirs = _Files(Path(second.working_directory), files.workdir_inside)
    text = spec_to_toml(container_spec(second, python, theirs))
    return NextVersion(Path(second.working_directory), files.workdir_inside, text, description,
                       tuple(theirs.extra.items()))  # fmt: skip


def _install_and_request(
    box: Container,
    spec: AppSpec,
    python: str,
    description: str,
    report: TryReport,
    progress: Callable[[str], None],
) -> None:
    install = [python, "-m", "cpsysd", "install", spec.name, "-c", description]
    progress(f"inside: {shlex.join(install)}")
    started = time.monotonic()
    try:
        installed = box.run(install)
        report.install_output = installed.stdout
        report.warnings = [
            line.removeprefix(WARNING_PREFIX)
            for line in installed.stderr.splitlines()
            if line.startswith(WARNING_PREFIX)
        ]
    except ContainerCommandError as err:
        # cpsysd's own one-line error says what to fix: pass it on, not the nsenter argv.
        said = err.stderr.strip().splitlines()[-1:]
        if said and said[0].startswith(ERROR_PREFIX):
            report.problem = (
                f"cpsysd install failed inside the container: {said[0].removeprefix(ERROR_PREFIX)}"
            )
            report.hint = None
        else:
            report.problem = f"cpsysd install failed inside the container: {err.one_line()}"
        return
    report.install_seconds = time.monotonic() - started
    argv, report.url = request_argv(spec.listeners[0])
    progress(f"first request: {report.url} (systemd starts {spec.name}.service on demand)")
    result = box.run(argv, check=False, timeout=90)
    report.body = result.stderr[:2000]
    fields = result.stdout.split()
    if result.returncode != 0 or len(fields) != 2:
        report.problem = f"the first request failed: curl exit status {result.returncode}"
        return
    report.http_status, report.first_request_seconds = int(fields[0]), float(fields[1])
    if not 200 <= report.http_status < 400:
        report.problem = f"the first request got HTTP {report.http_status}"
        return
    # The first request is answered before the service has said READY=1 (and so before its
    # STATUS line exists): wait for the start to finish, as a user's next look would. With
    # workers, NAME.target has started every instance.
    for unit in service_units(spec):
        state = box.wait_settled(unit)
        if state != "active/running":
            report.problem = f"{unit} answered the first request but then did not start ({state})"
            return


def service_units(spec: AppSpec) -> list[str]:
    """The app's service units once installed: ``NAME.service``, or one per worker instance."""
    if spec.workers > 1:
        return [service_template_name(spec, instance) for instance in instance_names(spec)]
    return [f"{spec.name}.service"]


def _collect(box: Container, spec: AppSpec, report: TryReport) -> None:
    units = service_units(spec)
    report.status = box.run(
        ["systemctl", "status", "--no-pager", "--lines=0", "--full", *units], check=False
    ).stdout
    # Give the service's last lines a moment to reach journald (they travel a stream socket).
    box.run(["journalctl", "--sync"], check=False)
    extra = [f"--unit={unit}" for unit in units[1:]]
    journal = box.journal(units[0], extra=[*extra, "--output=short-monotonic"])
    report.journal = journal.splitlines()
    if report.problem is None:
        # A CherryPy start listener that raises does not stop the others: the servers and
        # READY=1 run, the first request is answered, then the bus shuts down. Look again.
        for unit in units:
            state = box.wait_settled(unit)
            # With idle_stop_sec a service may have idled out by now: stopped cleanly, by itself.
            idled = spec.idle_stop_sec > 0 and state == "inactive/dead"
            if state != "active/running" and not idled:
                report.problem = f"{unit} answered the first request but then stopped ({state})"
                break
    cause = journal_cause(report.journal)
    if report.problem is not None and cause is not None:
        # The last line names the cause, not a curl exit status 40 journal lines below it.
        report.problem += f"; the journal says: {cause}"
        report.hint = None
    security = box.run(["systemd-analyze", "security", "--no-pager", units[0]], check=False)
    report.exposure = parse_exposure(security.stdout)


def journal_cause(lines: list[str]) -> str | None:
    """The line of a service's journal (short-monotonic) that names why it failed: cpsysd's
    own ``cpsysd: error:`` line, else the first exception a traceback ended with (the one the
    others were raised while handling), else None."""
    messages = [_JOURNAL_PREFIX.sub("", line).strip() for line in lines]
    for message in messages:
        if message.startswith(ERROR_PREFIX):
            return message.removeprefix(ERROR_PREFIX)
    for message in messages:
        if _EXCEPTION_LINE.match(message) and _CHANNEL_FAILURES not in message:
            return message
    return None
