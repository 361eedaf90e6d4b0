"""``cpsysd verify``: prove the app will start (:mod:`cpsysd.host.preflight`) and check the
generated units with systemd's own tools.

``systemd-analyze verify`` exits 0 on unknown keys and bad values and only warns on stderr
(FINDINGS.md), so any stderr output counts as a failure. ``systemd-analyze security
--offline=yes`` gives the exposure score (0 = locked down, 10 = exposed).
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cpsysd.description.load import AppSpec, Hardening
from cpsysd.errors import VerifyError
from cpsysd.host.preflight import PreflightReport, check_preflight
from cpsysd.host.run import run_command
from cpsysd.render.units import RenderOptions, render_units

_EXPOSURE = re.compile(r"Overall exposure level for \S+: ([0-9]+\.[0-9]+)")
TEMPLATE_INSTANCE = "1"
# Helper units (the certificate renewal job) run as root to write root-owned key files for
# LoadCredential= and to ask PID 1 for a restart; they are held to this bound instead.
HELPER_THRESHOLD = 1.0


@dataclass(frozen=True)
class VerifyReport:
    """The exposure score of each service unit (``{unit: score}``); ``exposure`` is the worst
    score among the app's own services (NAME.service or NAME@1.service); ``preflight`` what
    the preflight found (None when it was skipped)."""

    exposures: dict[str, float]
    app_units: tuple[str, ...]
    preflight: PreflightReport | None = None

    @property
    def exposure(self) -> float:
        return max(self.exposures[unit] for unit in self.app_units)


def default_threshold(spec: AppSpec) -> float:
    """The highest exposure cpsysd accepts for its own defaults: 0.3 without outbound network
    (PrivateNetwork=yes), 0.9 with it; a relaxed sandbox is allowed up to 2.0, or 3.0 with
    network (it measures 1.9 and 2.7 on systemd 252)."""
    if spec.hardening is Hardening.RELAXED:
        return 3.0 if spec.network else 2.0
    return 0.9 if spec.network else 0.3


def write_for_analysis(units: dict[str, str], directory: Path) -> list[Path]:
    """Write ``units`` into ``directory``; template units (``x@.service``) are written as an
    instance (``x@1.service``), which is what systemd-analyze can load."""
    paths = []
    for name, text in units.items():
        if "@." in name:
            name = name.replace("@.", f"@{TEMPLATE_INSTANCE}.")
        path = directory / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def verify_args(paths: list[Path]) -> list[str]:
    """Arguments for ``systemd-analyze verify``. It reads ``FILE:ALIAS`` (systemd >= 250), so a
    unit whose name holds ``:`` ("Couldn't process aliases") is passed as a ``:``-free copy with
    its name as the alias."""
    args = []
    for i, path in enumerate(paths):
        if ":" in path.name:
            copy = path.parent / "alias" / f"{i}{path.suffix}"
            copy.parent.mkdir(exist_ok=True)
            copy.write_bytes(path.read_bytes())
            args.append(f"{copy}:{path.name}")
        else:
            args.append(str(path))
    return args


def verify_units(
    spec: AppSpec, threshold: float | None = None, description_path: str | None = None
) -> VerifyReport:
    """Verify ``spec``'s units; raise VerifyError on a warning or an exposure above
    ``threshold``."""
    limit = default_threshold(spec) if threshold is None else threshold
    units = render_units(
        spec, RenderOptions(description_path or spec.source or f"/var/lib/cpsysd/{spec.name}.toml")
    )
    with tempfile.TemporaryDirectory(prefix="cpsysd-verify-") as tmp:
        paths = write_for_analysis(units, Path(tmp))
        result = run_command(["systemd-analyze", "verify", *verify_args(paths)], check=False)
        problems = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        if result.returncode != 0 or problems:
            first = problems[0] if problems else f"exit status {result.returncode}"
            raise VerifyError(
                f"systemd-analyze verify: {first}",
                f"{len(problems)} problem(s); run systemd-analyze verify on the generated units",
            )
        exposures = {}
        for path in paths:
            if path.suffix != ".service":
                continue
            out = run_command(
                ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(path)],
                check=False,
            )
            match = _EXPOSURE.search(out.stdout)
            if match is None:
                raise VerifyError(
                    f"systemd-analyze security gave no score for {path.name}: {out.stderr.strip()}"
                )
            exposures[path.name] = float(match.group(1))
    app_units = tuple(
        u
        for u in exposures
        if u in (f"{spec.name}.service", f"{spec.name}@{TEMPLATE_INSTANCE}.service")
    )
    report = VerifyReport(exposures, app_units)
    for unit, score in exposures.items():
        if unit not in app_units and score > HELPER_THRESHOLD:
            raise VerifyError(f"{unit} has exposure {score:.1f}, above {HELPER_THRESHOLD:.1f}")
    if report.exposure > limit:
        worst = max(app_units, key=lambda unit: exposures[unit])
        raise VerifyError(
            f"{worst} has exposure {report.exposure:.1f}, above the threshold {limit:.1f}",
            'keep hardening = "strict" and network = false where possible, or raise --max-exposure',
        )
    return report


def verify_app(
    spec: AppSpec, threshold: float | None = None, *, preflight: bool = True
) -> VerifyReport:
    """``cpsysd verify``: the preflight first (the app imports, its files are there), then the
    units. ``preflight=False`` checks only the units, for a machine that is not the one they
    will run on."""
    found = check_preflight(spec) if preflight else None
    return dataclasses.replace(verify_units(spec, threshold), preflight=found)
