"""Reliability and security promises, each proven on the lab's real hosts (issue 8).

docs/RELIABILITY.md lists each promise with the test here that proves it and what the lab cannot show.
The tests build on each other in file order (one lab for this module).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
VOL = "/volume1/dynamicalsystem"
GATES = "/var/lib/tinsnip/mounts"


def tin_json(lab, *args):
    r = lab.tin(*args, "--json")
    text = r.stdout
    return r.rc, (json.loads(text[text.index("{"):]) if "{" in text else {}), r.stderr


def popen_tin(lab, *args):
    return subprocess.Popen([sys.executable, "-m", "tinsnip", *args], cwd=REPO, env={**os.environ, **lab.env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def inventory_copy(lab, tmp_path, edit) -> Path:
    """A copy of the lab inventory with absolute paths, changed by `edit(dict)`."""
    import yaml

    data = yaml.safe_load(lab.inventory.read_text())
    data["ssh"] = {"key": str(lab.key), "known_hosts": str(lab.known_hosts)}
    for h in (data.get("docker_hosts") or {}).values():  # files the inventory names, beside it in the lab dir
        for r, ca in (h.get("registry_cas") or {}).items():
            h["registry_cas"][r] = str(lab.dir / ca)
    edit(data)
    p = tmp_path / "hosts.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def snapshot(lab) -> dict:
    """What a task could change on the hosts, as checksums."""
    files = "/etc/passwd /etc/group /etc/subuid /etc/subgid /etc/fstab /etc/exports"
    cmd = f"md5sum {files} 2>/dev/null; find /volume1 /mnt /home /var/lib/tinsnip -xdev 2>/dev/null | sort | md5sum; ls /var/lib/systemd/linger 2>/dev/null"
    return {name: lab.ssh(name, cmd).stdout for name in ("nas", "docker1", "docker2")}


# -- host keys -------------------------------------------------------------------------------------

def test_unknown_host_key_is_refused_with_how_to_trust_it(lab, tmp_path):
    (tmp_path / "empty_known_hosts").write_text("")

    def edit(d):
        d["ssh"]["known_hosts"] = str(tmp_path / "empty_known_hosts")

    inv = inventory_copy(lab, tmp_path, edit)
    r = lab.tin("machine.info", "--service=gazette", "--env=prod", f"--inventory={inv}", "--sheet=dynamicalsystem")
    assert r.rc == 1
    assert "host key unknown" in r.stderr and f"ssh-keyscan -p 22 {lab.addr['nas']}" in r.stderr


def test_changed_host_key_is_refused(lab, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = (tmp_path / "other.pub").read_text().split()[:2]
    (tmp_path / "kh").write_text(f"{lab.addr['nas']} {' '.join(other)}\n")

    def edit(d):
        d["ssh"]["known_hosts"] = str(tmp_path / "kh")

    inv = inventory_copy(lab, tmp_path, edit)
    r = lab.tin("machine.info", "--service=gazette", "--env=prod", f"--inventory={inv}")
    assert r.rc == 1 and "host key CHANGED" in r.stderr and "refusing to connect" in r.stderr


# -- faults ----------------------------------------------------------------------------------------

def test_nas_unreachable_changes_nothing_on_any_docker_host(lab, tmp_path):
    before = snapshot(lab)

    def edit(d):
        d["nas"]["port"] = 2  # nothing listens there: the NAS refuses every connection

    inv = inventory_copy(lab, tmp_path, edit)
    r = lab.tin("machine.create", "--service=gazette", "--env=prod", f"--inventory={inv}", "--yes")
    assert r.rc == 1
    assert "nas" in r.stderr and "unreachable" in r.stderr
    assert snapshot(lab) == before


def test_secrets_never_appear_in_process_lists_output_or_logs(lab):
    password = lab.sudo_password
    proc = popen_tin(lab, "machine.create", "--service=gazette", "--env=prod", "--yes", "--verbose")
    seen = []
    while proc.poll() is None:
        for host in ("nas", "docker1"):
            seen.append(lab.root(host, "ps -eo args").stdout)
        time.sleep(0.05)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert len(seen) > 4  # the process lists were really sampled while the task ran
    assert any("sh" in s for s in seen)
    for text in (*seen, out, err):
        assert password not in text
    rc, data, err = tin_json(lab, "machine.status", "--service=gazette", "--env=prod")
    assert password not in json.dumps(data) + err
    log = lab.root("nas", f"cat {VOL}/station/prod/data/changes.log").stdout
    assert log and password not in log
    grep = subprocess.run(["grep", "-rlF", "--exclude-dir=.git", "--exclude-dir=.lab*", password, str(REPO)],
                          capture_output=True, text=True)
    assert grep.stdout == ""  # only the lab's own tinsnip.env holds it, outside the repo's tracked files


def test_machine_env_is_0640_and_owned_by_the_service_user(lab):
    st = lab.root("nas", f"stat -c '%a %u:%g' {VOL}/gazette/prod/.machine/machine.env").stdout.split()
    assert st == ["640", "10100:10100"]


def test_connection_dropped_mid_apply_names_host_and_step_and_next_run_completes(lab):
    proc = popen_tin(lab, "machine.create", "--service=gazette", "--env=test", "--yes")
    killed = False
    for line in proc.stdout:
        if not killed and line.startswith("docker1:   ... ") and "rootless" in line:
            # drop tinsnip's SSH session to docker1 in the middle of its apply
            lab.ssh("docker1", "pkill -KILL -f 'sshd: root@notty' || true")
            killed = True
    proc.wait(timeout=120)
    err = proc.stderr.read()
    assert killed, "the apply never reached the rootless step"
    assert proc.returncode == 1
    assert "docker1" in err and "during step" in err, err
    leftovers = lab.ssh("docker1", "ls /etc | grep -c '\\.tinsnip\\.' || true").stdout.strip()
    assert leftovers == "0"  # atomic writes: no half-written file left behind
    r = lab.tin("machine.create", "--service=gazette", "--env=test", "--yes")
    assert r.rc == 0, r.stderr
    rc, data, _ = tin_json(lab, "machine.create", "--service=gazette", "--env=test", "--yes")
    assert rc == 0 and data["totals"]["changed"] == 0


# -- concurrency -----------------------------------------------------------------------------------

def test_two_creates_for_different_machine_envs_at_once_both_succeed(lab):
    a = popen_tin(lab, "machine.create", "--service=lldap", "--env=prod", "--yes")
    b = popen_tin(lab, "machine.create", "--service=homelab", "--env=test", "--host=docker1", "--yes")
    for p in (a, b):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert lab.ssh("docker2", "id -u lldap-prod").stdout.strip() == "10200"
    assert lab.ssh("docker1", "id -u homelab-test").stdout.strip() == "10410"


def test_two_creates_for_the_same_machine_env_at_once_never_duplicate(lab):
    procs = [popen_tin(lab, "machine.create", "--service=wiki", "--env=dev", "--host=docker2", "--yes") for _ in range(2)]
    codes = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        codes.append(p.returncode)
        assert p.returncode == 0 or "lock" in err or "changed" in err, err
    assert 0 in codes
    assert lab.ssh("docker2", f"grep -c ' {GATES}/wiki-dev/nas ' /etc/fstab").stdout.strip() == "1"
    assert lab.ssh("docker2", "grep -c '^wiki-dev:' /etc/subuid").stdout.strip() == "1"
    exports = lab.root("nas", "cat /etc/exports").stdout
    assert len(re.findall(r"^/volume1/dynamicalsystem/wiki/dev\s", exports, re.M)) == 1
    registry = lab.root("nas", f"cat {VOL}/station/prod/data/machines").stdout
    assert len(re.findall(r"^wiki=", registry, re.M)) == 1


# -- hostile input on the real hosts ----------------------------------------------------------------

HOSTILE = ["gazette;touch /tmp/pwned", "$(touch /tmp/pwned)", "`touch /tmp/pwned`", "a b", "Gazette",
           "../../etc", "/etc/passwd", "gazеtte", "x" * 33, "", "prod'", "a\nb"]


def test_hostile_input_runs_nothing_on_any_host(lab):
    before = snapshot(lab)
    calls = []
    for value in HOSTILE:
        calls += [("machine.create", f"--service={value}", "--env=prod"),
                  ("machine.create", "--service=gazette", f"--env={value}"),
                  ("nas.setup", f"--service={value}", "--env=prod"),
                  ("machine.remove", f"--service={value}", "--env=prod", "--delete-data"),
                  ("machine.create", "--service=gazette", "--env=prod", f"--sheet={value}")]
    calls += [("registry.add", "--service=newname", "--number=100"), ("registry.sheet-add", "--sheet=x", "--number=6")]
    for call in calls:
        r = lab.tin(*call, "--yes")
        assert r.rc == 2, (call, r.stderr)
    assert snapshot(lab) == before
    for host in ("nas", "docker1", "docker2"):
        assert lab.root(host, "ls /tmp/pwned 2>/dev/null; true").stdout == ""


# -- isolation and data ----------------------------------------------------------------------------

def test_exports_never_use_a_wildcard_or_no_root_squash(lab):
    exports = lab.root("nas", "cat /etc/exports").stdout
    managed = [line for line in exports.splitlines() if line.startswith("/volume1/dynamicalsystem/")]
    assert managed
    for line in managed:
        assert "*(" not in line and "no_root_squash" not in line and "all_squash" in line


def test_other_docker_host_cannot_mount_a_machine_env(lab):
    lab.ssh("docker2", "mkdir -p /tmp/probe")
    r = lab.ssh("docker2", "mount -t nfs4 nas:/volume1/dynamicalsystem/gazette/prod /tmp/probe")
    assert r.rc == 32 and "access denied" in r.stderr


def test_service_users_have_no_sudo_and_trees_are_private_on_the_nas(lab):
    r = lab.ssh("docker1", "sudo -l -U gazette-prod")
    assert "not allowed" in r.stdout + r.stderr
    assert lab.ssh("docker1", "id -nG gazette-prod").stdout.split() == ["gazette-prod"]
    for tree, owner in (("gazette/prod", "10100:10100"), ("gazette/test", "10110:10110")):
        st = lab.root("nas", f"stat -c '%a %u:%g' {VOL}/{tree}/data").stdout.split()
        assert st == ["750", owner]
    # on the NAS, another machine-env's uid cannot enter the tree
    r = lab.root("nas", f"setpriv --reuid=10110 --regid=10110 --clear-groups ls {VOL}/gazette/prod/data")
    assert r.rc != 0 and "Permission denied" in r.stderr


def test_one_machine_env_cannot_reach_anothers_mount_on_the_same_docker_host(lab):
    """all_squash makes every client uid the export's owner, so the gate (the machine user's, 0700) is what
    keeps gazette-test out of gazette-prod's mount on docker1; gazette-prod and root pass it."""
    for user in ("gazette-prod", "gazette-test"):
        assert lab.ssh("docker1", f"id -u {user}").rc == 0
    r = lab.ssh("docker1", "runuser -u gazette-test -- ls /mnt/gazette-prod/")
    assert r.rc != 0 and "Permission denied" in r.stderr
    r = lab.ssh("docker1", "runuser -u gazette-test -- sh -c 'echo x > /mnt/gazette-prod/data/intruder'")
    assert r.rc != 0 and "Permission denied" in r.stderr
    r = lab.ssh("docker1", f"runuser -u gazette-test -- ls {GATES}/gazette-prod/nas/data")
    assert r.rc != 0 and "Permission denied" in r.stderr
    assert lab.root("nas", f"test -e {VOL}/gazette/prod/data/intruder").rc != 0
    own = lab.ssh("docker1", "runuser -u gazette-prod -- sh -c 'echo mine > /mnt/gazette-prod/data/own && "
                             "ls /mnt/gazette-prod/ && cat /mnt/gazette-prod/data/own'")
    assert own.rc == 0 and "data" in own.stdout.split() and "mine" in own.stdout, own.stderr
    assert lab.ssh("docker1", "ls /mnt/gazette-prod/data/own && cat /mnt/gazette-test/.machine/machine.env").rc == 0
    # and the other way round
    r = lab.ssh("docker1", "runuser -u gazette-prod -- ls /mnt/gazette-test/")
    assert r.rc != 0 and "Permission denied" in r.stderr


AS_GAZETTE_TEST = ("runuser -u gazette-test -- env -i PATH=/usr/bin:/bin HOME=/home/gazette-test "
                   "XDG_RUNTIME_DIR=/run/user/10110 DOCKER_HOST=unix:///run/user/10110/docker.sock")


def test_old_layout_is_drift_and_machine_create_moves_it_behind_the_gate(lab):
    """A host from before the gate: gazette-test's export mounted on the directory /mnt/gazette-test, its
    fstab line naming that directory, its rootless daemon started so. status names it; one create
    converges it (and the daemon binds below /mnt/gazette-test again); the next changes nothing."""
    archive = (lab.dir / "images" / "busybox.tar").read_bytes()
    loaded = subprocess.run([*lab.ssh_argv("docker1", "root"), f"{AS_GAZETTE_TEST} docker load"], input=archive,
                            capture_output=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    old = lab.ssh("docker1", f"""set -e; g={GATES}/gazette-test
umount $g/nas; rm /mnt/gazette-test; rmdir $g/nas $g; mkdir /mnt/gazette-test
sed -i "s# $g/nas # /mnt/gazette-test #" /etc/fstab; mount /mnt/gazette-test
{AS_GAZETTE_TEST} systemctl --user restart docker.service
findmnt -n -o TARGET --mountpoint /mnt/gazette-test; grep -c ' /mnt/gazette-test ' /etc/fstab""")
    assert old.rc == 0 and old.stdout.split() == ["/mnt/gazette-test", "1"], old.stderr
    rc, data, _ = tin_json(lab, "machine.status", "--service=gazette", "--env=test")
    parts = {p["part"]: p for p in data["machine_envs"]["gazette-test"]["parts"]}
    assert rc == 1 and parts["gate"]["state"] == "drifted" and "old layout" in parts["gate"]["detail"]
    assert parts["/etc/fstab"]["state"] == "drifted" and "machine.create" in parts["gate"]["fix"]
    rc, data, err = tin_json(lab, "machine.create", "--service=gazette", "--env=test", "--yes")
    assert rc == 0, err
    changed = [s["desc"] for s in data["hosts"]["docker1"]["steps"] if s["status"] == "changed"]
    assert any("unmount /mnt/gazette-test" in d for d in changed) and any("link /mnt/gazette-test" in d for d in changed)
    state = lab.ssh("docker1", f"findmnt -rn -o TARGET | grep gazette-test; readlink /mnt/gazette-test; "
                               f"grep gazette-test /etc/fstab | cut -d' ' -f2; stat -c '%U %a' {GATES}/gazette-test")
    assert state.stdout.splitlines() == [f"{GATES}/gazette-test/nas", f"{GATES}/gazette-test/nas",
                                         f"{GATES}/gazette-test/nas", "gazette-test 700"]
    assert lab.ssh("docker1", "runuser -u gazette-test -- ls /mnt/gazette-test/data").rc == 0
    # the user's rootless daemon binds a volume below /mnt/gazette-test through the link, into the gate
    bind = lab.ssh("docker1", f"{AS_GAZETTE_TEST} docker run --rm -v /mnt/gazette-test/data:/d lab/busybox:1 "
                              "sh -c 'echo through > /d/through-the-link && cat /d/through-the-link'")
    assert bind.rc == 0 and bind.stdout.strip() == "through", bind.stderr
    assert lab.root("nas", f"stat -c %u:%g {VOL}/gazette/test/data/through-the-link").stdout.strip() == "10110:10110"
    r = lab.ssh("docker1", "runuser -u gazette-prod -- ls /mnt/gazette-test/")
    assert r.rc != 0 and "Permission denied" in r.stderr
    rc, data, _ = tin_json(lab, "machine.create", "--service=gazette", "--env=test", "--yes")
    assert rc == 0 and data["totals"]["changed"] == 0
    rc, data, _ = tin_json(lab, "machine.status", "--service=gazette", "--env=test")
    assert rc == 0 and data["machine_envs"]["gazette-test"]["ok"]


def test_delete_data_never_follows_a_symlink_out_of_the_tree(lab):
    assert lab.tin("machine.create", "--service=scratch", "--env=dev", "--host=docker1", "--yes").rc == 0
    made = lab.root("nas", f"mkdir -p /volume1/keepme && echo keep > /volume1/keepme/sentinel && "
                           f"ln -s /volume1/keepme {VOL}/scratch/dev/data/escape && "
                           f"ln -s / {VOL}/scratch/dev/data/root")
    assert made.rc == 0, made.stderr
    keep = lab.tin("machine.remove", "--service=scratch", "--env=dev", "--host=docker1", "--yes")
    assert keep.rc == 0, keep.stderr
    assert lab.root("nas", f"test -L {VOL}/scratch/dev/data/escape").rc == 0  # data kept without --delete-data
    r = lab.tin("machine.remove", "--service=scratch", "--env=dev", "--host=docker1", "--delete-data", "--yes")
    assert r.rc == 0, r.stderr
    assert lab.root("nas", f"test -e {VOL}/scratch/dev").rc != 0
    assert lab.root("nas", "cat /volume1/keepme/sentinel").stdout.strip() == "keep"
    assert lab.root("nas", "test -f /etc/passwd && test -d /volume1/dynamicalsystem/station").rc == 0


def test_change_log_records_who_what_and_which_task(lab):
    entries = [json.loads(line) for line in lab.root("nas", f"cat {VOL}/station/prod/data/changes.log").stdout.splitlines()]
    tasks = {(e["task"], e["host"]) for e in entries}
    assert ("machine.create", "nas") in tasks and ("machine.create", "docker1") in tasks
    assert all(e["who"] and e["time"] and e["changes"] for e in entries)


def test_after_a_restart_status_shows_what_came_back_and_what_did_not(lab):
    """A Docker host restart loses runtime state: mounts and user managers. The lab cannot reboot a host
    with its disks kept, so this takes that state away by hand, then does what boot does."""

    def parts():
        r = lab.tin("machine.status", "--service=gazette", "--env=prod", "--json")
        data = json.loads(r.stdout[r.stdout.index("{"):])
        return r.rc, {p["part"]: p["state"] for p in data["machine_envs"]["gazette-prod"]["parts"]}

    assert parts() == (0, dict.fromkeys(parts()[1], "ok"))
    lab.ssh("docker1", f"systemctl stop user@10100.service; umount {GATES}/gazette-prod/nas")
    rc, states = parts()
    assert rc == 1
    assert states["mount"] != "ok" and states["docker"] != "ok"
    assert states["user"] == states["/etc/fstab"] == states["gate"] == states["links"] == "ok"  # on disk: these came back
    # what boot does: fstab mounts, and lingering users get their manager (and rootless Docker) back
    assert lab.ssh("docker1", f"mount {GATES}/gazette-prod/nas && systemctl start user@10100.service").rc == 0
    for _ in range(50):
        rc, states = parts()
        if rc == 0:
            break
        time.sleep(0.2)
    assert rc == 0, states
