"""Worker instances of an app: their names and where each one listens.

The one source of truth for both sides: the unit generator (:mod:`cpsysd.render.workers`, systemd's
``%i``; :mod:`cpsysd.targets.supervisord`, ``%(process_num)d``) and ``cpsysd serve --instance``,
which
binds an instance's listeners itself where there is no systemd. Pure and small: the runtime
imports it, so it must not pull in the generator side (Jinja2, cpsysd.render.units).

Instance names:

* ``worker_mode = "reuseport"``: ``1`` .. ``N``. Every instance binds the same addresses with
  SO_REUSEPORT (socket(7)) and the kernel spreads new connections among them. A unix socket
  cannot be shared that way, so instance ``i`` of ``/run/app/app.sock`` listens on
  ``/run/app/app-i.sock``.
* ``worker_mode = "ports"``: the port number. Instance ``8081`` listens on port 8081, so instance
  ``i`` of ``listen = ["8080"]`` is ``808(i-1)``. Every listener therefore needs the same port
  (they may differ in host).
"""

from __future__ import annotations

from pathlib import PurePosixPath

from cpsysd.description.model import AppSpec, Listener, WorkerMode
from cpsysd.errors import CpsysdError, SpecError


def _ports_mode_port(spec: AppSpec) -> int:
    ports = {listener.port for listener in spec.listeners}
    if len(ports) != 1 or None in ports:
        shown = ", ".join(listener.address for listener in spec.listeners)
        raise SpecError(
            "worker_mode",
            f'"ports" names instances by their port, but the listeners differ ({shown})',
            'give every listener the same port, or use worker_mode = "reuseport"',
        )
    port = ports.pop()
    assert port is not None
    return port


def instance_names(spec: AppSpec) -> list[str]:
    """The instance names of ``spec``'s workers, in order (see the module docstring)."""
    if spec.worker_mode is WorkerMode.PORTS:
        first = _ports_mode_port(spec)
        return [str(first + i) for i in range(spec.workers)]
    return [str(i) for i in range(1, spec.workers + 1)]


def instance_unix_path(path: str, instance: str) -> str:
    """The unix socket path of one instance: ``/run/a/app.sock`` -> ``/run/a/app-INSTANCE.sock``."""
    pure = PurePosixPath(path)
    return str(pure.with_name(f"{pure.stem}-{instance}{pure.suffix}"))


def instance_listener(spec: AppSpec, listener: Listener, instance: str) -> Listener:
    """Where ``listener`` of instance ``instance`` actually listens."""
    if listener.path is not None:
        return Listener(
            listener.name, listener.tls, path=instance_unix_path(listener.path, instance)
        )
    if spec.worker_mode is WorkerMode.PORTS:
        return listener.with_port(int(instance))
    return listener


def check_instance(spec: AppSpec, instance: str) -> str:
    """``instance`` if it names one of ``spec``'s worker instances (as systemd's ``%i`` would),
    else a :class:`~cpsysd.errors.CpsysdError` saying which exist."""
    if spec.workers < 2:
        raise CpsysdError(
            f"--instance {instance!r}: {spec.name} has workers = 1, so it has no instances",
            "drop --instance, or set workers = N in the description",
        )
    names = instance_names(spec)
    if instance not in names:
        raise CpsysdError(
            f"--instance {instance!r}: {spec.name} has instances {names[0]} to {names[-1]} "
            f"(workers = {spec.workers}, worker_mode = {spec.worker_mode.value!r})"
        )
    return instance
