#!/usr/bin/env bash
# Set up a development checkout of cpsysd on Debian 12 (bookworm), as root:
#   - Debian packages the project builds against or tests with (libsystemd-dev for
#     systemd-python, nginx, wrk, openssl, debhelper/lintian for the .debs, ...);
#   - a virtualenv at .venv made from Debian's /usr/bin/python3 (not a pyenv build in root's
#     home: services with DynamicUser= cannot execute those, see README "Interpreters");
#   - cpsysd installed into it in editable mode with its dev extras (pytest, ruff, mypy, just...).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  libsystemd-dev pkg-config gcc python3-venv python3-dev python3-pip
  nginx-light wrk hyperfine curl openssl iproute2 util-linux
  debhelper dh-python devscripts lintian build-essential fakeroot
  pybuild-plugin-pyproject python3-all python3-hatchling
  python3-cherrypy3 python3-systemd python3-jinja2 python3-cryptography python3-typer python3-acme
  ansible-core ansible-lint  # cpsysd export ansible: tests/test_ansible.py, tests/e2e/test_e2e_ansible.py
  uwsgi-core uwsgi-plugin-python3  # bench/: the uWSGI baseline
  pebble  # tests/test_acme.py: the ACME test server (RFC 8555), with real challenge validation
  strace  # test_tls_files.py: keys opened 0600 with O_EXCL; test_hostile_faults.py: SIGKILL at each step
  systemd dbus procps passwd tar  # cpsysd.harness.container / tests/e2e: systemd in a container, ps, useradd
)

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (it installs Debian packages with apt-get)" >&2
  exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv .venv
fi
# Quiet unless it fails; pip's own output is kept for that case.
if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' >.venv/pip.log 2>&1; then
  cat .venv/pip.log >&2
  exit 1
fi
# Byte-compile so the hardened services (ProtectSystem=strict) never try to write caches.
.venv/bin/python -m compileall -q cpsysd >/dev/null
echo "setup: ready (.venv/bin/cpsysd, .venv/bin/just)"
