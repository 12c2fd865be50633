"""The Docker-host planner on plain facts: fresh host, converged host, drift, shared files, removal."""

import base64

import pytest

from tinsnip.errors import TinsnipError
from tinsnip.inventory import DockerHost
from tinsnip.plans import boot
from tinsnip.plans import machine as pm
from tinsnip.smep import MachineEnv
from tinsnip.steps import Noop, Run, Upload

HOST = DockerHost(name="docker1", address="198.18.3.20", user="root", nfs_client="198.18.3.20",
                  address_pools=(("198.19.104.0/21", 24),))
NAS = "198.18.3.10"
GP = MachineEnv("dynamicalsystem", 1, "gazette", 1, "prod")
GT = MachineEnv("dynamicalsystem", 1, "gazette", 1, "test")


def b64(text):
    return base64.b64encode(text.encode()).decode()


def fresh_facts(*mes):
    facts = {"passwd": {"root": {"uid": 0, "gid": 0, "home": "/root", "shell": "/bin/bash"}},
             "group": {"root": {"gid": 0, "members": []}},
             "subuid": "tadmin:100000:65536\n", "subgid": "tadmin:100000:65536\n",
             "fstab": "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n", "mounts": {"/": {"fstype": "overlay", "source": "x"}}}
    for m in mes:
        facts[f"me:{m.name}"] = {"pwstatus": "", "groups": "", "home": "", "linger": "0", "manager": "inactive",
                                 "bus": "0", "mnt": "A", "gate": "", "mntdir": "0", "link0": "A", "link1": "A", "link2": "A", "link3": "A",
                                 "unit": "0", "daemon_json": None, "dropin": None}
    return facts


def done_facts(*mes):
    facts = fresh_facts(*mes)
    facts["subuid"] = facts["subgid"] = "tadmin:100000:65536\n" + "".join(pm.subid_line(m) + "\n" for m in mes)
    facts["fstab"] += "".join(pm.fstab_line(m, NAS) + "\n" for m in mes)
    facts["gates"] = "0:0:755"
    facts["boot:unit"] = boot.storage_unit()
    for m in mes:
        facts[f"boot:{m.name}"] = boot.manager_dropin(m)
        facts["passwd"][m.user] = {"uid": m.uid, "gid": m.gid, "home": m.home, "shell": "/bin/bash"}
        facts["group"][m.user] = {"gid": m.gid, "members": []}
        facts["mounts"][m.mount_point] = {"fstype": "fuse.nfs4", "source": "/.lab/nfs"}
        mf = facts[f"me:{m.name}"]
        mf.update(pwstatus="L", groups=m.user, home=f"{m.uid}:{m.gid}", linger="1", manager="active", bus="1",
                  mnt=f"L:{m.mount_point}", gate=f"{m.uid}:{m.gid}:700", mntdir="1", unit="1", daemon_json=pm.daemon_json(HOST), dropin=pm.dropin(HOST), active="active",
                  enabled="enabled", info="20.10.24 name=seccomp,profile=default,name=rootless,",
                  bridge="198.19.104.0/24 ", dockerd="42", dockerd_xdg="")
        for i, (_link, target) in enumerate(pm.links(m)):
            mf[f"link{i}"] = f"L:{target}"
    return facts


def kinds(plan):
    return [s.desc for s in plan.steps if not isinstance(s, Noop)]


def test_fresh_host_plans_every_part_in_order():
    plan = pm.plan_host(HOST, [GP], NAS, fresh_facts(GP))
    descs = kinds(plan)
    order = ["/etc/subuid", "/etc/subgid", "group gazette-prod", "user gazette-prod", "/etc/fstab",
             "/var/lib/tinsnip/mounts: root-owned", "gate /var/lib/tinsnip/mounts/gazette-prod",
             "link /mnt/gazette-prod → /var/lib/tinsnip/mounts/gazette-prod/nas", "mount point",
             "mount /var/lib/tinsnip/mounts/gazette-prod/nas", "linger", "user manager", "rootless daemon address pools", "drop-in", "install",
             "wait until", "link ~/service"]
    positions = [next(i for i, d in enumerate(descs) if key in d) for key in order]
    assert positions == sorted(positions), descs
    useradd = next(s for s in plan.steps if isinstance(s, Run) and s.argv[0] == "useradd")
    assert useradd.argv == ("useradd", "-u", "10100", "-g", "10100", "-d", "/home/gazette-prod", "-s", "/bin/bash",
                            "-m", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", "gazette-prod")
    subuid = plan.steps[0]
    assert isinstance(subuid, Upload) and subuid.content == "tadmin:100000:65536\ngazette-prod:1006553600:65536\n"
    assert subuid.expect == pm.sha256("tadmin:100000:65536\n")
    setup = next(s for s in plan.steps if isinstance(s, Run) and s.argv[0] == pm.SETUPTOOL)
    env = dict(setup.env)
    assert setup.as_user == "gazette-prod" and env["XDG_RUNTIME_DIR"] == "/run/user/10100"
    assert env["DBUS_SESSION_BUS_ADDRESS"] == "unix:path=/run/user/10100/bus"
    assert not set(env) & set(pm.XDG_VARS)


def test_converged_host_plans_only_noops():
    plan = pm.plan_host(HOST, [GP, GT], NAS, done_facts(GP, GT))
    assert plan.converged, kinds(plan)
    assert all(p["state"] == "ok" for parts in plan.data["parts"].values() for p in parts)


def test_two_machine_envs_share_one_write_of_each_shared_file():
    plan = pm.plan_host(HOST, [GP, GT], NAS, fresh_facts(GP, GT))
    uploads = [s.path for s in plan.steps if isinstance(s, Upload) and s.path.startswith("/etc/")
               and not s.path.startswith(boot.UNIT_DIR)]
    assert uploads == ["/etc/subuid", "/etc/subgid", "/etc/fstab"]
    units = [s.path for s in plan.steps if isinstance(s, Upload) and s.path == boot.storage_unit_path()]
    assert len(units) == 1  # the storage template: one write for the host
    fstab = next(s for s in plan.steps if isinstance(s, Upload) and s.path == "/etc/fstab")
    assert fstab.content.count(" /var/lib/tinsnip/mounts/gazette-prod/nas ") == 1
    assert fstab.content.count(" /var/lib/tinsnip/mounts/gazette-test/nas ") == 1 and "/mnt/" not in fstab.content
    gates = [s for s in plan.steps if isinstance(s, Run) and pm.GATES in s.argv]
    assert len(gates) == 1  # the gates' parent: one step for the host
    assert fstab.content.startswith("# UNCONFIGURED FSTAB FOR BASE SYSTEM\n")


def test_fstab_duplicates_collapse_and_foreign_lines_stay():
    facts = done_facts(GP)
    line = pm.fstab_line(GP, NAS)
    facts["fstab"] = f"# keep me\n{line}\nUUID=x /data ext4 defaults 0 2\n{line}\n"
    plan = pm.plan_host(HOST, [GP], NAS, facts)
    [fstab] = [s for s in plan.steps if isinstance(s, Upload)]
    assert fstab.content == f"# keep me\n{line}\nUUID=x /data ext4 defaults 0 2\n"


def test_missing_fstab_line_repairs_only_that():
    facts = done_facts(GP)
    facts["fstab"] = "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n"
    plan = pm.plan_host(HOST, [GP], NAS, facts)
    assert kinds(plan) == ["/etc/fstab: one line for /var/lib/tinsnip/mounts/gazette-prod/nas"]


def test_subid_overlap_with_someone_else_is_an_error_naming_it():
    facts = fresh_facts(GP)
    facts["subuid"] = "alice:1006500000:100000\n"
    with pytest.raises(TinsnipError, match="alice:1006500000:100000"):
        pm.plan_host(HOST, [GP], NAS, facts)


def test_own_auto_allocated_subids_are_replaced():
    facts = done_facts(GP)
    facts["subuid"] = "tadmin:100000:65536\ngazette-prod:165536:65536\n"
    plan = pm.plan_host(HOST, [GP], NAS, facts)
    [step] = [s for s in plan.steps if not isinstance(s, Noop)]
    assert step.path == "/etc/subuid"
    assert step.content == "tadmin:100000:65536\ngazette-prod:1006553600:65536\n"


def test_uid_held_by_another_user_is_refused():
    facts = fresh_facts(GP)
    facts["passwd"]["intruder"] = {"uid": 10100, "gid": 100, "home": "/home/x", "shell": "/bin/sh"}
    with pytest.raises(TinsnipError, match="intruder"):
        pm.plan_host(HOST, [GP], NAS, facts)


def test_user_deleted_by_hand_keeps_home_and_restarts_docker():
    facts = done_facts(GP)
    del facts["passwd"][GP.user], facts["group"][GP.user]
    mf = facts[f"me:{GP.name}"]
    for key in ("active", "enabled", "info", "bridge"):
        del mf[key]
    facts["subuid"] = facts["subgid"] = "tadmin:100000:65536\n"
    plan = pm.plan_host(HOST, [GP], NAS, facts)
    useradd = next(s for s in plan.steps if isinstance(s, Run) and s.argv[0] == "useradd")
    assert "-M" in useradd.argv
    assert any("enable" in s.argv and "--now" in s.argv for s in plan.steps if isinstance(s, Run))


def test_daemon_inheriting_xdg_paths_on_the_mount_is_restarted():
    facts = done_facts(GP)
    facts[f"me:{GP.name}"]["dockerd_xdg"] = "XDG_DATA_HOME=/mnt/gazette-prod/data "
    plan = pm.plan_host(HOST, [GP], NAS, facts)
    assert [s.argv[-2:] for s in plan.steps if isinstance(s, Run)][0] == ("restart", "docker.service")


def test_bridge_outside_the_pools_is_drift():
    facts = done_facts(GP)
    facts[f"me:{GP.name}"]["bridge"] = "172.17.0.0/16 "
    part = next(p for p in pm.assess_host(HOST, [GP], NAS, facts).parts[GP.name] if p.name == "docker")
    assert part.state == pm.DRIFTED and "172.17.0.0/16" in part.detail


def test_slirp_network_stays_in_the_pool():
    assert pm.slirp_cidr((("198.19.104.0/21", 24),)) == "198.19.111.0/24"
    assert pm.slirp_cidr(()) is None
    assert "--cidr=198.19.111.0/24" in pm.dropin(HOST)
    assert "UnsetEnvironment=XDG_DATA_HOME XDG_CONFIG_HOME XDG_STATE_HOME" in pm.dropin(HOST)


def test_links_point_into_the_mount():
    assert pm.links(GP) == [
        ("/home/gazette-prod/.local/share/dynamicalsystem/@gazette", "/mnt/gazette-prod/data"),
        ("/home/gazette-prod/.config/dynamicalsystem/@gazette", "/mnt/gazette-prod/config"),
        ("/home/gazette-prod/.local/state/dynamicalsystem/@gazette", "/mnt/gazette-prod/state"),
        ("/home/gazette-prod/service", "/mnt/gazette-prod/service"),
    ]


def test_fact_command_quotes_and_parses():
    cmd = pm.machine_fact_command(GP)
    assert "u=gazette-prod; uid=10100" in cmd
    assert "XDG_DATA_HOME" not in cmd  # the probes run as the user never get the NFS-backed XDG paths
    parsed = pm.parse_machine(0, f"linger=1\ndaemon_json={b64('{}')}\ndropin=-\n")
    assert parsed["linger"] == "1" and parsed["daemon_json"] == "{}" and parsed["dropin"] is None
    mounts = pm.parse_mounts(0, "/ overlay x\n/mnt/a\\x20b fuse.nfs4 /src\n")
    assert mounts["/mnt/a b"]["fstype"] == "fuse.nfs4"


def test_remove_plans_everything_then_nothing():
    plan = pm.plan_remove(HOST, GP, NAS, done_facts(GP))
    argv0 = [s.argv[0] if isinstance(s, Run) else s.path for s in plan.steps]
    sweep = next(i for i, s in enumerate(plan.steps) if "no processes" in s.desc)
    assert argv0.index("umount") < sweep  # the NFS helper may run as the squashed uid
    assert argv0.index("umount") < argv0.index("userdel")
    assert argv0.index("/etc/subuid") < argv0.index("userdel")
    fstab = next(s for s in plan.steps if isinstance(s, Upload) and s.path == "/etc/fstab")
    assert "/mnt/gazette-prod" not in fstab.content and "gazette-prod/nas" not in fstab.content
    rm = [s.argv for s in plan.steps if isinstance(s, Run) and s.argv[0] in ("rm", "rmdir")]
    assert rm == [("rm", "-f", "/mnt/gazette-prod"), ("rmdir", "/var/lib/tinsnip/mounts/gazette-prod/nas"),
                  ("rmdir", "/var/lib/tinsnip/mounts/gazette-prod"),
                  ("rm", "-f", "/etc/systemd/system/user@10100.service.d/tinsnip-storage.conf")]  # never rm -r, never NAS data
    assert [s.argv for s in plan.steps if isinstance(s, Run) and s.argv[0] == "umount"] == [
        ("umount", "/var/lib/tinsnip/mounts/gazette-prod/nas")]
    gone = fresh_facts(GP)
    gone[f"me:{GP.name}"]["home"] = ""
    assert pm.plan_remove(HOST, GP, NAS, gone).converged


def old_layout_facts(m):
    """A host from before the gate: the export mounted on the directory /mnt/{name} itself."""
    facts = done_facts(m)
    old = f"{NAS}:{m.nas_path} {m.mount} nfs4 {pm.FSTAB_OPTIONS} 0 0"
    facts["fstab"] = f"# UNCONFIGURED FSTAB FOR BASE SYSTEM\n{old}\nUUID=x /data ext4 defaults 0 2\n"
    facts["mounts"] = {"/": {"fstype": "overlay", "source": "x"}, m.mount: {"fstype": "fuse.nfs4", "source": "y"}}
    del facts["gates"]
    facts[f"me:{m.name}"].update(mnt="D", gate="", mntdir="0")
    return facts


def test_the_mount_point_is_behind_the_gate_and_mnt_links_to_it():
    assert GP.mount == "/mnt/gazette-prod"
    assert GP.gate == "/var/lib/tinsnip/mounts/gazette-prod"
    assert GP.mount_point == "/var/lib/tinsnip/mounts/gazette-prod/nas"
    assert pm.fstab_line(GP, NAS) == (f"{NAS}:/volume1/dynamicalsystem/gazette/prod "
                                      f"/var/lib/tinsnip/mounts/gazette-prod/nas nfs4 {pm.FSTAB_OPTIONS} 0 0")
    plan = pm.plan_host(HOST, [GP], NAS, fresh_facts(GP))
    runs = [s.argv for s in plan.steps if isinstance(s, Run)]
    assert ("install", "-d", "-m", "0700", "-o", "10100", "-g", "10100", GP.gate) in runs
    assert ("ln", "-sfnT", GP.mount_point, GP.mount) in runs


def test_old_layout_is_drift_and_converges_to_the_gate():
    facts = old_layout_facts(GP)
    a = pm.assess_host(HOST, [GP], NAS, facts)
    parts = {p.name: p for p in a.parts[GP.name]}
    assert parts["/etc/fstab"].state == pm.DRIFTED and "old layout" in parts["/etc/fstab"].detail
    assert parts["gate"].state == pm.DRIFTED and "old layout" in parts["gate"].detail
    assert parts["mount"].state == pm.MISSING
    plan = pm.plan_host(HOST, [GP], NAS, facts)
    descs = kinds(plan)
    order = ["/etc/fstab", "/var/lib/tinsnip/mounts: root-owned", "gate /var/lib", "unmount /mnt/gazette-prod",
             "remove the empty directory /mnt/gazette-prod", "link /mnt/gazette-prod", "mount point",
             "mount /var/lib/tinsnip/mounts/gazette-prod/nas"]
    positions = [next(i for i, d in enumerate(descs) if key in d) for key in order]
    assert positions == sorted(positions), descs
    fstab = next(s for s in plan.steps if isinstance(s, Upload))
    assert fstab.content == ("# UNCONFIGURED FSTAB FOR BASE SYSTEM\n" + pm.fstab_line(GP, NAS) + "\n"
                             "UUID=x /data ext4 defaults 0 2\n")  # replaced in place, one line
    assert not any(isinstance(s, Run) and s.argv[0] == "rm" for s in plan.steps)  # rmdir only
    # the running rootless daemon restarts after the move, so that its namespace sees the new mount
    restart = next(i for i, s in enumerate(plan.steps) if isinstance(s, Run) and s.argv[-2:] == ("restart", "docker.service"))
    assert restart > next(i for i, s in enumerate(plan.steps) if isinstance(s, Run) and s.argv[0] == "mount")


def test_a_gate_open_to_others_is_drift_and_closed_again():
    facts = done_facts(GP)
    facts[f"me:{GP.name}"]["gate"] = "0:0:755"
    plan = pm.plan_host(HOST, [GP], NAS, facts)
    assert [s.argv for s in plan.steps if isinstance(s, Run)] == [
        ("chown", "10100:10100", GP.gate), ("chmod", "0700", GP.gate)]


def test_remove_undoes_the_old_layout_too():
    plan = pm.plan_remove(HOST, GP, NAS, old_layout_facts(GP))
    runs = [s.argv for s in plan.steps if isinstance(s, Run)]
    assert ("umount", "/mnt/gazette-prod") in runs and ("rmdir", "/mnt/gazette-prod") in runs
    fstab = next(s for s in plan.steps if isinstance(s, Upload) and s.path == "/etc/fstab")
    assert "gazette" not in fstab.content and "UUID=x /data" in fstab.content


def test_a_foreign_mount_on_mnt_is_named_never_unmounted():
    facts = old_layout_facts(GP)
    facts["mounts"][GP.mount] = {"fstype": "ext4", "source": "/dev/sdb1"}
    plan = pm.plan_host(HOST, [GP], NAS, facts)
    assert not any(isinstance(s, Run) and s.argv[0] in ("umount", "rmdir", "ln") and GP.mount in s.argv
                   for s in plan.steps)
    gate = next(p for p in plan.data["parts"][GP.name] if p["part"] == "gate")
    assert "ext4 mount, not NFS: unmount it by hand" in gate["detail"]


def test_user_managers_start_only_after_their_storage_at_boot():
    plan = pm.plan_host(HOST, [GP, GT], NAS, fresh_facts(GP, GT))
    uploads = {s.path: s for s in plan.steps if isinstance(s, Upload)}
    unit = uploads[boot.storage_unit_path()].content
    assert "until mountpoint -q /var/lib/tinsnip/mounts/%i/nas; do mount /var/lib/tinsnip/mounts/%i/nas" in unit
    assert "TimeoutStartSec=infinity" in unit and "Type=oneshot" in unit
    for m in (GP, GT):
        dropin = uploads[f"/etc/systemd/system/user@{m.uid}.service.d/tinsnip-storage.conf"].content
        assert f"After=tinsnip-storage@{m.name}.service" in dropin and f"Wants=tinsnip-storage@{m.name}.service" in dropin
    reloads = [i for i, s in enumerate(plan.steps) if isinstance(s, Run) and s.argv == ("systemctl", "daemon-reload")]
    last_dropin = max(i for i, s in enumerate(plan.steps) if isinstance(s, Upload) and s.path.startswith(boot.UNIT_DIR))
    assert len(reloads) == 1 and reloads[0] > last_dropin


def test_a_changed_boot_dropin_is_drift_and_rewritten_alone():
    facts = done_facts(GP)
    facts["boot:gazette-prod"] = "[Unit]\n"
    plan = pm.plan_host(HOST, [GP], NAS, facts)
    changed = [s for s in plan.steps if not isinstance(s, Noop)]
    assert [getattr(s, "path", None) or s.argv for s in changed] == [
        ("mkdir", "-p", "/etc/systemd/system/user@10100.service.d"),
        "/etc/systemd/system/user@10100.service.d/tinsnip-storage.conf", ("systemctl", "daemon-reload")]
    part = next(p for p in plan.data["parts"]["gazette-prod"] if p["part"] == "boot")
    assert part["state"] == "drifted"


def test_remove_takes_the_boot_dropin_away():
    plan = pm.plan_remove(HOST, GP, NAS, done_facts(GP))
    rms = [s.argv for s in plan.steps if isinstance(s, Run) and s.argv[:2] == ("rm", "-f")]
    assert ("rm", "-f", "/etc/systemd/system/user@10100.service.d/tinsnip-storage.conf") in rms
