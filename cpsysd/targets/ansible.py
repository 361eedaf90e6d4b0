"""``cpsysd export ansible``: a role and a playbook that run the app on a fleet of hosts.

cpsysd does not orchestrate many hosts itself; Ansible does (``serial:`` for rolling changes,
``max_fail_percentage: 0`` to stop at the first failing host). What cpsysd renders:

- a description for the app hosts (:func:`host_spec`): the same app with its working directory,
  interpreter and environment file moved to fixed places under /opt and /etc;
- the role's variables (``defaults/``, ``vars/``), its playbook and an example inventory;
- the nginx site of ``cpsysd nginx`` as an Ansible template whose upstream lists every host of
  the inventory's ``app`` group (``max_fails``/``fail_timeout`` take a dead host out);
- the role's tasks and handlers, which are the same for every app (``units/ansible/*.yml``).

On each app host the role still runs ``cpsysd install`` (cpsysd stays the one that renders and
installs units, against that host's systemd), then ships the code as a release with ``cpsysd
deploy``: health-gated, on the same sockets, the live release untouched when the new one fails.
Rendering is pure: :func:`render_role` returns relative path -> text;
:mod:`cpsysd.host.exporting` writes it and copies the app's files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from cpsysd.description.load import AppSpec, Listener, NginxConfig
from cpsysd.description.toml import spec_to_toml
from cpsysd.errors import SpecError
from cpsysd.render.units import units_to_enable

# Where the role puts things on an app host. They are written into the host description at
# export time, so they are role vars (vars/main.yml), not defaults the inventory could change.
VENV = "/opt/cpsysd/venv"
APPS = "/opt/cpsysd/apps"
ETC = "/etc/cpsysd"
# Debian 12's packages of cpsysd's dependencies: the virtualenv sees them (system site packages),
# so installing cpsysd's wheel needs no package index on the hosts.
APT_PACKAGES = (
    "python3-venv",
    "python3-pip",
    "python3-cherrypy3",
    "python3-systemd",
    "python3-jinja2",
    "python3-cryptography",
    "python3-typer",
    "python3-acme",
)
# A valid nginx token that cannot be an address: where the per-host upstream lines go.
_PLACEHOLDER = "cpsysd-fleet-upstream:1"
_STATIC = (
    "tasks/main.yml",
    "tasks/front.yml",
    "handlers/main.yml",
    "templates/environment.j2",
    "files/release-inputs.py",
)
# The id of the release the role deployed and what it was made of (files/release-inputs.py).
DEPLOYED = "/opt/cpsysd/deployed"


@dataclass(frozen=True)
class Fleet:
    """What the fleet needs of the description: the port(s) every app host serves on (one per
    instance with ``worker_mode = "ports"``) and the scheme nginx and the health check use."""

    ports: tuple[int, ...]
    scheme: str


def role_name(spec: AppSpec) -> str:
    """``cpsysd_`` and the app name in the form Ansible wants for roles (``[a-z0-9_]``)."""
    return "cpsysd_" + re.sub(r"[^a-z0-9_]", "_", spec.name.lower())


def fleet_listener(spec: AppSpec) -> Listener:
    """The listener the front host's nginx and the health check reach: the first plain TCP one
    that listens on every address (a loopback or unix listener is out of the front's reach)."""
    for listener in spec.listeners:
        if listener.path is None and not listener.tls and listener.host in (None, "0.0.0.0", "::"):
            return listener
    raise SpecError(
        "listen",
        "has no plain TCP listener on every address, so other hosts cannot reach the app",
        'add one, e.g. listen = ["8080"] (nginx on the front hosts terminates TLS)',
    )


def fleet_of(spec: AppSpec) -> Fleet:
    """The ports and scheme of :func:`fleet_listener` (a TLS listener is not used: see there)."""
    from cpsysd.description.instances import instance_listener, instance_names
    from cpsysd.description.model import WorkerMode

    listener = fleet_listener(spec)
    assert listener.port is not None
    if spec.workers > 1 and spec.worker_mode == WorkerMode.PORTS:
        ports = [instance_listener(spec, listener, i).port for i in instance_names(spec)]
        return Fleet(tuple(p for p in ports if p is not None), "http")
    return Fleet((listener.port,), "http")


def _moved(path: str | None, old_root: str, new_root: str) -> str | None:
    """``path`` under ``old_root`` moved to ``new_root``; other paths stay (they are the host's,
    like certificates)."""
    if path is None:
        return None
    relative = PurePosixPath(path).relative_to(old_root) if path.startswith(old_root) else None
    return str(PurePosixPath(new_root) / relative) if relative is not None else path


def host_spec(spec: AppSpec) -> AppSpec:
    """The description the app hosts get: the app under /opt/cpsysd/apps/NAME, run by the
    virtualenv's interpreter, its secrets in an environment file (the description's own, or
    /etc/cpsysd/NAME.env). Certificates and other absolute paths stay: they are each host's."""
    workdir = f"{APPS}/{spec.name}"
    old = spec.working_directory
    tls = spec.tls
    if tls is not None:
        tls = replace(
            tls,
            cert=_moved(tls.cert, old, workdir) or tls.cert,
            key=_moved(tls.key, old, workdir) or tls.key,
            chain=_moved(tls.chain, old, workdir),
        )
    return replace(
        spec,
        working_directory=workdir,
        python=f"{VENV}/bin/python",
        config=_moved(spec.config, old, workdir),
        environment_file=spec.environment_file or f"{ETC}/{spec.name}.env",
        tls=tls,
    )


def _yaml(value: object) -> str:
    # JSON is YAML (1.2, and what PyYAML reads of it); "{{" in a value would be templated by
    # Ansible, so values that could hold it are refused by the spec's own checks first.
    return json.dumps(value)


def _site_template(spec: AppSpec) -> str:
    """``cpsysd nginx``'s site with the upstream's servers replaced by a loop over the inventory's
    app hosts; everything else is kept verbatim (``{% raw %}``) so nginx text is never Jinja."""
    from cpsysd.targets.nginx import render_site

    nginx = spec.nginx or NginxConfig()
    site = render_site(replace(spec, nginx=replace(nginx, upstream=(_PLACEHOLDER,))))
    before, found, after = site.partition(f"    server {_PLACEHOLDER};\n")
    if not found or "endraw" in site:
        raise SpecError("nginx", "the site cannot be made into an Ansible template")
    loop = (
        "{% for host in groups[cpsysd_app_group] %}\n"
        "{% set address = hostvars[host].cpsysd_address"
        " | default(hostvars[host].ansible_host | default(host)) %}\n"
        "{% for port in cpsysd_ports %}\n"
        "    server {{ '[' ~ address ~ ']' if ':' in address else address }}:{{ port }}"
        " max_fails={{ cpsysd_nginx_max_fails }} fail_timeout={{ cpsysd_nginx_fail_timeout }};\n"
        "{% endfor %}\n"
        "{% endfor %}\n"
    )
    return "{% raw %}" + before + "{% endraw %}" + loop + "{% raw %}" + after + "{% endraw %}"


def render_role(spec: AppSpec, serial: str = "1") -> dict[str, str]:
    """The playbook, example inventory and role for ``spec``: relative path -> text. ``serial``:
    how many app hosts change at once (a number or a percentage, Ansible's ``serial:``)."""
    from cpsysd.render.common import MARKER, comment_text, render_template, template_source

    if not re.fullmatch(r"[1-9][0-9]{0,3}%?", serial) or serial.startswith("0"):
        raise SpecError(
            "serial", f"{serial!r} is not a host count or percentage", "e.g. 1, 2 or 25%"
        )
    fleet = fleet_of(spec)
    role = role_name(spec)
    on_host = host_spec(spec)
    releases = [f"{spec.name}-release@*.service", f"{spec.name}-release-*@*.service"]
    stop = [*units_to_enable(spec), f"{spec.name}.service", f"{spec.name}@*.service", *releases]
    context = {
        "marker": MARKER,
        "source": comment_text(spec.source or "a description").replace("\n", " "),
        "app_name": spec.name,
        "role": role,
        "json": _yaml,
        "serial": serial if serial.endswith("%") else int(serial),
        "ports": list(fleet.ports),
        "scheme": fleet.scheme,
        "stop_units": stop,
        "apt_packages": list(APT_PACKAGES),
        "venv": VENV,
        "deploy_record": f"{DEPLOYED}/{spec.name}",
        "app_dir": on_host.working_directory,
        "description_path": f"{ETC}/{spec.name}.toml",
        "environment_file": on_host.environment_file,
        "site_path": f"/etc/nginx/sites-available/{spec.name}.conf",
        "enabled_path": f"/etc/nginx/sites-enabled/{spec.name}.conf",
    }
    files = {
        "site.yml": render_template("ansible/site.yml.j2", **context),
        "inventory.example.ini": render_template("ansible/inventory.example.ini.j2", **context),
        f"roles/{role}/defaults/main.yml": render_template("ansible/defaults.yml.j2", **context),
        f"roles/{role}/vars/main.yml": render_template("ansible/vars.yml.j2", **context),
        f"roles/{role}/templates/nginx-site.conf.j2": _site_template(spec),
        f"roles/{role}/files/{spec.name}.toml": spec_to_toml(on_host),
    }
    for name in _STATIC:
        files[f"roles/{role}/{name}"] = template_source(f"ansible/{name.replace('/', '-')}")
    return files
