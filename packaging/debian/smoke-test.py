"""Build-time check of the built cpsysd (run by pybuild in its build directory, see rules).

The project's real test suite needs root and a booted systemd container; a package build checks
what packaging can break: the package (runtime included) imports with Debian's python3
modules (Typer 0.7, cryptography 38, cheroot 9, ...), its templates are inside it (not found
through a source checkout), and it renders an app's units and maintainer scripts.
"""

import sys
from pathlib import Path

import cpsysd.cli.app
import cpsysd.targets.debian
import cpsysd.render.common
import cpsysd.render.units
import cpsysd.runtime.main
import cpsysd.description.load

here = Path(cpsysd.render.common.__file__).resolve().parent.parent  # the cpsysd package
if Path.cwd() not in here.parents:
    sys.exit(f"smoke test: imported cpsysd from {here}, not from the build directory {Path.cwd()}")
templates = cpsysd.render.common._templates_dir()
if templates != here / "units":
    sys.exit(f"smoke test: unit templates found at {templates}, not inside the package")
spec = cpsysd.description.load.parse_spec({"name": "hello", "entry": "hello:Root"}, "/srv/hello")
units = cpsysd.render.units.render_units(
    spec, cpsysd.render.units.RenderOptions("/var/lib/cpsysd/hello.toml")
)
if sorted(units) != ["hello.service", "hello.socket"]:
    sys.exit(f"smoke test: rendered {sorted(units)}")
scripts = cpsysd.targets.debian.render_debian(spec, cpsysd.targets.debian.DebianOptions("hello"))
if sorted(scripts) != ["hello.postinst", "hello.postrm", "hello.prerm", "hello.triggers"]:
    sys.exit(f"smoke test: cpsysd debian rendered {sorted(scripts)}")
if cpsysd.cli.app.run(["--version"]) != 0:
    sys.exit("smoke test: cpsysd --version failed")
print(f"smoke test: cpsysd {cpsysd.__version__} imports, renders, runs its CLI")
