"""Hostile input on every task's flags, and broken inventories: exit 2 with a message, and not one
connection opened (the SSH layer is rigged to fail the test if anything tries).

The lab suite checks the same on real hosts (their sshd logs stay quiet); this one runs every task and
every value in-process, in a few seconds.
"""

from __future__ import annotations

import re
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
NAME_FLAGS = {"service", "env", "sheet", "catalog_service", "host", "number", "tail", "dest"}
PER_FLAG_EXTRA = {"env": ["production", "PROD", "prod "], "number": ["100", "abc", "-3", "99999"]}


def tasks_with_flags():
    out = []
    for name in sorted(namespace.task_names):
        if name.startswith("lab."):
            continue  # lab tasks take no user input but the lab dir
        t = namespace[name]
        flags = [a.name for a in t.get_arguments() if a.kind is str]
        out.append((name, flags))
    return out


@pytest.fixture
def no_ssh(monkeypatch):
    calls = []

    def refuse(self):
        calls.append(self.host.name)
        raise AssertionError(f"a connection to {self.host.name} was opened")

    monkeypatch.setattr(remote.Remote, "_connection", refuse)
    return calls


@pytest.fixture
def inventory(tmp_path):
    p = tmp_path / "hosts.yaml"
    p.write_text("nas: {address: 127.0.0.1, port: 1, user: admin}\n"
                 "docker_hosts: {docker1: {address: 127.0.0.1, port: 1}}\n"
                 "machines: {gazette-prod: docker1}\n")
    return p


def run_task(argv):
    from tinsnip.cli import TinProgram

    program = TinProgram(namespace=namespace, binary="tin")
    with pytest.raises(SystemExit) as exit_info:
        program.run(["tin", *argv], exit=True)
    return exit_info.value.code


VALID = {"service": "gazette", "env": "prod", "sheet": "dynamicalsystem", "catalog_service": "gazette",
         "host": "docker1", "number": "7", "tail": "10", "dest": None}


def cases():
    for name, flags in tasks_with_flags():
        for flag in flags:
            if flag not in NAME_FLAGS:
                continue
            for value in HOSTILE + PER_FLAG_EXTRA.get(flag, []):
                yield name, flag, value


def valid_args(name, flags, skip):
    args = []
    for f in flags:
        if f == skip or f not in VALID or VALID[f] is None:
            continue
        if f == "number" or f == "tail":
            continue  # optional numbers stay unset unless under test
        args.append(f"--{f.replace('_', '-')}={VALID[f]}")
    return args


@pytest.mark.parametrize("name,flag,value", list(cases()))
def test_hostile_flag_value_exits_2_without_connecting(name, flag, value, no_ssh, inventory, capsys):
    flags = dict(tasks_with_flags())[name]
    if value == "" and next(a for a in namespace[name].get_arguments() if a.name == flag).default is not None:
        pytest.skip("an empty value means the flag's default")
    if flag == "tail" and re.fullmatch(r"\d+", value) and int(value) < 100000:
        pytest.skip("a valid --tail")
    if flag == "number" and re.fullmatch(r"\d{1,2}", value):
        pytest.skip("a valid --number")
    argv = [name, *valid_args(name, flags, flag), f"--{flag.replace('_', '-')}={value}", f"--inventory={inventory}"]
    if "dry_run" in {a.name for a in namespace[name].get_arguments()}:
        argv.append("--dry-run")
    code = run_task(argv)
    err = capsys.readouterr().err
    assert code == 2, f"{argv!r} → exit {code}: {err}"
    assert err.strip(), "an input error must say what is wrong"
    assert "Traceback" not in err
    assert no_ssh == []


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
def test_broken_inventory_exits_2_for_every_task(text, tmp_path, no_ssh, capsys):
    p = tmp_path / "hosts.yaml"
    p.write_text(text)
    for name, flags in tasks_with_flags():
        if name == "machine.info":
            argv = [name, "--service=gazette", "--env=prod", f"--inventory={p}"]  # online: needs the inventory
        else:
            keep_sheet = name == "registry.sheet-add"  # the one task whose --sheet is required
            argv = [name, *valid_args(name, flags, None if keep_sheet else "sheet"), f"--inventory={p}"]
        if "dry_run" in {a.name for a in namespace[name].get_arguments()}:
            argv.append("--dry-run")
        code = run_task(argv)
        err = capsys.readouterr().err
        assert code == 2, f"{name} with a broken inventory → exit {code}: {err}"
        assert "inventory" in err
    assert no_ssh == []
