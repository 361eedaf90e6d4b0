"""An Ansible connection plugin for the containers of ``cpsysd.harness``: every command, and
every file copied, goes through the harness's own way in, ``Container.enter_argv()`` (nsenter
into PID 1's namespaces, setpriv dropping the capabilities PID 1 dropped, a clean environment).
No network and no sshd are involved, and nothing but these containers can be a target: the
argv prefix names the container's PID 1 (tests/e2e/test_e2e_ansible.py writes it into the
inventory as ``harness_enter_argv``)."""

from __future__ import annotations

import subprocess
from typing import Any

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.plugins.connection import ConnectionBase

DOCUMENTATION = """
name: harness
short_description: Run commands inside a cpsysd harness container
description:
  - Enters the container with the argv prefix of cpsysd.harness Container.enter_argv().
options:
  enter_argv:
    description: The argv prefix (nsenter ... setpriv ... env -i ...) of the container.
    type: list
    elements: str
    vars:
      - name: harness_enter_argv
"""

TIMEOUT = 600  # seconds: no command of the test's playbooks takes nearly this long


class Connection(ConnectionBase):  # type: ignore[misc]
    transport = "harness"
    has_pipelining = True

    def _connect(self) -> Connection:
        self._connected = True
        return self

    def _inside(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
        prefix = self.get_option("enter_argv")
        if not prefix or prefix[0] != "nsenter":
            raise AnsibleConnectionFailure("harness_enter_argv is not a harness nsenter prefix")
        return subprocess.run([*prefix, *argv], capture_output=True, timeout=TIMEOUT, **kw)

    def exec_command(
        self, cmd: str, in_data: bytes | None = None, sudoable: bool = True
    ) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        result = self._inside(["/bin/sh", "-c", cmd], input=in_data)
        return result.returncode, result.stdout, result.stderr

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        with open(in_path, "rb") as source:
            result = self._inside(["/bin/sh", "-c", 'cat > "$1"', "sh", out_path], stdin=source)
        if result.returncode != 0:
            raise AnsibleError(f"copying to {out_path} failed: {result.stderr.decode()}")

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        result = self._inside(["cat", "--", in_path])
        if result.returncode != 0:
            raise AnsibleError(f"reading {in_path} failed: {result.stderr.decode()}")
        with open(out_path, "wb") as target:
            target.write(result.stdout)

    def close(self) -> None:
        self._connected = False
