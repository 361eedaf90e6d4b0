"""Options that several commands share, each declared once (pipx's ``add_pip_venv_args`` idea),
and the one rule by which every command finds its description.

Each ``*_option()`` returns a fresh ``typer.Option`` to use as a parameter's default: typer 0.7
(Debian bookworm) has no ``Annotated`` parameters, and a fresh object per command keeps typer
from sharing one declaration's state between commands.

The description lookup, the same for every command that reads one (``generate``, ``verify``,
``install``, ``try``, ``nginx``, ``debian``, ``cert renew``):

1. ``-c FILE`` when given (a cpsysd.toml, or a pyproject.toml with ``[tool.cpsysd]``);
2. else ``./cpsysd.toml``;
3. else ``./pyproject.toml`` if it has a ``[tool.cpsysd]`` table (a Python project's
   pyproject.toml without one is not an error, just not a description);
4. else ``/etc/cpsysd/NAME.toml`` for a command given the app's NAME (``install NAME``: where a
   package puts the description);
5. else one error naming the places looked at, exit code 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cpsysd.errors import CpsysdError, SpecError

if TYPE_CHECKING:
    from cpsysd.description.model import AppSpec

LOCAL_DESCRIPTION = Path("cpsysd.toml")
LOCAL_PYPROJECT = Path("pyproject.toml")
SYSTEM_DESCRIPTION_DIR = Path("/etc/cpsysd")

CONFIG_HELP = (
    "The app description: a cpsysd.toml, or a pyproject.toml with [tool.cpsysd]. Without -c: "
    "./cpsysd.toml, else ./pyproject.toml if it has [tool.cpsysd]"
)
_BY_NAME_HELP = ", else /etc/cpsysd/NAME.toml"
USER_HELP = "Your user's service manager (systemctl --user), not the system's."
_KEY_FILE_HELP = (
    "Encrypt (or read) the private key with the passphrase in this file (a trailing newline "
    "is ignored). Never put a passphrase itself on the command line."
)
_KEY_CREDENTIAL_HELP = (
    "Like --passphrase-file, but read $CREDENTIALS_DIRECTORY/NAME (a systemd credential, "
    "LoadCredential=NAME:PATH in the unit running this command)."
)


def config_option(by_name: bool = False, note: str = "") -> Any:
    """``-c/--config FILE``, None when not given; resolve it with :func:`load_description` or
    :func:`find_description`. ``by_name``: the command takes the app's NAME, so the lookup ends
    at /etc/cpsysd/NAME.toml. ``note``: what this command needs in the description."""
    text = CONFIG_HELP + (_BY_NAME_HELP if by_name else "") + "."
    return typer.Option(
        None, "-c", "--config", metavar="FILE", help=f"{text} {note}" if note else text
    )


def user_option() -> Any:
    """``--user``: the user's service manager instead of the system's."""
    return typer.Option(False, "--user", help=USER_HELP)


def force_option(help: str) -> Any:
    """``--force``; ``help`` says what this command replaces when forced."""
    return typer.Option(False, "--force", help=help)


def passphrase_file_option(
    flag: str = "--passphrase-file",
    help: str = _KEY_FILE_HELP,
) -> Any:
    """``--passphrase-file FILE`` (or ``flag``, e.g. ``--ca-passphrase-file``)."""
    return typer.Option(None, flag, metavar="FILE", help=help)


def passphrase_credential_option(
    flag: str = "--passphrase-credential",
    help: str = _KEY_CREDENTIAL_HELP,
) -> Any:
    """``--passphrase-credential NAME`` (or ``flag``): the passphrase as a systemd credential."""
    return typer.Option(None, flag, metavar="NAME", help=help)


def _has_cpsysd_table(pyproject: Path) -> bool:
    import tomllib

    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return True  # unreadable: let load_spec name the file and the problem
    tool = data.get("tool")
    return isinstance(tool, dict) and "cpsysd" in tool


def find_description(config: Path | None, name: str | None = None) -> Path:
    """The description file by the lookup rule in this module's docstring."""
    if config is not None:
        return config  # a missing -c FILE is load_spec's error, which names the file
    if LOCAL_DESCRIPTION.exists():
        return LOCAL_DESCRIPTION
    if LOCAL_PYPROJECT.exists() and _has_cpsysd_table(LOCAL_PYPROJECT):
        return LOCAL_PYPROJECT
    looked = ["./cpsysd.toml", "./pyproject.toml with [tool.cpsysd]"]
    if name is not None:
        system = SYSTEM_DESCRIPTION_DIR / f"{name}.toml"
        if system.exists():
            return system
        looked.append(str(system))
    raise CpsysdError(
        f"no description found (looked for {', '.join(looked)})",
        "pass -c FILE, or create one with: cpsysd init --name NAME --entry MODULE:OBJECT",
    )


def load_description(config: Path | None, name: str | None = None) -> AppSpec:
    """Find (:func:`find_description`) and load the description; given ``name``, it must
    describe that app."""
    from cpsysd.description.load import load_spec

    path = find_description(config, name)
    spec = load_spec(path)
    if name is not None and spec.name != name:
        raise SpecError(
            "name",
            f"{path} describes {spec.name!r}, not {name!r}",
            f"pass -c with {name}'s description",
        )
    return spec
