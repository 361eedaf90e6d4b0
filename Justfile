# cpsysd's recipes. `scripts/setup.sh` first (as root); it puts `just` into .venv/bin.
set shell := ["bash", "-euo", "pipefail", "-c"]
venv := justfile_directory() / ".venv"
py := venv / "bin/python"

# List the recipes.
default:
    @just --list

# Install Debian packages and the dev virtualenv (idempotent).
setup:
    scripts/setup.sh

# Run the whole test suite, end-to-end tests in the systemd container included.
test *ARGS:
    {{py}} -m pytest {{ARGS}}

# Fast tests only (no systemd container).
test-fast *ARGS:
    {{py}} -m pytest -m "not e2e" {{ARGS}}

# ruff, ruff format --check, mypy --strict.
lint:
    {{venv}}/bin/ruff check cpsysd tests bench
    {{venv}}/bin/ruff format --check cpsysd tests bench
    {{venv}}/bin/mypy

# Rewrite README.md's table of description fields from cpsysd/description/fields.py.
fields:
    {{py}} -m cpsysd.host.readme README.md

# Generate and verify the example app's units, then run it under a real systemd.
demo:
    {{venv}}/bin/cpsysd verify -c examples/hello/cpsysd.toml
    {{venv}}/bin/cpsysd try -c examples/hello/cpsysd.toml

# Benchmarks (not run in CI): writes bench/RESULTS.md.
bench *ARGS:
    {{py}} bench/run.py {{ARGS}}

# Build cpsysd's .deb and the example app's .deb into dist/.
deb:
    packaging/build-debs.sh
