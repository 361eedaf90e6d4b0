"""``[tls] acme`` in the description (one-line errors naming the field), the renewal units it
renders (verified by the real systemd-analyze), the backoff, and the runtime's challenge answers
on a real cheroot server. The protocol itself is tested against pebble in tests/test_acme.py."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

import pytest
from test_tls_renew import analyze, directives

from cpsysd.description.load import parse_spec
from cpsysd.errors import SpecError
from cpsysd.host.acmerenew import BACKOFF_MAX, next_attempt
from cpsysd.render.units import RenderOptions, render_units, units_to_enable

OPTIONS = RenderOptions("/var/lib/cpsysd/app.toml")
ACME = {
    "cert": "/etc/cpsysd/tls/app.pem",
    "key": "/etc/cpsysd/tls/app.key",
    "acme": "letsencrypt",
    "hosts": ["app.example.org"],
}


def spec_of(listen: list[str] | None = None, **tls: object):
    base = {"name": "app", "entry": "app:Root", "python": sys.executable}
    return parse_spec(
        {**base, "listen": listen or ["80", "443=https"], "tls": {**ACME, **tls}}, "/srv/app"
    )


def test_named_cas_and_defaults() -> None:
    spec = spec_of()
    assert spec.tls is not None
    assert spec.tls.acme == "https://acme-v02.api.letsencrypt.org/directory"
    assert spec.tls.account_key_path == "/etc/cpsysd/tls/acme-account.pem"
    assert spec.acme_challenge_dir == "/run/cpsysd/acme/app"
    staging = spec_of(acme="letsencrypt-staging").tls
    assert staging is not None
    assert "acme-staging-v02" in (staging.acme or "")


@pytest.mark.parametrize(
    ("listen", "tls", "field", "says"),
    [
        (None, {"acme": "http://ca.test/dir"}, "tls.acme", "neither a known CA nor an https://"),
        (None, {"acme": "letsencrpyt"}, "tls.acme", "neither a known CA"),
        (None, {"acme_email": "ops"}, "tls.acme_email", "is not an e-mail address"),
        (None, {"hosts": []}, "tls.hosts", "the CA needs the names"),
        (None, {"hosts": ["10.0.0.1"]}, "tls.hosts[0]", "ACME certifies DNS names here"),
        (None, {"ca_dir": "/etc/cpsysd/ca"}, "tls.ca_dir", "two sources of the certificate"),
        (["80"], {"acme_challenge": "tls-alpn-01"}, "tls.acme_challenge", "needs an https list"),
        (["80", "8443=https"], {"acme_challenge": "tls-alpn-01"}, "tls.acme_challenge", "port 443"),
        (None, {"acme_challenge": "dns-01"}, "tls.acme_challenge", "not one of http-01, tls-alpn"),
        (["443=https"], {}, "tls.acme_challenge", "needs a plain HTTP listener"),
        (None, {"acme": None, "acme_email": "a@b.org"}, "tls.acme_email", "needs acme"),
    ],
)
def test_bad_acme_settings_name_the_field(
    listen: list[str] | None, tls: dict[str, object], field: str, says: str
) -> None:
    settings = {key: value for key, value in {**ACME, **tls}.items() if value is not None}
    base = {"name": "app", "entry": "app:Root", "python": sys.executable}
    with pytest.raises(SpecError) as caught:
        parse_spec({**base, "listen": listen or ["80", "443=https"], "tls": settings}, "/srv")
    assert caught.value.field == field
    assert says in caught.value.message
    assert caught.value.hint or "not one of" in says  # the choices are the fix


def test_tls_alpn_01_on_the_https_listener_only() -> None:
    spec = spec_of(["443=https"], acme_challenge="tls-alpn-01")  # no plain listener needed
    assert spec.acme_challenge_dir == "/run/cpsysd/acme/app"
    # a private CA (pebble's tlsPort) may validate another port; Let's Encrypt cannot
    private = spec_of(["8443=https"], acme_challenge="tls-alpn-01", acme="https://ca.test/dir")
    assert private.tls is not None
    assert private.tls.acme == "https://ca.test/dir"
    base = {"name": "app", "entry": "app:Root", "python": sys.executable}
    nginx = {"server_name": ["app.example.org"]}
    tls = {**ACME, "acme_challenge": "tls-alpn-01"}
    with pytest.raises(SpecError) as caught:
        parse_spec({**base, "listen": ["443=https"], "tls": tls, "nginx": nginx}, "/srv")
    assert caught.value.field == "tls.acme_challenge"
    assert "nginx terminates TLS" in caught.value.message
    assert "http-01" in (caught.value.hint or "")


def test_renewal_units_reach_the_ca_and_keep_the_answers(tmp_path: Path) -> None:
    spec = spec_of(acme_email="ops@example.org")
    units = render_units(spec, OPTIONS)
    assert units_to_enable(spec)[-1] == "app-cert-renew.timer"  # without renew_days
    service = directives(units["app-cert-renew.service"])
    assert ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6") in service
    assert ("PrivateNetwork", "yes") not in service
    assert ("IPAddressDeny", "any") not in service
    # The answers, and the failure record the app puts in its STATUS=.
    assert ("RuntimeDirectory", "cpsysd/acme/app cpsysd/acme-status/app") in service
    assert ("RuntimeDirectoryMode", "0755") in service
    assert ("RuntimeDirectoryPreserve", "yes") in service
    assert ("ReadWritePaths", "/etc/cpsysd/tls") in service  # key, certificate, account key
    assert not [value for key, value in service if key == "LoadCredential"]  # no account key
    timer = directives(units["app-cert-renew.timer"])
    assert ("OnCalendar", "hourly") in timer
    assert ("RandomizedDelaySec", "45min") in timer
    # The app itself never gets the account key: only the certificate's key and chain.
    app = units["app.service"]
    assert "acme-account" not in app
    result = analyze(units, tmp_path)
    assert (result.returncode, result.stderr) == (0, "")


def test_a_custom_challenge_directory_is_writable_for_the_job() -> None:
    spec = spec_of(acme_challenge_dir="/srv/acme")
    service = directives(render_units(spec, OPTIONS)["app-cert-renew.service"])
    assert ("ReadWritePaths", "/srv/acme") in service
    assert ("RuntimeDirectory", "cpsysd/acme-status/app") in service  # the failure record only


def test_backoff_doubles_to_a_day_and_honours_retry_after() -> None:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    hours = [(next_attempt(n, now, None) - now) / datetime.timedelta(hours=1) for n in (1, 2, 3)]
    assert hours == [1, 2, 4]
    assert next_attempt(30, now, None) - now == BACKOFF_MAX
    later = now + datetime.timedelta(days=3)
    assert next_attempt(1, now, later) == later


def test_the_runtime_answers_challenges_before_the_app(tmp_path: Path) -> None:
    """A real cheroot WSGI server with the runtime's wrapper around an app that claims every
    path: tokens come from the directory, everything else under the prefix is a 404."""
    from cheroot import wsgi

    from cpsysd.runtime.acme import with_challenges

    (tmp_path / "tok-EN_1").write_text("tok-EN_1.thumb\n")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "x").write_text("no")

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"the app\n"]

    server = wsgi.Server(("127.0.0.1", 0), with_challenges(app, str(tmp_path)))
    server.prepare()
    import threading

    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        port = server.bind_addr[1]

        def get(path: str, method: str = "GET") -> tuple[str, str]:
            out = subprocess.run(
                ["curl", "-s", "--path-as-is", "-X", method, "-w", " %{http_code}", f"http://127.0.0.1:{port}{path}"],
                capture_output=True, text=True, timeout=10,
            )  # fmt: skip
            body, _, code = out.stdout.rpartition(" ")
            return code, body

        assert get("/.well-known/acme-challenge/tok-EN_1") == ("200", "tok-EN_1.thumb")
        assert get("/.well-known/acme-challenge/missing")[0] == "404"
        # Only a token's own name: no subdirectory, no way out of the directory.
        assert get("/.well-known/acme-challenge/secret/x")[0] == "404"
        assert get("/.well-known/acme-challenge/../acme-challenge/secret/x")[0] == "404"
        assert get("/.well-known/acme-challenge/tok-EN_1", "POST")[0] == "404"
        assert get("/anything") == ("200", "the app\n")
    finally:
        server.stop()


def test_the_failure_record_keeps_the_first_failure_and_goes_on_success(tmp_path: Path) -> None:
    from cpsysd.host.acmerenew import _clear_failure, _record_failure, read_retry

    spec = spec_of(
        cert=str(tmp_path / "cert.pem"),
        key=str(tmp_path / "key.pem"),
        acme_status_dir=str(tmp_path / "status"),
    )
    assert spec.acme_failure_path == str(tmp_path / "status" / "failure")
    assert spec_of().acme_failure_path == "/run/cpsysd/acme-status/app/failure"
    first = datetime.datetime(2026, 1, 1, 10, 0, tzinfo=datetime.UTC)
    later = first + datetime.timedelta(hours=1)
    _record_failure(spec, 1, later, "cannot reach\nthe CA", first)
    _record_failure(spec, 2, later, "the CA could not validate app.test", later)
    record = tmp_path / "status" / "failure"
    assert record.read_text() == (
        "certificate renewal failing since 2026-01-01 10:00 UTC: "
        "the CA could not validate app.test\n"
    )
    assert spec.tls is not None
    assert read_retry(spec.tls)[0] == 2
    _clear_failure(spec)
    assert not record.exists()
    assert read_retry(spec.tls)[0] == 0


def test_the_timer_job_treats_a_busy_lock_as_success() -> None:
    """75 (acmelock.py: another job holds the lock and does the work) is a success for the
    timer's run, so meeting a manual ``cert renew`` does not leave the unit failed."""
    service = directives(render_units(spec_of(), OPTIONS)["app-cert-renew.service"])
    assert ("SuccessExitStatus", "75") in service


def test_user_mode_refuses_the_system_runtime_paths(tmp_path: Path) -> None:
    """A user manager's RuntimeDirectory= is under $XDG_RUNTIME_DIR, not /run/cpsysd: --user
    with the default answer and status directories is refused in one line; named ones work."""
    user = RenderOptions("/home/u/.local/state/cpsysd/app.toml", user_mode=True)
    with pytest.raises(SpecError) as caught:
        render_units(spec_of(acme_challenge_dir="/home/u/acme"), user)
    assert caught.value.field == "tls.acme"
    assert "acme_status_dir cannot be the default under /run/cpsysd" in caught.value.message
    assert "acme_challenge_dir" not in caught.value.message
    assert "set [tls] acme_status_dir" in (caught.value.hint or "")
    named = spec_of(acme_challenge_dir="/home/u/acme", acme_status_dir="/home/u/acme-status")
    service = render_units(named, user)["app-cert-renew.service"]
    assert "/run/cpsysd" not in service
    assert "RuntimeDirectory=" not in service
    # And through the command line: one line, exit 2, no traceback.
    description = tmp_path / "cpsysd.toml"
    description.write_text(
        f'name = "app"\nentry = "app:Root"\npython = "{sys.executable}"\n'
        'listen = ["80", "443=https"]\n[tls]\ncert = "/etc/cpsysd/tls/app.pem"\n'
        'key = "/etc/cpsysd/tls/app.key"\nacme = "letsencrypt"\nhosts = ["app.example.org"]\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "cpsysd", "generate", "-c", str(description), "-o", "-", "--user"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "acme_challenge_dir and acme_status_dir cannot be the default" in done.stderr
