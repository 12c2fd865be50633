"""machine.* end to end on the lab's real hosts (issue 6). The tests run in order and build on each
other: a fresh create, the no-op, a second machine-env, drift and repair, remove and re-create."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.lab

VOL = "/volume1/dynamicalsystem"
GATES = "/var/lib/tinsnip/mounts"


def tin_json(lab, *args):
    r = lab.tin(*args, "--json")
    text = r.stdout
    data = json.loads(text[text.index("{"):])
    return r.rc, data


def rt(data):
    return {h: (v["connections"], v["round_trips"]) for h, v in data["hosts"].items()}


def as_user(lab, host, user, uid, cmd):
    env = f"HOME=/home/{user} XDG_RUNTIME_DIR=/run/user/{uid} DOCKER_HOST=unix:///run/user/{uid}/docker.sock"
    return lab.ssh(host, f"runuser -u {user} -- env -i PATH=/usr/local/bin:/usr/bin:/bin {env} sh -c '{cmd}'")


def test_dry_run_of_a_fresh_create_changes_nothing(lab):
    rc, data = tin_json(lab, "machine.create", "--service", "gazette", "--env", "prod", "--dry-run")
    assert rc == 0 and data["dry_run"] and data["totals"]["changed"] > 0
    assert lab.ssh("docker1", "id gazette-prod").rc != 0
    assert lab.ssh("docker1", "grep -c gazette /etc/fstab").stdout.strip() == "0"


def test_create_fresh(lab):
    rc, data = tin_json(lab, "machine.create", "--service", "gazette", "--env", "prod")
    assert rc == 0, data
    assert data["machine_envs"]["gazette-prod"]["uid"] == 10100
    c, trips = rt(data)["docker1"]
    assert c == 1 and trips <= 8
    assert rt(data)["nas"][0] == 1
    assert lab.ssh("docker1", "id -u gazette-prod; id -g gazette-prod").stdout.split() == ["10100", "10100"]
    assert lab.ssh("docker1", "passwd -S gazette-prod").stdout.split()[1] == "L"
    assert lab.ssh("docker1", "grep ^gazette-prod: /etc/subuid /etc/subgid").stdout.split() == [
        "/etc/subuid:gazette-prod:1006553600:65536", "/etc/subgid:gazette-prod:1006553600:65536"]


def test_rootless_docker_answers_with_machine_env_docker_host(lab):
    env = lab.root("nas", f"cat {VOL}/gazette/prod/.machine/machine.env").stdout
    values = dict(line.split("=", 1) for line in env.splitlines() if "=" in line and not line.startswith("#"))
    assert values["DOCKER_HOST"] == "unix:///run/user/10100/docker.sock"
    r = as_user(lab, "docker1", "gazette-prod", 10100,
                f"DOCKER_HOST={values['DOCKER_HOST']} docker info --format {{{{.SecurityOptions}}}}")
    assert r.rc == 0 and "rootless" in r.stdout, r.stderr
    pid = lab.ssh("docker1", "pgrep -u 10100 -x dockerd").stdout.split()[0]
    environ = lab.ssh("docker1", f"tr '\\0' '\\n' </proc/{pid}/environ").stdout
    assert "XDG_DATA_HOME" not in environ and "XDG_CONFIG_HOME" not in environ and "XDG_STATE_HOME" not in environ
    assert "--cidr=198.19." in environ
    bridge = as_user(lab, "docker1", "gazette-prod", 10100,
                     "docker network inspect bridge --format {{range.IPAM.Config}}{{.Subnet}}{{end}}").stdout
    assert bridge.startswith("198.19."), bridge


def test_mount_writes_land_as_the_uid_on_the_nas(lab):
    fstype = lab.ssh("docker1", f"findmnt -n -o FSTYPE --mountpoint {GATES}/gazette-prod/nas").stdout.strip()
    assert fstype in ("nfs", "nfs4", "fuse.nfs4")
    assert lab.ssh("docker1", "findmnt -n -o TARGET -T /mnt/gazette-prod").stdout.strip() == f"{GATES}/gazette-prod/nas"
    assert lab.ssh("docker1", f"grep -c ' {GATES}/gazette-prod/nas ' /etc/fstab").stdout.strip() == "1"
    assert lab.ssh("docker1", "grep -c ' /mnt/gazette-prod ' /etc/fstab").stdout.strip() == "0"
    gate = lab.ssh("docker1", f"readlink /mnt/gazette-prod; stat -c '%U:%G %a' {GATES} {GATES}/gazette-prod").stdout
    assert gate.splitlines() == [f"{GATES}/gazette-prod/nas", "root:root 755", "gazette-prod:gazette-prod 700"]
    r = as_user(lab, "docker1", "gazette-prod", 10100, "echo probe > /mnt/gazette-prod/data/probe")
    assert r.rc == 0, r.stderr
    assert lab.root("nas", f"stat -c %u:%g {VOL}/gazette/prod/data/probe").stdout.strip() == "10100:10100"


def test_xdg_links(lab):
    out = lab.ssh("docker1", "cd /home/gazette-prod && readlink .local/share/dynamicalsystem/@gazette "
                  ".config/dynamicalsystem/@gazette .local/state/dynamicalsystem/@gazette service; "
                  "stat -c %U service").stdout.split()
    assert out == ["/mnt/gazette-prod/data", "/mnt/gazette-prod/config", "/mnt/gazette-prod/state",
                   "/mnt/gazette-prod/service", "gazette-prod"]


def test_second_run_changes_nothing_in_one_round_trip(lab):
    rc, data = tin_json(lab, "machine.create", "--service", "gazette", "--env", "prod")
    assert rc == 0 and data["totals"]["changed"] == 0
    assert rt(data)["docker1"] == (1, 1) and rt(data)["nas"][0] == 1 and rt(data)["nas"][1] <= 2


def test_second_machine_env_and_a_new_name(lab):
    rc, data = tin_json(lab, "machine.create", "--service", "gazette", "--env", "test")
    assert rc == 0 and data["machine_envs"]["gazette-test"]["uid"] == 10110
    rc, data = tin_json(lab, "machine.create", "--service", "homelab", "--env", "test", "--host", "docker1")
    assert rc == 0 and data["machine_envs"]["homelab-test"]["uid"] == 10410
    rc, data = tin_json(lab, "machine.status")
    for name in ("gazette-prod", "gazette-test"):
        assert data["machine_envs"][name]["ok"], data["machine_envs"][name]
    for uid, user in ((10100, "gazette-prod"), (10110, "gazette-test")):
        r = as_user(lab, "docker1", user, uid, "docker info --format {{.Name}}")
        assert r.rc == 0, r.stderr


def test_drift_is_named_and_only_that_is_repaired(lab):
    lab.ssh("docker1", f"userdel -f gazette-test; sed -i '\\# {GATES}/gazette-prod/nas #d' /etc/fstab")
    lab.root("nas", f"sed -i '\\#^{VOL}/homelab/test #d' /etc/exports && exportfs -ra")
    rc, data = tin_json(lab, "machine.status", "--service", "gazette", "--env", "test")
    parts = {p["part"]: p for p in data["machine_envs"]["gazette-test"]["parts"]}
    assert rc == 1 and parts["user"]["state"] != "ok" and "machine.create" in parts["user"]["fix"]
    rc, data = tin_json(lab, "machine.status", "--service", "gazette", "--env", "prod")
    parts = {p["part"]: p for p in data["machine_envs"]["gazette-prod"]["parts"]}
    assert parts["/etc/fstab"]["state"] == "missing" and parts["user"]["state"] == "ok"
    rc, data = tin_json(lab, "machine.status", "--service", "homelab", "--env", "test", "--host", "docker1")
    parts = {p["part"]: p for p in data["machine_envs"]["homelab-test"]["parts"]}
    assert parts["nas"]["state"] == "drifted" and "export" in parts["nas"]["detail"]

    rc, data = tin_json(lab, "machine.create", "--service", "gazette", "--env", "prod")
    changed = [s["desc"] for s in data["hosts"]["docker1"]["steps"] if s["status"] == "changed"]
    assert rc == 0 and changed == [f"/etc/fstab: one line for {GATES}/gazette-prod/nas"]
    rc, data = tin_json(lab, "machine.create", "--service", "homelab", "--env", "test", "--host", "docker1")
    assert rc == 0 and data["hosts"]["docker1"]["changed"] == 0 and data["hosts"]["nas"]["changed"] >= 1
    rc, data = tin_json(lab, "machine.create", "--service", "gazette", "--env", "test")
    assert rc == 0 and lab.ssh("docker1", "id -u gazette-test").stdout.strip() == "10110"
    rc, data = tin_json(lab, "machine.status")
    assert all(v["ok"] for k, v in data["machine_envs"].items() if k in ("gazette-prod", "gazette-test")), data


def test_remove_keeps_data_then_delete_data(lab):
    rc, data = tin_json(lab, "machine.remove", "--service", "gazette", "--env", "test", "--dry-run")
    assert rc == 0 and lab.ssh("docker1", "id gazette-test").rc == 0
    rc, data = tin_json(lab, "machine.remove", "--service", "gazette", "--env", "test")
    assert rc == 0, data
    assert lab.ssh("docker1", "id gazette-test").rc != 0
    assert lab.ssh("docker1", "grep -c gazette-test /etc/fstab /etc/subuid; findmnt /mnt/gazette-test").stdout.count(":0") == 2
    left = lab.ssh("docker1", f"findmnt -rn -o TARGET | grep -c gazette-test; ls -A {GATES}; "
                              "test -e /mnt/gazette-test || test -L /mnt/gazette-test || echo gone").stdout.split()
    # its link, mount point and gate are gone; the others' gates stay
    assert left[0] == "0" and left[-1] == "gone" and "gazette-prod" in left and "gazette-test" not in left
    assert lab.root("nas", f"test -d {VOL}/gazette/test/data").rc == 0
    rc, data = tin_json(lab, "machine.remove", "--service", "gazette", "--env", "test")
    assert rc == 0 and data["totals"]["changed"] == 0

    rc, data = tin_json(lab, "machine.create", "--service", "gazette", "--env", "test")
    assert rc == 0 and lab.ssh("docker1", "id -u gazette-test").stdout.strip() == "10110"

    r = lab.tin("machine.remove", "--service", "gazette", "--env", "test", "--delete-data")
    assert r.rc == 2 and "--yes" in r.stderr
    rc, data = tin_json(lab, "machine.remove", "--service", "gazette", "--env", "test", "--delete-data", "--yes")
    assert rc == 0, data
    assert lab.root("nas", f"test -e {VOL}/gazette/test").rc != 0
    assert lab.root("nas", f"test -d {VOL}/gazette/prod/data").rc == 0


def test_apply_converges_the_inventory_then_is_a_no_op(lab):
    rc, data = tin_json(lab, "machine.apply")
    assert rc == 0, data
    # every machine-env of the inventory at once costs what one costs: at most twice one's round trips
    # (one machine-env: facts, apply, verify, and the change log on the NAS)
    assert all(c == 1 for c, _ in rt(data).values()), rt(data)
    assert rt(data)["nas"][1] <= 2 * 4 and all(t <= 2 * 3 for h, (_, t) in rt(data).items() if h != "nas"), rt(data)
    rc, data = tin_json(lab, "machine.apply")
    assert rc == 0 and data["totals"]["changed"] == 0
    assert all(v == (1, 1) for v in rt(data).values()), rt(data)
