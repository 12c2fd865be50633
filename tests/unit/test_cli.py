"""The task tree as people use it: `tin`/`inv` lists, help on every task, bad input exits 2 offline."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tin(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tinsnip", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, env=env)


def task_names():
    out = tin("--list").stdout
    return re.findall(r"^  (\S+)", out, re.M)


def test_inv_and_tin_show_the_same_tree():
    inv = subprocess.run([sys.executable, "-c", "from invoke.main import program; program.run()", "--list"],
                         capture_output=True, text=True, cwd=ROOT)
    assert inv.returncode == 0
    assert re.findall(r"^  (\S+)", inv.stdout, re.M) == task_names()


def test_every_task_has_a_docstring_and_help_for_every_flag():
    names = task_names()
    assert "machine.info" in names
    for name in names:
        out = tin(name, "--help").stdout
        assert "Docstring:\n  none" not in out, name
        options = out.split("Options:", 1)[1] if "Options:" in out else ""
        for line in options.splitlines():
            if line.strip().startswith("--"):
                assert re.search(r"--\S+\s{2,}\S", line), f"{name}: flag without help: {line}"


def test_machine_info_offline_json():
    r = tin("machine.info", "--service=gazette", "--env=test", "--offline", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["uid"] == 10110 and data["ports"] == list(range(10110, 10120))
    assert data["source"] == "offline" and any("hash rule" in n for n in data["notes"])


BAD = [
    (["--service=gazette;id", "--env=prod"], "lowercase letters"),
    (["--service=$(id)", "--env=prod"], "lowercase letters"),
    (["--service=gazette", "--env=production"], "unknown environment"),
    (["--service=gazette", "--env=prod", "--number=100"], "0 to 99"),
    (["--service=gazette", "--env=prod", "--sheet=Bad"], "lowercase letters"),
    (["--service=" + "a" * 33, "--env=prod"], "at most 32"),
    (["--service=homelab", "--env=prod"], "not reserved"),
    (["--env=prod"], "--service is required"),
]


@pytest.mark.parametrize("args,message", BAD)
def test_bad_input_exits_2_with_the_rule_before_any_connection(tmp_path, args, message):
    # an inventory whose hosts would refuse a connection: reaching one would show as exit 1, not 2
    inv = tmp_path / "hosts.yaml"
    inv.write_text("nas: {address: 127.0.0.1, port: 1, user: admin}\ndocker_hosts: {d1: {address: 127.0.0.1, port: 1}}\n")
    r = tin("machine.info", *args, "--offline", f"--inventory={inv}")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr
