"""At boot, a machine-env's storage comes before its services (issue 15), on the lab's real systemd.

What a boot does for one machine-env is replayed on docker1: its user manager stopped and its mount
gone (as after a power cut), then the manager started the way logind starts it for a lingering user.
The manager must wait for tinsnip-storage@{name}.service, which mounts the NAS export, and the
service's container (restart: unless-stopped) must come back by itself, with no tinsnip command run.
With the export withdrawn on the NAS (a NAS that is down when the Docker host boots), the services
wait, and start once it is back.
"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.lab

TARGET = ("--service", "gazette", "--env", "prod")
GATE_MOUNT = "/var/lib/tinsnip/mounts/gazette-prod/nas"
TREE = "/volume1/dynamicalsystem/gazette/prod"
DOCKER_ENV = "XDG_RUNTIME_DIR=/run/user/10100 DOCKER_HOST=unix:///run/user/10100/docker.sock HOME=/home/gazette-prod"


def docker_ps(lab) -> str:
    return lab.ssh("docker1", f"cd / && runuser -u gazette-prod -- env -i PATH=/usr/bin:/bin {DOCKER_ENV} "
                              "docker ps --format '{{.Names}} {{.Status}}'").stdout


def wait_for(what, probe, timeout=90.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if probe():
            return time.monotonic() - t0
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def power_cut(lab):
    """What a power cut leaves of this machine-env on docker1: no user manager, no daemon, no mount."""
    r = lab.ssh("docker1", f"systemctl stop user@10100.service; umount {GATE_MOUNT} 2>/dev/null; "
                           "systemctl reset-failed 'tinsnip-storage@gazette-prod.service' 2>/dev/null; "
                           f"systemctl stop 'tinsnip-storage@gazette-prod.service'; mountpoint -q {GATE_MOUNT} && echo mounted || echo gone")
    assert r.stdout.split()[-1] == "gone", r.stdout + r.stderr
    assert lab.ssh("docker1", "pgrep -u 10100 -x dockerd").rc != 0


@pytest.fixture(scope="module")
def deployed(lab):
    lab.tin_checked("machine.create", *TARGET)
    lab.tin_checked("service.deploy", *TARGET)
    assert " Up " in f" {docker_ps(lab)} ", docker_ps(lab)
    return lab


def test_the_user_manager_is_ordered_after_the_machine_envs_storage(deployed):
    lab = deployed
    after = lab.ssh("docker1", "systemctl show -p After -p Wants user@10100.service").stdout
    assert "tinsnip-storage@gazette-prod.service" in after
    status = lab.tin_json("machine.status", *TARGET)
    text = str(status)
    assert "starts after tinsnip-storage@gazette-prod.service" in text


def test_after_a_power_cut_the_mount_comes_first_and_the_service_comes_back_by_itself(deployed):
    lab = deployed
    power_cut(lab)
    t0 = time.monotonic()
    lab.ssh("docker1", "systemctl start --no-block user@10100.service")
    wait_for("gazette running again", lambda: " Up " in f" {docker_ps(lab)} ")
    took = time.monotonic() - t0
    # the mount was there before the manager: the storage unit finished before user@ started
    times = lab.ssh("docker1", "systemctl show -p ExecMainExitTimestampMonotonic --value tinsnip-storage@gazette-prod.service;"
                               " systemctl show -p ActiveEnterTimestampMonotonic --value user@10100.service").stdout.split()
    assert 0 < int(times[0]) <= int(times[1]), times
    assert lab.ssh("docker1", f"mountpoint -q {GATE_MOUNT}").rc == 0
    port = lab.root("nas", f"grep -h TIN_PORT_0 {TREE}/service/gazette/.env").stdout.strip().split("=")[1]
    page = lab.ssh("docker1", f"wget -qO- http://127.0.0.1:{port}/").stdout
    assert "gazette" in page.lower(), page
    print(f"manager start to gazette up: {took:.1f} s")
    assert lab.tin("machine.status", *TARGET).rc == 0


def test_a_nas_that_is_down_at_boot_is_waited_for_and_services_start_when_it_returns(deployed):
    lab = deployed
    power_cut(lab)
    client = lab.addr["docker1"]
    lab.root("nas", f"exportfs -u {client}:{TREE}")  # the NAS does not serve this export now
    lab.ssh("docker1", "systemctl start --no-block user@10100.service")
    time.sleep(8)
    assert lab.ssh("docker1", f"mountpoint -q {GATE_MOUNT}").rc != 0
    state = lab.ssh("docker1", "systemctl is-active user@10100.service tinsnip-storage@gazette-prod.service").stdout.split()
    assert state[0] in ("inactive", "activating") and state[1] == "activating", state
    assert lab.ssh("docker1", "pgrep -u 10100 -x dockerd").rc != 0  # nothing runs on the host's own disk
    assert lab.ssh("docker1", "systemctl is-system-running").stdout.strip() != "offline"  # the host is up
    status = lab.tin("machine.status", *TARGET)
    assert status.rc != 0 and "not mounted" in status.stdout, status.stdout
    lab.root("nas", "exportfs -ra")  # the NAS is back
    took = wait_for("gazette running after the NAS came back", lambda: " Up " in f" {docker_ps(lab)} ")
    print(f"NAS back to gazette up: {took:.1f} s")
    assert lab.tin("machine.status", *TARGET).rc == 0
