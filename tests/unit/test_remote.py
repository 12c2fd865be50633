"""The thin layer that talks to SSH, with paramiko's channel mocked (the lab suite proves it for real)."""

import io

import pytest

from tinsnip import remote
from tinsnip.errors import RemoteError
from tinsnip.inventory import Host, Inventory, Nas

PASSWORD = "correct horse battery"


class FakeChannel:
    def __init__(self, rc=0, out=b"", err=b""):
        self.rc, self.out, self.err = rc, out, err
        self.command = None
        self.sent = b""
        self.write_closed = False

    def exec_command(self, command):
        self.command = command

    def sendall(self, data):
        self.sent += data

    def shutdown_write(self):
        self.write_closed = True

    def makefile(self, mode):
        return io.BytesIO(self.out)

    def makefile_stderr(self, mode):
        return io.BytesIO(self.err)

    def recv_exit_status(self):
        return self.rc


def make_remote(mocker, host, channel):
    inv = Inventory(path=None, sheet="dynamicalsystem", nas=Nas("nas", "10.0.0.2", "admin", role="nas"),
                    docker_hosts={}, machines={})
    r = remote.Remote(host, inv, password=PASSWORD if not host.is_root else None)
    conn = mocker.MagicMock()
    conn.client.get_transport.return_value.open_session.return_value = channel
    r._conn = conn
    return r


def test_root_host_sends_the_script_on_stdin_and_counts_a_round_trip(mocker):
    ch = FakeChannel(out=b"hello\n")
    r = make_remote(mocker, Host("docker1", "10.0.0.3", "root"), ch)
    lines = []
    result = r.run_script("echo hello\n", on_line=lines.append)
    assert result.rc == 0 and result.stdout == b"hello\n" and lines == [b"hello\n"]
    assert ch.sent == b"echo hello\n" and ch.write_closed
    assert ch.command.startswith("/bin/sh -c") and "sudo" not in ch.command
    assert r.counters.round_trips == 1


def test_sudo_password_travels_on_stdin_never_in_the_command(mocker):
    ch = FakeChannel()
    r = make_remote(mocker, Nas("nas", "10.0.0.2", "admin", role="nas"), ch)
    r.run_script("id -u\n")
    assert PASSWORD not in ch.command
    assert "sudo -S -p ''" in ch.command and "sudo -n" in ch.command
    assert ch.sent == PASSWORD.encode() + b"\nid -u\n"


def test_refused_sudo_says_where_the_password_comes_from(mocker):
    ch = FakeChannel(rc=1, err=b"sudo: 3 incorrect password attempts\n")
    r = make_remote(mocker, Nas("nas", "10.0.0.2", "admin", role="nas"), ch)
    with pytest.raises(RemoteError, match="TINSNIP_NAS_SUDO_PASSWORD") as err:
        r.run_script("true\n")
    assert PASSWORD not in str(err.value)


def test_lost_connection_names_the_host(mocker):
    ch = FakeChannel()
    ch.sendall = mocker.Mock(side_effect=EOFError("closed"))
    r = make_remote(mocker, Host("docker2", "10.0.0.4", "root"), ch)
    with pytest.raises(RemoteError, match="docker2: connection lost"):
        r.run_script("true\n")


def test_connection_errors_say_what_to_do(mocker):
    from paramiko import SSHException

    r = make_remote(mocker, Host("docker1", "10.0.0.3", "root", port=2222), FakeChannel())
    assert "ssh-keyscan -p 2222 10.0.0.3" in r._explain(SSHException("Server '[10.0.0.3]:2222' not found in known_hosts"))
    assert "unreachable" in r._explain(ConnectionRefusedError(111, "Connection refused"))
