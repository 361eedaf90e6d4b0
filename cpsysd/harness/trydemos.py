"""What ``cpsysd try`` can show beyond the first request, inside its container
(:mod:`cpsysd.harness.trying`):

- ``--deploy PATH``: the app as release 1 (``cpsysd deploy``), then PATH (the next version's
  working directory, or its description) as release 2 while clients loop on the app: how many
  requests were answered and failed, and whether the answers changed (issue 17).
- ``--show-idle``: with ``idle_stop_sec``, the service exits once idle, and the next request
  starts it again: its memory before and after, and that request's wait (issue 20).

Both are bounded: the load loop by a request count and a time limit, the idle wait by
``idle_stop_sec`` plus a margin. Nothing here asserts timings; it reports them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from cpsysd.description.load import AppSpec, Listener
from cpsysd.errors import ERROR_PREFIX, CpsysdError, SpecError
from cpsysd.harness.commands import ContainerCommandError
from cpsysd.harness.container import Container

SKIPPED_NAMES = (".git", ".venv", "venv", "__pycache__", "node_modules", ".mypy_cache")

LOAD_CLIENTS = 4
LOAD_LIMIT = 200_000  # requests in all: the loop's bound besides time
LOAD_SECONDS = 300.0  # the loop never outlives this, whatever the deploy does
DEPLOY_TIMEOUT = 280.0  # cpsysd deploy's own start timeout is below this
IDLE_MARGIN = 60.0  # seconds past idle_stop_sec before try gives up waiting for the stop
ANSWERS_SHOWN = 2

# Runs inside the container: LOAD_CLIENTS threads loop on GET / (a new connection each), the
# deploy runs meanwhile, and each answer counts for the phase in which its request was sent.
_LOAD = r"""
import http.client, json, ssl, subprocess, sys, threading, time
host, port, tls, limit, seconds, clients = sys.argv[1:7]
port, limit, clients = int(port), int(limit), int(clients)
deploy = sys.argv[7:]
deadline = time.monotonic() + float(seconds)
lock, stop = threading.Lock(), threading.Event()
state = {"phase": "before", "ok": 0, "failed": 0, "sent": 0}
answers, errors = {"before": [], "during": [], "after": []}, []

def client():
    context = ssl._create_unverified_context() if tls == "tls" else None
    while not stop.is_set() and time.monotonic() < deadline:
        with lock:
            if state["sent"] >= limit:
                return
            state["sent"] += 1
            phase = state["phase"]
        try:
            if context:
                conn = http.client.HTTPSConnection(host, port, timeout=30, context=context)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=30)
            conn.request("GET", "/", headers={"Connection": "close"})
            response = conn.getresponse()
            line = (response.read().decode(errors="replace").strip().splitlines() or [""])[0]
            conn.close()
            good, what = 200 <= response.status < 400, f"HTTP {response.status}"
        except Exception as err:
            good, what, line = False, f"{type(err).__name__}: {err}", None
        with lock:
            state["ok" if good else "failed"] += 1
            if not good and len(errors) < 3:
                errors.append(what)
            if good and line[:100] not in answers[phase] and len(answers[phase]) < 5:
                answers[phase].append(line[:100])

threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
for thread in threads:
    thread.start()
while state["ok"] + state["failed"] < 20 * clients and time.monotonic() < deadline:
    time.sleep(0.05)
state["phase"] = "during"
started = time.monotonic()
done = subprocess.run(deploy, capture_output=True, text=True, timeout=float(seconds) - 20)
took = time.monotonic() - started
state["phase"] = "after"
time.sleep(1.0)
stop.set()
for thread in threads:
    thread.join(timeout=40)
print(json.dumps({"ok": state["ok"], "failed": state["failed"], "errors": errors,
                  "answers": answers, "returncode": done.returncode, "stdout": done.stdout,
                  "stderr": done.stderr, "seconds": took}))
"""


@dataclass(frozen=True)
class DeployShow:
    """``--deploy``: release 1's line, release 2's, and what the looping clients saw."""

    first: str
    second: str
    seconds: float
    ok: int
    failed: int
    errors: tuple[str, ...]
    before: tuple[str, ...]  # distinct first lines of answers before the deploy started
    after: tuple[str, ...]  # ... of requests sent after it returned
    problem: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.after) and not set(self.after) & set(self.before)


@dataclass(frozen=True)
class IdleShow:
    """``--show-idle``: the process before, the stop, and the request that started it again."""

    unit: str
    rss_kib: int  # VmRSS of the main process while it ran
    stopped_after: float  # seconds from the last answered request to the unit's stop
    pid_after: int  # the main PID once stopped (0: no process)
    restarts: int
    http_status: int
    wait_seconds: float  # the first request after the stop, service start included
    problem: str | None = None


def check_demos(spec: AppSpec, deploy: Path | None, show_idle: bool) -> AppSpec | None:
    """Before anything boots: what the options need. Returns release 2's description when
    ``deploy`` names one (None for a directory: release 2 is the same description)."""
    if show_idle and spec.idle_stop_sec == 0:
        raise SpecError(
            "idle_stop_sec",
            "is not set, so --show-idle has no idle stop to show",
            "set idle_stop_sec = 5 (seconds) in the description, or leave out --show-idle",
        )
    if show_idle and spec.workers > 1:
        raise CpsysdError(
            f"--show-idle shows one service, but the description has workers = {spec.workers}",
            "try it with workers = 1",
        )
    if (deploy or show_idle) and spec.listeners[0].is_unix:
        raise CpsysdError(
            f"{spec.listeners[0].path}: --deploy and --show-idle ask a TCP listener, and the "
            "description's first listener is a unix socket",
            "list a TCP port first in listen",
        )
    if deploy is None:
        return None
    if deploy.is_dir():
        return None
    if not deploy.is_file():
        raise CpsysdError(
            f"--deploy: {deploy} does not exist",
            "name the next version's working directory or its description file",
        )
    from cpsysd.description.load import load_spec

    second = load_spec(deploy)
    if second.name != spec.name:
        raise CpsysdError(
            f"--deploy: {deploy} describes the app {second.name!r}, not {spec.name!r}",
            "a release is the next version of the same app: use the same name",
        )
    return second


def _address(listener: Listener) -> tuple[str, str, str]:
    host = listener.host or "127.0.0.1"
    return host, str(listener.port), "tls" if listener.tls else "plain"


def _deploy(box: Container, python: str, description: str) -> tuple[int, str, str]:
    argv = [python, "-m", "cpsysd", "deploy", "-c", description]
    done = box.run(argv, check=False, timeout=DEPLOY_TIMEOUT)
    return done.returncode, done.stdout.strip(), done.stderr.strip()


def _cause(stderr: str) -> str:
    lines = stderr.splitlines()[-1:]
    return lines[0].removeprefix(ERROR_PREFIX) if lines else "no error line"


def show_deploy(
    box: Container, spec: AppSpec, python: str, description: str, next_version: NextVersion
) -> DeployShow:
    """Release 1 from what try installed, then ``next_version`` copied in and deployed as
    release 2 under the load loop."""
    code, first, stderr = _deploy(box, python, description)
    if code != 0:
        return DeployShow("", "", 0.0, 0, 0, (), (), (), f"release 1 failed: {_cause(stderr)}")
    next_version.copy_in(box)
    host, port, tls = _address(spec.listeners[0])
    argv = [python, "-c", _LOAD, host, port, tls, str(LOAD_LIMIT), str(LOAD_SECONDS)]
    argv += [str(LOAD_CLIENTS), python, "-m", "cpsysd", "deploy", "-c", description]
    try:
        ran = box.run(argv, timeout=LOAD_SECONDS + 60)
    except ContainerCommandError as err:
        return DeployShow(
            first, "", 0.0, 0, 0, (), (), (), f"the load loop failed: {err.one_line()}"
        )
    seen = json.loads(ran.stdout)
    answers = seen["answers"]
    problem = None if seen["returncode"] == 0 else f"release 2 failed: {_cause(seen['stderr'])}"
    return DeployShow(
        first=first.splitlines()[0] if first else "",
        second=seen["stdout"].strip().splitlines()[0] if seen["stdout"].strip() else "",
        seconds=float(seen["seconds"]),
        ok=int(seen["ok"]),
        failed=int(seen["failed"]),
        errors=tuple(seen["errors"]),
        before=tuple(answers["before"][:ANSWERS_SHOWN]),
        after=tuple(answers["after"][:ANSWERS_SHOWN]),
        problem=problem,
    )


@dataclass(frozen=True)
class NextVersion:
    """Release 2's files: a directory to copy over the app's, and maybe its own description."""

    source: Path
    workdir_inside: str
    description_text: str | None = None  # the rewritten description, when one was given
    description_inside: str = ""
    extra: tuple[tuple[str, str], ...] = ()  # files it names outside its directory: host, inside

    def copy_in(self, box: Container) -> None:
        box.run(["rm", "-rf", self.workdir_inside])
        box.copy_in(self.source, self.workdir_inside, exclude=SKIPPED_NAMES)
        for host_path, inside in self.extra:
            box.copy_in(host_path, inside)
        if self.description_text is not None:
            box.write_file(self.description_inside, self.description_text)


def _show(box: Container, unit: str, prop: str) -> str:
    return box.run(["systemctl", "show", "-P", prop, unit]).stdout.strip()


def _rss_kib(box: Container, pid: str) -> int:
    status = box.run(["cat", f"/proc/{pid}/status"], check=False).stdout
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def show_idle(box: Container, spec: AppSpec, request: list[str]) -> IdleShow:
    """One request (the idle time starts over), then wait for the idle stop of
    ``NAME.service``, then time ``request`` (curl printing ``STATUS SECONDS``) again: the
    request that starts it anew."""
    unit = f"{spec.name}.service"
    box.run(request, check=False, timeout=90)
    pid = _show(box, unit, "MainPID")
    rss = _rss_kib(box, pid)
    since = time.monotonic()
    deadline = since + spec.idle_stop_sec + IDLE_MARGIN
    while _show(box, unit, "ActiveState") != "inactive":
        if time.monotonic() > deadline:
            return IdleShow(unit, rss, 0.0, int(pid), 0, 0, 0.0,
                            f"{unit} did not stop within {spec.idle_stop_sec:g} s + "
                            f"{IDLE_MARGIN:g} s of idling")  # fmt: skip
        time.sleep(0.2)
    stopped = time.monotonic() - since
    pid_after = int(_show(box, unit, "MainPID") or 0)
    result = box.run(request, check=False, timeout=90)
    fields = result.stdout.split()
    restarts = int(_show(box, unit, "NRestarts") or 0)
    if result.returncode != 0 or len(fields) != 2:
        return IdleShow(unit, rss, stopped, pid_after, restarts, 0, 0.0,
                        f"the request after the idle stop failed: curl exit status "
                        f"{result.returncode}")  # fmt: skip
    return IdleShow(unit, rss, stopped, pid_after, restarts, int(fields[0]), float(fields[1]))
