"""``cpsysd generate --target supervisord``: a supervisord ``[program:NAME]`` section that runs
``cpsysd serve``, for hosts without systemd (CherryPy's deployment guide, "supervisord").

supervisord reads the file with Python's RawConfigParser, cutting inline comments that start
with `` ;`` or `` #``, then expands ``%(name)s`` in nearly every value, then splits ``command``
with :func:`shlex.split` and ``environment`` with a non-POSIX :class:`shlex.shlex` whose quotes
are stripped afterwards (supervisor/options.py, datatypes.py). Values are escaped for each of
those steps here, or refused when no escaping survives them; the template only lays out.

``workers = N`` becomes ``numprocs = N`` (supervisord's config docs, "[program:x] Section
Settings"): processes named ``PROGRAM-%(process_num)d`` (numprocs > 1 requires process_num in
``process_name``), ``process_num`` running from ``numprocs_start`` = the first instance name of
:func:`cpsysd.description.instances.instance_names` (1 in reuseport mode, the first port in ports
mode), so
that ``cpsysd serve --instance %(process_num)d`` is the instance systemd would call ``%i``. Those
``%(process_num)d`` are the only ``%`` left unescaped; each process gets its own log file.
"""

from __future__ import annotations

import re
import shlex

from cpsysd.description.load import AppSpec
from cpsysd.errors import SpecError

DEFAULT_LOG_DIR = "/var/log/supervisor"
# RawConfigParser(inline_comment_prefixes=(";", "#")) ends a value at whitespace + ; or #.
_INLINE_COMMENT = re.compile(r"\s[;#]")


def _value(fieldname: str, text: str) -> str:
    """One ini value: no inline-comment start, ``%`` doubled against ``%(name)s`` expansion."""
    if _INLINE_COMMENT.search(text) or text != text.strip():
        raise SpecError(
            fieldname,
            f"{text!r} cannot be written for supervisord",
            "avoid ' ;', ' #' and leading or trailing spaces",
        )
    # supervisord replaces the text "%(here)s" before any other expansion, doubled % or not.
    if "%(here)s" in text:
        raise SpecError(fieldname, "contains %(here)s, which supervisord always expands")
    return text.replace("%", "%%")


def _env_pair(key: str, value: str) -> str:
    """``KEY="value"`` as datatypes.dict_of_key_value_pairs reads it: a non-POSIX shlex keeps
    quotes literal (no escapes inside them), then strips quote characters off both ends."""
    if value and (value[0] in "'\"" or value[-1] in "'\""):
        raise SpecError(
            f"environment.{key}", "starts or ends with a quote, which supervisord strips"
        )
    quote = '"' if '"' not in value else "'"
    if quote in value:
        raise SpecError(
            f"environment.{key}",
            "contains both quote characters",
            "supervisord cannot pass such a value; use one kind of quote",
        )
    return f"{key}={quote}{value}{quote}"


def program_name(spec: AppSpec) -> str:
    """The ``[program:...]`` name: the app name with ``:`` (supervisorctl's group separator)
    replaced by ``_``."""
    return spec.name.replace(":", "_")


def render_supervisord(
    spec: AppSpec, description_path: str | None = None, log_dir: str = DEFAULT_LOG_DIR
) -> str:
    """The supervisord program section for ``spec``. ``description_path``: the file ``cpsysd
    serve -c`` reads (default: the file the spec came from); ``log_dir``: where its log goes."""
    from cpsysd.render.common import MARKER, comment_text, render_template

    if spec.environment_file:
        raise SpecError(
            "environment_file",
            "supervisord has no EnvironmentFile=",
            "move the variables into [environment] for the supervisord target",
        )
    path = description_path or spec.source
    if not path:
        raise SpecError(
            "description", "has no file to read at run time", "pass the description's path"
        )
    argv = [spec.python, "-m", "cpsysd", "serve", "-c", path]
    command = _value("command", shlex.join(argv))
    if "%" in log_dir:
        # supervisord expands stdout_logfile twice (supervisor/options.py, 4.3.0), so no
        # escaping of % survives every version; refuse instead.
        raise SpecError(
            "log_dir", f"{log_dir!r} contains %, which supervisord expands in log file names",
            "choose a log directory without %",
        )  # fmt: skip
    logfile = _value("log_dir", f"{log_dir.rstrip('/')}/{program_name(spec)}")
    first_instance = None
    if spec.workers > 1:
        from cpsysd.description.instances import instance_names

        first_instance = int(instance_names(spec)[0])  # SpecError for an impossible ports mode
        # Expanded by supervisord to each process's number, which is the instance name.
        command += " --instance %(process_num)d"
        logfile += "-%(process_num)d"
    pairs = [("PYTHONUNBUFFERED", "1"), *spec.environment]
    environment = ",".join(_env_pair(k, _value(f"environment.{k}", v)) for k, v in pairs)
    program = program_name(spec)
    return render_template(
        "supervisord.conf.j2",
        marker=MARKER,
        source=comment_text(spec.source or path),
        program=program,
        command=command,
        directory=_value("working_directory", spec.working_directory),
        user=_value("user", spec.user) if spec.user else None,
        group_note=f"group {spec.group} is not applied: supervisord uses the user's primary group"
        if spec.group
        else None,
        environment=environment,
        workers=spec.workers,
        worker_mode=spec.worker_mode.value,
        first_instance=first_instance,
        timeout_stop_sec=spec.timeout_stop_sec,
        logfile=f"{logfile}.log",
    )
