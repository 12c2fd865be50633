"""A machine-env's rootless daemon and the lab registry (issue 12): TLS with the inventory's CA, the
Docker Hub mirror, the private registry's login, and a real PostgreSQL from the lab's own image.

The images were built on this machine from Debian's packages (tinsnip.lab.images) and pushed by
lab.up; nothing here reaches outside the lab.
"""

from __future__ import annotations

import json

import pytest

from tinsnip.lab import images, registry

pytestmark = pytest.mark.lab

TARGET = ("--service", "gazette", "--env", "prod")
HOME = "/home/gazette-prod"
DOCKER_ENV = f"XDG_RUNTIME_DIR=/run/user/10100 DOCKER_HOST=unix:///run/user/10100/docker.sock HOME={HOME}"


def as_user(lab, command: str, input: str | None = None, timeout: float = 180):
    return lab.ssh("docker1", f"cd / && runuser -u gazette-prod -- env -i PATH=/usr/bin:/bin {DOCKER_ENV} {command}",
                   input=input, timeout=timeout)


@pytest.fixture(scope="module")
def machine(lab):
    lab.tin_checked("machine.create", *TARGET)
    return lab


def test_lab_up_filled_the_registry_with_the_built_images(lab):
    repos = set(registry.catalog(lab.dir, lab.id))
    for image in images.IMAGES:
        assert image.name.split(":")[0] in repos
        assert {h.split(":")[0] for h in image.hub} <= repos
    built = images.manifest()
    assert built and built["seconds"] > 0 and built["versions"]["postgres-15"]["postgresql-15"].startswith("15.")
    print(f"image build: {built['seconds']} s, layout {built['layout_bytes'] // 2**20} MiB; "
          f"lab.up timings {lab.up_info.get('timings')}")


def test_the_rootless_daemon_gets_the_mirror_and_the_ca_from_the_inventory(machine):
    lab = machine
    config = json.loads(lab.ssh("docker1", f"cat {HOME}/.config/docker/daemon.json").stdout)
    reg = registry.open_registry(lab.id)
    assert config["registry-mirrors"] == [f"https://{reg}"]
    ca = lab.ssh("docker1", f"cat {HOME}/.config/docker/certs.d/{reg}/ca.crt").stdout
    assert ca == (lab.dir / registry.CA_FILE).read_text()
    assert "https://" + reg in as_user(lab, "docker info --format '{{json .RegistryConfig.Mirrors}}'").stdout
    again = lab.tin_json("machine.create", *TARGET)
    assert again["totals"]["changed"] == 0


def test_a_docker_hub_name_resolves_through_the_mirror_and_postgres_runs(machine):
    lab = machine
    r = as_user(lab, "docker pull -q postgres:15")
    assert r.rc == 0, r.stderr
    r = as_user(lab, "docker run -d --name pg -e POSTGRES_PASSWORD=lab-pw -v pgdata:/var/lib/postgresql/data postgres:15")
    assert r.rc == 0, r.stderr
    ready = as_user(lab, "sh -c 'for i in $(seq 60); do docker exec pg pg_isready -q -h 127.0.0.1 && exit 0; sleep 0.5; done; exit 1'")
    assert ready.rc == 0, as_user(lab, "docker logs pg").stderr
    q = as_user(lab, "docker exec -e PGPASSWORD=lab-pw pg psql -h 127.0.0.1 -U postgres -Atc 'select 40+2'")
    assert q.stdout.strip() == "42", q.stderr
    bad = as_user(lab, "docker exec -e PGPASSWORD=wrong pg psql -h 127.0.0.1 -U postgres -Atc 'select 1'")
    assert bad.rc != 0 and "password authentication failed" in bad.stderr
    as_user(lab, "docker rm -f pg")


def test_without_the_ca_a_pull_fails_naming_the_certificate_and_machine_create_restores_it(machine):
    lab = machine
    reg = registry.open_registry(lab.id)
    lab.ssh("docker1", f"rm {HOME}/.config/docker/certs.d/{reg}/ca.crt")
    r = as_user(lab, f"docker pull -q {reg}/lab/redis:7")
    assert r.rc != 0 and "x509" in r.stderr, r.stderr
    status = lab.tin("machine.status", *TARGET)
    assert status.rc != 0 and f"CA of {reg} missing" in status.stdout, status.stdout
    lab.tin_checked("machine.create", *TARGET)
    r = as_user(lab, f"docker pull -q {reg}/lab/redis:7")
    assert r.rc == 0, r.stderr


def test_the_private_registry_refuses_an_anonymous_pull_and_serves_a_login(machine):
    lab = machine
    private = registry.private_registry(lab.id)
    r = as_user(lab, f"docker pull -q {private}/private/busybox:1")
    assert r.rc != 0 and ("no basic auth credentials" in r.stderr or "unauthorized" in r.stderr), r.stderr
    login = as_user(lab, f"docker login -u {lab.env[registry.USER_VAR]} --password-stdin {private}",
                    input=lab.env[registry.PASSWORD_VAR] + "\n")
    assert login.rc == 0, login.stderr
    r = as_user(lab, f"docker pull -q {private}/private/busybox:1")
    assert r.rc == 0, r.stderr
