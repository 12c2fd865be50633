"""Smoke tests of the lab itself: are the hosts what tinsnip expects to find on real ones?"""

from __future__ import annotations

import stat

import pytest

from tinsnip import inventory
from tinsnip import lab as labmod

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("name,user", [("nas", "admin"), ("docker1", "root"), ("docker2", "root")])
def test_host_answers_ssh_with_the_pinned_key(lab, name, user):
    r = lab.ssh(name, "hostname; id -un", user=user)
    assert r.rc == 0, r.stderr
    assert r.stdout.split() == [name, user]


def test_unknown_host_key_is_refused(lab, tmp_path):
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    r = lab.ssh("docker1", "true", known_hosts=empty)
    assert r.rc == 255 and "Host key verification failed" in r.stderr

    # The right address with another host's key: a changed key must stop the connection too.
    wrong = tmp_path / "known_hosts_wrong"
    nas_key = next(line for line in lab.known_hosts.read_text().splitlines() if line.startswith(lab.addr["nas"] + " "))
    wrong.write_text(nas_key.replace(lab.addr["nas"], lab.addr["docker1"], 1) + "\n")
    r = lab.ssh("docker1", "true", known_hosts=wrong)
    assert r.rc == 255 and "Host key verification failed" in r.stderr


def test_nas_refuses_root_login(lab):
    r = lab.ssh("nas", "true", user="root")
    assert r.rc == 255 and "Permission denied" in r.stderr


def test_nas_admin_needs_the_sudo_password(lab):
    r = lab.ssh("nas", "sudo -n true", user="admin")
    assert r.rc != 0 and "password is required" in r.stderr

    r = lab.ssh("nas", "sudo -S -p '' id -u", user="admin", input="not-the-password\n")
    assert r.rc != 0

    # The password travels on stdin only: no process on the NAS shows it in its arguments.
    r = lab.ssh("nas", "sudo -S -p '' sh -c 'id -u; ps -eo args'", user="admin", input=lab.sudo_password + "\n")
    assert r.rc == 0, r.stderr
    assert r.stdout.splitlines()[0] == "0"
    assert lab.sudo_password not in r.stdout


def test_sudo_password_lives_only_in_the_env_file(lab):
    env_file = lab.dir / labmod.ENV_FILE
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert f"{labmod.SUDO_PASSWORD_VAR}={lab.sudo_password}" in env_file.read_text()
    assert lab.sudo_password not in lab.inventory.read_text()


def test_docker_runs_a_container_on_docker1(lab):
    r = lab.ssh("docker1", "docker run --rm lab/busybox:1 sh -c 'echo hello from busybox'")
    assert r.rc == 0, r.stderr
    assert r.stdout.strip() == "hello from busybox"
    r = lab.ssh("docker1", "docker compose version")
    assert r.rc == 0 and r.stdout.startswith("Docker Compose version 2."), r.stdout + r.stderr


def test_image_is_on_both_docker_hosts_and_in_the_archive(lab):
    assert (lab.dir / labmod.IMAGE_ARCHIVE).stat().st_size > 1_000_000
    ids = {name: lab.ssh(name, "docker image inspect -f '{{.Id}}' lab/busybox:1") for name in ("docker1", "docker2")}
    assert all(r.rc == 0 for r in ids.values()), {n: r.stderr for n, r in ids.items()}
    assert ids["docker1"].stdout == ids["docker2"].stdout


def test_busybox_serves_a_page_across_the_lab(lab):
    start = ("mkdir -p /srv/www && echo lab-page > /srv/www/index.html && "
             "docker run -d --name smoke-httpd -p 8080:80 -v /srv/www:/var/www lab/busybox:1 httpd -f -p 80 -h /var/www")
    r = lab.ssh("docker1", start)
    assert r.rc == 0, r.stderr
    try:
        r = lab.ssh("docker2", "for i in $(seq 50); do busybox wget -q -O - http://docker1:8080/ && exit 0; "
                               "sleep 0.1; done; exit 1")
        assert r.rc == 0 and r.stdout.strip() == "lab-page", r.stderr
    finally:
        lab.ssh("docker1", "docker rm -f smoke-httpd")


def test_docker_addresses_stay_in_the_lab_range(lab):
    r = lab.ssh("docker1", "docker network create smoke-net >/dev/null && "
                           "docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' smoke-net; "
                           "docker network rm smoke-net >/dev/null; ip -4 route")
    assert r.rc == 0, r.stderr
    subnet, *routes = r.stdout.splitlines()
    assert subnet.startswith("198.19.")
    assert not any(line.startswith("default") for line in routes)
    assert all(line.split()[0].startswith(("198.18.", "198.19.")) for line in routes)


def test_nfs_export_mounts_on_docker1_only_with_all_squash(lab):
    uid = 10190
    setup = (f"mkdir -p /volume1/smoke/data && chown {uid}:{uid} /volume1/smoke/data && chmod 0750 /volume1/smoke/data "
             f"&& cp /etc/exports /etc/exports.smoke && printf '/volume1/smoke/data\\t{lab.addr['docker1']}"
             f"(rw,sync,no_subtree_check,all_squash,anonuid={uid},anongid={uid})\\n' >> /etc/exports && exportfs -ra")
    r = lab.ssh("nas", setup)
    assert r.rc == 0, r.stderr
    try:
        r = lab.ssh("docker1", "mkdir -p /mnt/smoke && mount -t nfs4 nas:/volume1/smoke/data /mnt/smoke && "
                               "mountpoint -q /mnt/smoke && findmnt -n -o FSTYPE /mnt/smoke")
        assert r.rc == 0, r.stderr
        assert r.stdout.strip() == "fuse.nfs4"
        # Any client uid acts as anonuid: a uid the NAS has never heard of (as a rootless container's
        # mapped uid would be) writes into the 0750 directory, and its file lands as anonuid.
        r = lab.ssh("docker1", "setpriv --reuid=1000000005 --regid=1000000005 --clear-groups "
                               "sh -c 'echo data > /mnt/smoke/by-mapped-uid && mkdir /mnt/smoke/sub' && "
                               "touch /mnt/smoke/by-root")
        assert r.rc == 0, r.stderr
        r = lab.ssh("nas", "stat -c '%n %u:%g' /volume1/smoke/data/by-mapped-uid /volume1/smoke/data/sub "
                           "/volume1/smoke/data/by-root")
        assert r.rc == 0, r.stderr
        assert [line.split()[1] for line in r.stdout.splitlines()] == [f"{uid}:{uid}"] * 3
        # Squashed root is no root: chown is refused, as on a real all_squash export.
        r = lab.ssh("docker1", "chown 0:0 /mnt/smoke/by-root")
        assert r.rc != 0

        r = lab.ssh("docker2", "mkdir -p /mnt/smoke && mount -t nfs4 nas:/volume1/smoke/data /mnt/smoke")
        assert r.rc == 32 and "access denied by server" in r.stderr
        r = lab.ssh("docker1", "mkdir -p /mnt/nope && mount -t nfs nas:/volume1/nope /mnt/nope")
        assert r.rc == 32 and "access denied by server" in r.stderr
    finally:
        lab.ssh("docker1", "umount /mnt/smoke")
        lab.ssh("nas", "mv /etc/exports.smoke /etc/exports && exportfs -ra && rm -rf /volume1/smoke")


def test_inventory_loads(lab):
    inv = inventory.load(lab.inventory)
    assert inv.nas.address == lab.addr["nas"] and inv.nas.user == "admin"
    assert {n: h.address for n, h in inv.docker_hosts.items()} == {n: lab.addr[n] for n in ("docker1", "docker2")}
    assert all(h.user == "root" for h in inv.docker_hosts.values())
    assert inv.known_hosts == lab.known_hosts and inv.ssh_key == lab.key
    assert len(lab.known_hosts.read_text().splitlines()) == 3


def test_up_again_is_a_noop_and_status_shows_all_up(lab):
    info = labmod.up(lab.dir, lab.id)
    assert info["already_up"] is True
    st = labmod.status(lab.dir, lab.id)
    assert st["up"] is True
    assert {n: h["state"] for n, h in st["hosts"].items()} == {"nas": "up", "docker1": "up", "docker2": "up"}
    assert all(h["ssh"] for h in st["hosts"].values())


def test_tin_cli_sees_the_lab(lab):
    import json

    r = lab.tin("lab.status", "--json")
    assert r.rc == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["up"] is True and st["lab_id"] == lab.id and st["lab_dir"] == str(lab.dir)
    assert st["registry"]["running"] is True and st["registry"]["ca"] == str(lab.dir / "registry-ca.crt")
