"""The one place that opens SSH connections. Thin on purpose: connect, send a script, read the answer.

Every command runs through one channel per round trip: the script travels on stdin into a private
temp file on the host and runs as root (directly, or through `sudo -S`, whose password is the first
line of stdin). Nothing secret is ever part of a command line. Host keys are verified against the
inventory's known_hosts and the user's own; an unknown or changed key is refused.
"""

from __future__ import annotations

import shlex
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import RemoteError
from .inventory import Host, Inventory

CONNECT_TIMEOUT = 15

# Runs the script read from stdin as a private file, so the commands in it cannot eat their own text.
RUN_FROM_STDIN = "umask 077; f=$(mktemp) || exit 125; cat >\"$f\"; /bin/sh \"$f\" </dev/null; rc=$?; rm -f \"$f\"; exit $rc"


@dataclass
class Counters:
    connections: int = 0
    round_trips: int = 0


@dataclass
class Result:
    rc: int
    stdout: bytes
    stderr: str


@dataclass
class Remote:
    """An SSH session to one host, opened on first use and counted."""

    host: Host
    inventory: Inventory
    password: str | None = None
    counters: Counters = field(default_factory=Counters)
    _conn: object = None

    def _connection(self):
        if self._conn is not None:
            return self._conn
        from fabric import Config, Connection  # deferred: `tin --list` must not pay for importing Fabric
        from paramiko import RejectPolicy

        connect_kwargs = {"timeout": CONNECT_TIMEOUT, "banner_timeout": CONNECT_TIMEOUT, "auth_timeout": CONNECT_TIMEOUT}
        if self.inventory.ssh_key:
            connect_kwargs.update(key_filename=str(self.inventory.ssh_key), look_for_keys=False, allow_agent=False)
        config = Config(overrides={"run": {"in_stream": False}, "load_ssh_configs": True})
        conn = Connection(self.host.address, user=self.host.user, port=self.host.port,
                          config=config, connect_kwargs=connect_kwargs)
        client = conn.client
        client.set_missing_host_key_policy(RejectPolicy())
        if self.inventory.known_hosts:
            try:
                client.load_host_keys(str(self.inventory.known_hosts))
            except OSError as exc:
                raise RemoteError(f"{self.host.name}: cannot read known_hosts {self.inventory.known_hosts}: {exc.strerror}") from None
        started = time.monotonic()
        try:
            conn.open()
        except Exception as exc:  # paramiko and socket errors, mapped to what to do next
            raise RemoteError(self._explain(exc)) from None
        self.counters.connections += 1
        self.connect_seconds = time.monotonic() - started
        self._conn = conn
        return conn

    def _explain(self, exc: Exception) -> str:
        from paramiko import AuthenticationException, BadHostKeyException, SSHException

        where = f"{self.host.name} ({self.host.user}@{self.host.address}:{self.host.port})"
        scan = f"ssh-keyscan -p {self.host.port} {self.host.address}"
        target = self.inventory.known_hosts or "~/.ssh/known_hosts"
        if isinstance(exc, BadHostKeyException):
            return (f"{where}: host key CHANGED (got {exc.key.get_name()} {exc.key.get_fingerprint().hex()}); "
                    f"refusing to connect. If the host was reinstalled, remove its old line from {target} "
                    f"and verify the new key before adding it")
        if isinstance(exc, AuthenticationException):
            return f"{where}: SSH login refused ({exc}); check ssh.key in the inventory and the user's authorized_keys"
        if isinstance(exc, SSHException) and "known_hosts" in str(exc):
            return (f"{where}: host key unknown, refusing to connect. Verify the host's key and add it: "
                    f"{scan} >> {target}")
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return f"{where}: unreachable (timed out after {CONNECT_TIMEOUT}s)"
        if isinstance(exc, OSError):
            return f"{where}: unreachable ({exc.strerror or exc})"
        return f"{where}: SSH failed: {exc}"

    def command(self) -> str:
        """The command line sent for a script: never holds a secret."""
        inner = shlex.join(["/bin/sh", "-c", RUN_FROM_STDIN])
        if self.host.is_root:
            return inner
        sudo_inner = shlex.join(["/bin/sh", "-c", RUN_FROM_STDIN])
        # With a cached or password-less sudo, the password line is read and dropped by the shell.
        return (f"if sudo -n true 2>/dev/null; then read -r _; exec sudo -n {sudo_inner}; "
                f"else exec sudo -S -p '' {sudo_inner}; fi")

    def run_script(self, script: str, on_line: Callable[[bytes], None] | None = None) -> Result:
        """One round trip: send `script`, return its exit status, stdout (bytes) and stderr."""
        conn = self._connection()
        payload = script.encode()
        if not self.host.is_root:
            payload = (self.password or "").encode() + b"\n" + payload
        self.counters.round_trips += 1
        try:
            chan = conn.client.get_transport().open_session(timeout=CONNECT_TIMEOUT)
            chan.exec_command(self.command())
            chan.sendall(payload)
            chan.shutdown_write()
            errbuf: list[bytes] = []
            reader = threading.Thread(target=lambda: errbuf.append(chan.makefile_stderr("rb").read()), daemon=True)
            reader.start()
            out = bytearray()
            stream = chan.makefile("rb")
            for line in iter(stream.readline, b""):
                out += line
                if on_line:
                    on_line(line)
            rc = chan.recv_exit_status()
            reader.join()
        except (OSError, EOFError) as exc:
            raise RemoteError(f"{self.host.name}: connection lost during a remote step ({exc})") from None
        except Exception as exc:
            from paramiko import SSHException

            if isinstance(exc, SSHException):
                raise RemoteError(f"{self.host.name}: connection lost during a remote step ({exc})") from None
            raise
        stderr = b"".join(errbuf).decode(errors="replace")
        if rc == -1:
            raise RemoteError(f"{self.host.name}: connection lost during a remote step (no exit status)")
        if not self.host.is_root and rc == 1 and not out and ("incorrect password" in stderr or "password is required" in stderr
                                                               or "no password was provided" in stderr):
            raise RemoteError(
                f"{self.host.name}: sudo refused: {stderr.strip().splitlines()[-1] if stderr.strip() else 'no password'}. "
                f"Set the sudo password of {self.host.user}@{self.host.name} in TINSNIP_NAS_SUDO_PASSWORD "
                f"(or TINSNIP_SUDO_PASSWORD_{self.host.name.upper()}) in the environment or in tinsnip.env"
            )
        return Result(rc, bytes(out), stderr)

    def put(self, local: str, remote: str) -> None:
        """Copy a local file to a private path on the host (sftp); the caller moves it into place as root."""
        conn = self._connection()
        self.counters.round_trips += 1
        try:
            conn.put(local, remote)
        except (OSError, EOFError) as exc:
            raise RemoteError(f"{self.host.name}: upload of {local} failed ({exc})") from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
