"""Hostile input on every task's flags, and broken inventories: exit 2 with a message that names the
flag, and not one connection opened (the SSH layer and the catalog's git clone are rigged to record
the attempt and fail).

Every task has a valid baseline (VALID) that does reach the connection layer, proven by
test_every_baseline_reaches_the_connection_layer: each hostile case changes one flag of that
baseline, so an exit 2 is that value's doing, and a check that stopped refusing it would fail.

The lab suite checks the same on real hosts (their sshd logs stay quiet); this one runs every task and
every value in-process, in a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tinsnip import remote
from tinsnip.tasks import namespace

ROOT = Path(__file__).resolve().parents[2]

HOSTILE = [
    "", " ", "gazette;id", "gazette && reboot", "$(id)", "${IFS}", "`id`", "'quoted'", '"dq"', "a b",
    "line\nbreak", "tab\there", "gazеtte",  # Cyrillic e
    "ｇａｚｅｔｔｅ", "..", "../../etc", "/etc/passwd", "-rf", "--yes", "UPPER", "Gazette", "a" * 33,
    "x" * 200, "dou--ble", "trail-", "-lead", "1abc", "a_b", "*", "?", "~root", "a|b", "a>b", "null\x00byte",
    "100", "-1", "65536", "6", "prod;id", "ünï",
]
NAME_FLAGS = {"service", "env", "sheet", "catalog_service", "host"}
# Numbers and paths have hostile values of their own: a valid name can be a valid path, "6" a valid number.
HOSTILE_FOR = {
    "env": HOSTILE + ["production", "PROD", "prod "],
    "number": ["", " ", "100", "abc", "-3", "99999", "7;id", "$(id)", "0x7", "7.0", "٧", "null\x00byte", "--yes"],
    "tail": ["", " ", "abc", "-3", "1000001", "10;id", "$(id)", "1e3", "null\x00byte", "--yes"],
    "timeout": ["", " ", "0", "3601", "abc", "-3", "10;id", "$(id)", "1e3", "null\x00byte", "--yes"],
    "url": ["", " ", "-rf", "--upload-pack=touch /tmp/pwned", "line\nbreak", "null\x00byte"],
    "dest": ["", " ", "-rf", "--yes", "line\nbreak", "null\x00byte", "{file}", "{clone_of_other}"],
    "registry": ["", " ", "a b", "$(id)", "reg;id", "line\nbreak", "null\x00byte", "--yes", "-rf"],
    "username": ["", " ", "a b", "a:b", "line\nbreak", "null\x00byte", "--yes"],
    "name": ["", " ", "a b", "$(id)", "X;id", "line\nbreak", "null\x00byte", "--yes", "../X", "X=Y"],
    "inventory": ["", " ", "/nonexistent/hosts.yaml", "{dir}", "-rf", "line\nbreak", "null\x00byte"],
}
for _flag in NAME_FLAGS:
    HOSTILE_FOR.setdefault(_flag, HOSTILE)

# A valid value of every flag: each task run with these alone reaches the connection layer (the
# baseline test proves it), so a hostile value exiting 2 without connecting is that value's doing.
VALID = {"service": "almanac", "env": "prod", "sheet": "dynamicalsystem", "catalog_service": "almanac",
         "host": "docker1", "number": "7", "tail": "10", "timeout": "30", "url": "https://example.org/catalog.git",
         "dest": "{new_dest}", "inventory": "{inventory}", "registry": "registry.example.org:5000",
         "username": "bot", "name": "API_KEY"}
VALID_FOR = {("registry.sheet-add", "number"): "2", ("registry.sheet-add", "sheet"): "newsheet"}
# What a refusal must name, per flag (the flag itself, or the word the message uses for it).
NAMES = {"service": ("--service", "machine", "service"), "env": ("--env", "env"), "sheet": ("--sheet", "sheet"),
         "catalog_service": ("--catalog-service", "catalog service"), "host": ("--host", "host"),
         "number": ("--number", "number"), "tail": ("--tail",), "timeout": ("--timeout",), "url": ("--url", "url"),
         "dest": ("--dest",), "inventory": ("inventory",), "registry": ("--registry", "registry"),
         "username": ("--username", "username"), "name": ("--name", "name", "secret")}


LOCAL_TASKS = {"service.catalog": "almanac"}  # task → what its valid baseline prints


def tasks_with_flags():
    out = []
    for name in sorted(namespace.task_names):
        if name.startswith("lab."):
            continue  # lab tasks take no user input but the lab dir
        t = namespace[name]
        flags = [a.name for a in t.get_arguments() if a.kind is str]
        out.append((name, flags))
    return out


class Reached(Exception):
    pass


@pytest.fixture
def no_ssh(monkeypatch):
    """The connection layer, rigged: SSH (and the catalog's git clone) record the attempt and fail."""
    from tinsnip import catalog
    from tinsnip.errors import RemoteError

    calls = []

    def refuse(self):
        calls.append(self.host.name)
        raise RemoteError(f"{self.host.name}: rigged connection layer (test)")

    def no_git(url, dest):
        calls.append(f"git:{url}")
        raise RemoteError("rigged git (test)")

    monkeypatch.setattr(remote.Remote, "_connection", refuse)
    monkeypatch.setattr(catalog, "install", no_git)
    return calls


@pytest.fixture
def places(tmp_path, monkeypatch):
    """The files a flag's value may point at: an inventory, a new dest, a file, a clone of another URL."""
    import subprocess

    inv = tmp_path / "hosts.yaml"
    inv.write_text("nas: {address: 127.0.0.1, port: 1, user: admin}\n"
                   "docker_hosts: {docker1: {address: 127.0.0.1, port: 1}}\n"
                   "machines: {almanac-prod: docker1, gazette-prod: docker1}\n")
    (tmp_path / "file").write_text("x")
    other = tmp_path / "other"
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    subprocess.run(["git", "-C", str(other), "remote", "add", "origin", "https://example.org/other.git"], check=True)
    monkeypatch.setenv("SERVICE_PATH", str(ROOT / "service"))
    monkeypatch.setenv("TINSNIP_SECRET_API_KEY", "test-value")  # secret-set and login read no stdin then
    monkeypatch.setenv("TINSNIP_REGISTRY_PASSWORD", "test-value")
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("test-value"))
    return {"inventory": str(inv), "new_dest": str(tmp_path / "new-catalog"), "file": str(tmp_path / "file"),
            "clone_of_other": str(other), "dir": str(tmp_path)}


def run_task(argv):
    from tinsnip.cli import TinProgram

    program = TinProgram(namespace=namespace, binary="tin")
    try:
        program.run(["tin", *argv], exit=True)
    except SystemExit as exc:
        return exc.code
    return 0


def argv_for(name, flags, places, override=None):
    """The task's valid baseline, with `override` = (flag, value) replacing one flag's value."""
    values = {f: VALID_FOR.get((name, f), VALID[f]) for f in flags}
    if override:
        values[override[0]] = override[1]
    argv = [name] + [f"--{f.replace('_', '-')}={places.get(v[1:-1], v) if v[:1] + v[-1:] == '{}' else v}"
                     for f, v in values.items()]
    if "dry_run" in {a.name for a in namespace[name].get_arguments()} and name != "service.catalog-install":
        argv.append("--dry-run")  # a dry run gathers facts for real: it connects
    return argv


def cases():
    for name, flags in tasks_with_flags():
        for flag in flags:
            for value in HOSTILE_FOR[flag]:
                yield name, flag, value


@pytest.mark.parametrize("name,flags", tasks_with_flags())
def test_every_baseline_reaches_the_connection_layer(name, flags, no_ssh, places, capsys):
    code = run_task(argv_for(name, flags, places))
    out, err = capsys.readouterr()
    if name in LOCAL_TASKS:  # reads the local catalog only: its baseline succeeds
        assert code == 0 and no_ssh == [] and LOCAL_TASKS[name] in out, (code, out, err)
        return
    assert no_ssh, f"{name} with valid flags never reached the connection layer (exit {code}): {err}"
    assert code == 1 and "rigged" in out + err, (out, err)


@pytest.mark.parametrize("name,flag,value", list(cases()))
def test_hostile_flag_value_exits_2_without_connecting(name, flag, value, no_ssh, places, capsys):
    argv = argv_for(name, dict(tasks_with_flags())[name], places, (flag, value))
    code = run_task(argv)
    err = capsys.readouterr().err
    assert code == 2, f"{argv!r} → exit {code}: {err}"
    assert "Traceback" not in err
    assert no_ssh == [], f"{argv!r} reached the connection layer"
    names = (*NAMES[flag], f"<Argument: {flag}>")  # invoke's own refusal of a flag-like value names the flag so
    assert any(n in err for n in names), f"{argv!r}: the refusal does not name {flag}: {err}"


BROKEN_INVENTORIES = [
    "nas: [unclosed\n",
    "just text\n",
    "nas: {address: 10.0.0.2}\ndocker_hosts: {docker1: {address: 10.0.0.3}}\n",  # no nas.user
    "nas: {address: 10.0.0.2, user: admin, password: x}\ndocker_hosts: {docker1: {address: 10.0.0.3}}\n",
    "nas: {address: 10.0.0.2, user: admin}\ndocker_hosts: {docker1: {address: '10.0.0.3; id'}}\n",
    "nas: {address: 10.0.0.2, user: admin}\ndocker_hosts: {docker1: {address: 10.0.0.3}}\nmachines: {gazette-prod: nowhere}\n",
    "nas: {address: 10.0.0.2, user: admin, volume: '/volume1/../etc'}\ndocker_hosts: {docker1: {address: 10.0.0.3}}\n",
    "sheet: 'Bad Sheet'\nnas: {address: 10.0.0.2, user: admin}\ndocker_hosts: {docker1: {address: 10.0.0.3}}\n",
]


@pytest.mark.parametrize("text", BROKEN_INVENTORIES)
def test_broken_inventory_exits_2_for_every_task(text, tmp_path, no_ssh, places, capsys):
    p = tmp_path / "hosts.yaml"
    p.write_text(text)
    for name, flags in tasks_with_flags():
        if name == "machine.info":
            argv = [name, "--service=gazette", "--env=prod", f"--inventory={p}"]  # online: needs the inventory
        else:
            argv = [a for a in argv_for(name, flags, places) if not a.startswith(("--inventory", "--sheet"))]
            if name == "registry.sheet-add":  # the one task whose --sheet is required
                argv.append("--sheet=newsheet")
            argv.append(f"--inventory={p}")
        code = run_task(argv)
        err = capsys.readouterr().err
        assert code == 2, f"{name} with a broken inventory → exit {code}: {err}"
        assert "inventory" in err
    assert no_ssh == []
