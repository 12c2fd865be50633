"""What the lab models beyond plain hosts: its registry (TLS, the Docker Hub mirror, a private
registry with a login), the NAS's Btrfs volume, loop devices and shared mounts on the Docker hosts,
reboots that keep a host's disk and rebuilt hosts that come back empty with a new host key."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tinsnip import lab as labmod
from tinsnip.lab import registry as reg

pytestmark = pytest.mark.lab


def _catalog(url: str, ctx: ssl.SSLContext) -> dict:
    with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
        return json.load(r)


def test_registry_answers_over_tls_with_the_lab_ca_only(lab):
    url = f"https://{reg.open_registry(lab.id)}/v2/_catalog"
    with_ca = ssl.create_default_context(cafile=str(lab.dir / reg.CA_FILE))
    repos = _catalog(url, with_ca)["repositories"]
    assert {"lab/busybox", "library/busybox"} <= set(repos)
    assert "private/busybox" not in repos  # only on the private registry
    with pytest.raises(urllib.error.URLError) as err:
        _catalog(url, ssl.create_default_context())
    assert isinstance(err.value.reason, ssl.SSLCertVerificationError)

    # docker1's rootful daemon trusts it through /etc/docker/certs.d/HOST:PORT/ca.crt, read live.
    image = f"{reg.open_registry(lab.id)}/lab/busybox:1"
    r = lab.ssh("docker1", f"docker pull -q {image} && docker run --rm {image} echo pulled-over-tls")
    assert r.rc == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "pulled-over-tls"
    certs = f"/etc/docker/certs.d/{reg.open_registry(lab.id)}"
    r = lab.ssh("docker1", f"mv {certs} {certs}.off; docker rmi -f {image} >/dev/null; docker pull {image}; "
                           f"rc=$?; mv {certs}.off {certs}; exit $rc")
    assert r.rc != 0 and "x509: certificate signed by unknown authority" in r.stderr, r.stderr


def test_a_docker_hub_name_resolves_through_the_mirror(lab):
    r = lab.ssh("docker1", "docker info --format '{{json .RegistryConfig.Mirrors}}'")
    assert r.rc == 0 and json.loads(r.stdout) == [f"https://{reg.open_registry(lab.id)}/"], r.stdout + r.stderr
    r = lab.ssh("docker1", "docker rmi -f busybox >/dev/null 2>&1; docker pull -q busybox && "
                           "docker run --rm busybox echo from-the-mirror && "
                           "docker image inspect -f '{{index .RepoDigests 0}}' busybox")
    assert r.rc == 0, r.stderr
    assert r.stdout.splitlines()[-2] == "from-the-mirror"
    assert r.stdout.splitlines()[-1].startswith("busybox@sha256:")
    # A name the mirror does not hold goes nowhere, and says so at once (no DNS stall, no way out).
    t0 = time.monotonic()
    r = lab.ssh("docker1", "docker pull tinsnip-lab/not-in-the-mirror:1")
    assert r.rc != 0 and time.monotonic() - t0 < 8, r.stderr


def test_the_private_registry_needs_the_login(lab):
    user, password = lab.env[reg.USER_VAR], lab.env[reg.PASSWORD_VAR]
    assert password and password not in lab.inventory.read_text()
    image = f"{reg.private_registry(lab.id)}/{labmod.PRIVATE_IMAGE}"
    r = lab.ssh("docker1", f"docker pull {image}")
    assert r.rc != 0 and "no basic auth credentials" in r.stderr, r.stderr
    r = lab.ssh("docker1", f"docker login -u {user} --password-stdin {reg.private_registry(lab.id)} && "
                           f"docker pull -q {image}; rc=$?; docker logout {reg.private_registry(lab.id)}; exit $rc",
                input=password + "\n")
    assert r.rc == 0, r.stderr
    assert password not in r.stdout + r.stderr
    r = lab.ssh("docker1", f"echo wrong | docker login -u {user} --password-stdin {reg.private_registry(lab.id)}")
    assert r.rc != 0 and "unauthorized" in r.stderr.lower(), r.stderr


def test_the_nas_volume_is_btrfs_with_real_snapshots(lab):
    r = lab.ssh("nas", "findmnt -n -o FSTYPE /volume1")
    assert r.rc == 0 and r.stdout.strip() == "btrfs", r.stdout + r.stderr
    r = lab.ssh("nas", "cd /volume1 && btrfs subvolume create smoke-sv >/dev/null && echo v1 > smoke-sv/f && "
                       "mkdir -p -m 700 .snapshots && btrfs subvolume snapshot -r smoke-sv .snapshots/smoke-sv-T1 "
                       ">/dev/null && echo v2 > smoke-sv/f && btrfs subvolume list /volume1")
    assert r.rc == 0, r.stderr
    paths = [line.split()[-1] for line in r.stdout.splitlines()]
    assert "smoke-sv" in paths and ".snapshots/smoke-sv-T1" in paths
    r = lab.ssh("nas", "cat /volume1/.snapshots/smoke-sv-T1/f; touch /volume1/.snapshots/smoke-sv-T1/g")
    assert r.stdout.strip() == "v1" and "Read-only file system" in r.stderr
    # The Docker hosts' NFS stand-in sees the same filesystem, live.
    r = lab.ssh("docker1", "cat /.lab/nas-volume1/smoke-sv/f /.lab/nas-volume1/.snapshots/smoke-sv-T1/f")
    assert r.rc == 0 and r.stdout.split() == ["v2", "v1"], r.stderr
    # One loop device backs it (a lab.up before this one left none behind).
    r = subprocess.run(["losetup", "-n", "-O", "NAME", "-j", str(lab.layout.volume_image)], capture_output=True,
                       text=True)
    assert len(r.stdout.split()) == 1, r.stdout


def test_docker_hosts_have_loop_devices_and_a_shared_root(lab):
    r = lab.ssh("docker1", "findmnt -n -o PROPAGATION /; truncate -s 64M /root/disk.img && "
                           "mkfs.ext4 -q -F /root/disk.img && L=$(losetup -f --show /root/disk.img) && "
                           "mkdir -p /mnt/disk && mount $L /mnt/disk && findmnt -n -o FSTYPE /mnt/disk && "
                           "umount /mnt/disk && losetup -d $L && rm /root/disk.img")
    assert r.rc == 0, r.stderr
    assert r.stdout.split() == ["shared", "ext4"]


def test_a_rebooted_docker_host_comes_back_with_its_disk(lab):
    before = lab.ssh("docker1", "echo kept > /etc/tinsnip-reboot-marker && useradd -m rebooter && "
                                "loginctl enable-linger rebooter && touch /run/gone /tmp/gone && "
                                "mkdir -p /mnt/gone && mount -t tmpfs gone /mnt/gone && "
                                "mkdir -p /srv/www && echo page > /srv/www/index.html && "
                                "docker run -d --restart=always --stop-timeout 1 --name rebooted -v /srv/www:/var/www lab/busybox:1 "
                                "httpd -f -p 80 -h /var/www >/dev/null && cat /proc/1/stat | cut -d' ' -f22")
    assert before.rc == 0, before.stderr
    r = lab.tin("lab.reboot", "--host=docker1", "--json")
    assert r.rc == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["host"] == "docker1" and info["disk"] == "kept" and info["timings"]["total"] < 30, info
    after = lab.ssh("docker1", "cat /etc/tinsnip-reboot-marker; id -un rebooter; "
                               "systemctl is-active user@$(id -u rebooter).service; "
                               "ls /run/gone /tmp/gone 2>&1 | wc -l; mountpoint -q /mnt/gone || echo not-mounted; "
                               "docker inspect -f '{{.State.Running}}' rebooted; cat /proc/1/stat | cut -d' ' -f22")
    assert after.rc == 0, after.stderr
    marker, user, manager, missing, mounted, running, started = after.stdout.split()
    assert (marker, user, manager) == ("kept", "rebooter", "active")  # /etc, users and linger stay
    assert (missing, mounted) == ("2", "not-mounted")  # /run, /tmp and mounts do not
    assert running == "true"  # /var/lib/docker stays: the restart policy brings the container back
    assert started != before.stdout.split()[-1]  # a new PID 1: the host really booted again
    lab.ssh("docker1", "docker rm -f rebooted; userdel -r rebooter")


def test_a_rebooted_nas_rebuilds_its_export_table_from_etc_exports(lab):
    c = lab.addr["docker1"]
    r = lab.ssh("nas", f"mkdir -p /volume1/rb/a /volume1/rb/b && echo data > /volume1/rb/a/f && "
                       f"cp /etc/exports /etc/exports.rb && "
                       f"printf '/volume1/rb/a\\t{c}(rw,sync,no_subtree_check,all_squash)\\n' >> /etc/exports && "
                       f"exportfs -o rw,sync,no_subtree_check {c}:/volume1/rb/b && cut -f1 /var/lib/nfs/etab")
    assert r.rc == 0, r.stderr
    assert r.stdout.split() == ["/volume1/rb/b"]  # /etc/exports not applied yet, b only in the table
    try:
        r = lab.tin("lab.reboot", "--host=nas", "--json")
        assert r.rc == 0, r.stderr
        r = lab.ssh("nas", "cut -f1 /var/lib/nfs/etab; cat /volume1/rb/a/f")
        assert r.stdout.split() == ["/volume1/rb/a", "data"], r.stdout + r.stderr
        # The admin still logs in, with the same host key and sudo password.
        r = lab.ssh("nas", "sudo -S -p '' true", user="admin", input=lab.sudo_password + "\n")
        assert r.rc == 0, r.stderr
    finally:
        lab.ssh("nas", "mv /etc/exports.rb /etc/exports && exportfs -ra && rm -rf /volume1/rb")


def test_a_rebuilt_host_comes_back_empty_with_a_new_key_tinsnip_refuses_until_trusted(lab):
    r = lab.ssh("docker2", "useradd -m tinsnip-was-here && docker pull -q busybox >/dev/null && "
                           "touch /var/lib/docker/tinsnip-was-here && "
                           "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub")
    assert r.rc == 0, r.stderr
    old_key = r.stdout.split()[1]
    r = lab.tin("lab.rebuild", "--host=nas")
    assert r.rc == 2 and "holds the lab's data" in r.stderr
    r = lab.tin("lab.rebuild", "--host=docker2", "--json")
    assert r.rc == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["old_fingerprint"] == old_key and info["new_fingerprint"] != old_key and not info["trusted"]

    r = lab.ssh("docker2", "true")
    assert r.rc == 255 and "Host key verification failed" in r.stderr
    r = lab.tin("doctor", "--host=docker2", "--inventory", str(lab.inventory))
    assert "host key CHANGED" in r.stdout + r.stderr, r.stdout + r.stderr

    r = lab.tin("lab.trust", "--host=docker2", "--json")
    assert r.rc == 0 and json.loads(r.stdout)["fingerprint"] == info["new_fingerprint"], r.stderr
    r = lab.ssh("docker2", "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub; id tinsnip-was-here 2>&1; "
                           "docker images -q | wc -l; ls /var/lib/docker/tinsnip-was-here 2>/dev/null | wc -l")
    assert r.rc == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[1] == info["new_fingerprint"]
    assert "no such user" in lines[1]
    assert lines[2:] == ["0", "0"]  # an empty /var/lib/docker
    r = lab.tin("doctor", "--host=docker2", "--inventory", str(lab.inventory))
    assert "host key verified" in r.stdout and "CHANGED" not in r.stdout + r.stderr, r.stdout + r.stderr


def test_the_inventory_names_the_registry_once_tinsnip_knows_it(lab):
    from tinsnip import inventory

    inv = inventory.load(lab.inventory)
    docker1, docker2 = inv.docker_hosts["docker1"], inv.docker_hosts["docker2"]
    assert dict(docker2.images) == {labmod.IMAGE: lab.dir / labmod.IMAGE_ARCHIVE}  # the archive path stays
    if not hasattr(docker1, "registry_mirrors"):
        pytest.skip("this tinsnip's inventory has no registry_mirrors yet: the lab leaves the keys out")
    assert docker1.registry_mirrors == (f"https://{reg.open_registry(lab.id)}",)
    assert {r for r, _ in docker1.registry_cas} == {reg.open_registry(lab.id), reg.private_registry(lab.id)}
    assert not docker1.images  # docker1's machine-envs pull lab/busybox:1 through the mirror
