"""Renewal of an app's local TLS certificate: ``NAME-cert-renew.timer`` and its service.

When ``[tls] renew_days`` is above 0, :func:`render_renew_units` adds a timer (twice a day) and
a oneshot service running ``cpsysd cert renew -c DESCRIPTION``. That command
(:func:`renew_from_description`) re-issues the certificate when it expires within
``renew_days`` days, from ``[tls] ca_dir`` or self-signed, for ``[tls] hosts`` (or the names of
the current certificate), then restarts the app's service if it runs.

Why a restart and not ``systemctl reload``: the service receives key and certificate through
``LoadCredential=``, which systemd copies into ``$CREDENTIALS_DIRECTORY`` when the service
starts; before v260 (``RefreshOnReload=credentials``) a reload does not refresh that copy, so
the app would re-read the old files. The sockets belong to systemd, so connections arriving
during the restart wait in the listen backlog instead of being refused, and ``cpsysd serve``
finishes in-flight requests on SIGTERM.

An encrypted key stays encrypted: the new key is written with the passphrase of ``[tls]
passphrase_file``, and a CA key is unlocked with ``[tls] ca_passphrase_file``. The service gets
both as credentials (``tls-key-passphrase``, ``tls-ca-passphrase``), like the app gets the first,
and never on its command line or in its environment; see :func:`renew_credentials`.

This module renders (pure); :mod:`cpsysd.host.renew` re-issues and restarts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from cpsysd import escape
from cpsysd.credentials import CREDENTIAL_CA_PASSPHRASE, CREDENTIAL_PASSPHRASE
from cpsysd.description.model import ACME_CHALLENGE_ROOT, ACME_STATUS_ROOT
from cpsysd.errors import SpecError
from cpsysd.render.common import MARKER, comment_text, protect_home_tree, render_template
from cpsysd.tls.names import chain_path_for

if TYPE_CHECKING:
    from cpsysd.description.load import AppSpec, TLSConfig
    from cpsysd.render.common import RenderOptions


def renew_unit_names(spec: AppSpec) -> tuple[str, str] | None:
    """``(NAME-cert-renew.timer, NAME-cert-renew.service)``, or None without renewal."""
    if spec.tls is None or (spec.tls.renew_days <= 0 and spec.tls.acme is None):
        return None
    return f"{spec.name}-cert-renew.timer", f"{spec.name}-cert-renew.service"


def renewal_chain_path(tls: TLSConfig) -> str | None:
    if tls.chain:
        return tls.chain
    if not tls.ca_dir:
        return None
    return str(chain_path_for(Path(tls.cert)))


def renew_credentials(tls: TLSConfig) -> list[str]:
    """``LoadCredential=`` values (``ID:PATH``) of the renewal service: the passphrases only.

    The job runs as root and could open the files itself, but credentials are better: PID 1
    reads them before it builds the sandbox, so a file the sandbox hides (``ProtectHome=yes``)
    still arrives; the job encrypts the new key with exactly the copy the app unlocks it with;
    and the service learns a credential's name, never the secret, on its command line."""
    credentials = []
    if tls.passphrase_file:
        credentials.append(f"{CREDENTIAL_PASSPHRASE}:{tls.passphrase_file}")
    if tls.ca_dir and tls.ca_passphrase_file:
        credentials.append(f"{CREDENTIAL_CA_PASSPHRASE}:{tls.ca_passphrase_file}")
    return credentials


def render_renew_units(spec: AppSpec, options: RenderOptions) -> dict[str, str]:
    """The renewal timer and service for ``spec`` (file name -> text); empty without renewal."""
    names = renew_unit_names(spec)
    if names is None or spec.tls is None:
        return {}
    timer, service = names
    tls = spec.tls
    if options.user_mode and tls.acme is not None:
        _refuse_user_runtime_paths(tls)
    argv = [spec.python, "-m", "cpsysd", "cert", "renew", "-c", options.description_path]
    if options.user_mode:
        argv.append("--user")
    try:
        exec_start = escape.command_line(argv)
    except ValueError as err:
        raise SpecError("python", str(err)) from None
    outputs = [tls.cert, tls.key, renewal_chain_path(tls)]
    runtime_directories = []
    challenge_dir = spec.acme_challenge_dir
    if tls.acme is not None:
        outputs.append(tls.account_key_path)
        if challenge_dir and challenge_dir.startswith(ACME_CHALLENGE_ROOT + "/"):
            runtime_directories.append(challenge_dir.removeprefix("/run/"))
        elif challenge_dir:
            outputs.append(os.path.join(challenge_dir, "token"))
        status_dir = os.path.dirname(spec.acme_failure_path or "")
        if status_dir.startswith(ACME_STATUS_ROOT + "/"):
            runtime_directories.append(status_dir.removeprefix("/run/"))
        elif status_dir:
            outputs.append(os.path.join(status_dir, "failure"))
    writable = sorted({os.path.dirname(path) for path in outputs if path})
    common = {
        "marker": MARKER,
        "source": comment_text(spec.source or options.description_path),
        "description": escape.escape_specifiers(spec.description),
        "description_path": escape.file_url_path(options.description_path),
        "renew_days": tls.renew_days,
        "acme": tls.acme is not None,
    }
    return {
        timer: render_template("cert-renew.timer.j2", **common),
        service: render_template(
            "cert-renew.service.j2",
            **common,
            timer=timer,
            service=restart_target(spec),
            cert_comment=comment_text(tls.cert),
            issuer=comment_text(_issuer(tls)),
            challenge_dir=comment_text(challenge_dir or ""),
            runtime_directory=" ".join(map(escape.escape_specifiers, runtime_directories)),
            exec_start=exec_start,
            writable=[escape.escape_specifiers(path) for path in writable],
            credentials=[escape.escape_specifiers(c) for c in renew_credentials(tls)],
            # ReadWritePaths= cannot reach into a ProtectHome=yes tree (systemd.exec(5)).
            protect_home="read-only" if any(map(protect_home_tree, writable)) else "yes",
            user_mode=options.user_mode,
        ),
    }


def _refuse_user_runtime_paths(tls: TLSConfig) -> None:
    """ACME under ``--user`` needs its answer and status directories named: the defaults are
    under /run/cpsysd, but a user manager puts RuntimeDirectory= under $XDG_RUNTIME_DIR, so the
    job would write where the app never looks (or not at all: /run/cpsysd is root's). The
    description, and with it the runtime, cannot know the user's $XDG_RUNTIME_DIR."""
    unset = [
        key
        for key, value in (
            ("acme_challenge_dir", tls.acme_challenge_dir),
            ("acme_status_dir", tls.acme_status_dir),
        )
        if not value
    ]
    if unset:
        raise SpecError(
            "tls.acme",
            f"with --user, {' and '.join(unset)} cannot be the default under /run/cpsysd "
            "(a user manager's RuntimeDirectory= is under $XDG_RUNTIME_DIR)",
            f"set [tls] {' and '.join(unset)} to directories this user owns, or install "
            "without --user",
        )


def _issuer(tls: TLSConfig) -> str:
    if tls.acme is not None:
        return tls.acme
    return f"CA in {tls.ca_dir}" if tls.ca_dir else "self-signed"


def restart_target(spec: AppSpec) -> str:
    """What a renewal restarts: the service, or every worker instance (``NAME@*.service``)."""
    return f"{spec.name}@*.service" if spec.workers > 1 else f"{spec.name}.service"
