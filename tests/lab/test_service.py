"""service.* on the lab: catalog services deployed onto gazette-prod under its own rootless Docker, with
their data on the NAS, ports from the machine's ten, and redeploys that change nothing.

The tests run in file order and build on each other (one deploy is slow enough on two shared cores).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
VOL = "/volume1/dynamicalsystem"
MNT = "/mnt/gazette-prod"
TARGET = ("--service", "gazette", "--env", "prod")
DOCKER_ENV = "XDG_RUNTIME_DIR=/run/user/10100 DOCKER_HOST=unix:///run/user/10100/docker.sock HOME=/home/gazette-prod"

BEACON = """services:
  light:
    image: lab/busybox:1
    user: "${TIN_SERVICE_UID}:${TIN_SERVICE_UID}"
    env_file:
      - ../../.machine/machine.env
      - .env
    command: ["sh", "-c", "echo beacon > /beam/index.html; httpd -f -p $$TIN_PORT_0 -h /beam & trap 'kill $$!; exit 0' TERM; wait"]
    ports:
      - "${TIN_PORT_0}:${TIN_PORT_0}"
    volumes:
      - beam:/beam
volumes:
  beam:
"""


def tin_json(lab, *args):
    r = lab.tin(*args, "--json")
    try:
        return r.rc, json.loads(r.stdout)
    except ValueError:
        raise AssertionError(f"tin {' '.join(args)} → exit {r.rc}, no JSON:\n{r.stdout}\n{r.stderr}") from None


def as_user(lab, command: str):
    return lab.ssh("docker1", f"cd / && runuser -u gazette-prod -- env -i PATH=/usr/bin:/bin {DOCKER_ENV} {command}")


def ports_file(lab) -> str:
    return lab.ssh("docker1", f"cat {MNT}/.machine/ports").stdout


@pytest.fixture(scope="module")
def machine(lab):
    r = lab.tin("machine.create", *TARGET)
    assert r.rc == 0, r.stdout + r.stderr
    return lab


@pytest.fixture
def catalog_with(tmp_path, monkeypatch):
    """A catalog of the repo's services plus extra ones, used through $SERVICE_PATH."""

    def make(**extra: str) -> Path:
        root = tmp_path / "catalog"
        shutil.copytree(REPO / "service", root)
        for name, compose in extra.items():
            (root / name).mkdir()
            (root / name / "docker-compose.yml").write_text(compose)
        monkeypatch.setenv("SERVICE_PATH", str(root))
        return root

    return make


def test_dry_run_changes_nothing(machine):
    lab = machine
    rc, data = tin_json(lab, "service.deploy", *TARGET, "--dry-run")
    assert rc == 0, data
    assert data["dry_run"] is True and data["totals"]["changed"] >= 8
    assert lab.ssh("docker1", f"test -e {MNT}/service/gazette").rc != 0
    assert as_user(lab, "docker ps -aq").stdout.strip() == ""


def test_deploy_gazette(machine):
    lab = machine
    rc, data = tin_json(lab, "service.deploy", *TARGET)
    assert rc == 0, data
    assert data["ports"] == [10100]
    assert data["totals"]["failed"] == 0
    # under gazette-prod's own rootless daemon, as its uid, and not under the host's rootful one
    ps = as_user(lab, "docker ps --format '{{.Names}} {{.Status}}'").stdout
    assert "gazette-web-1 Up" in ps and "(healthy)" in ps
    assert "gazette" not in lab.ssh("docker1", "docker ps --format '{{.Names}}'").stdout
    assert as_user(lab, "docker exec gazette-web-1 id -u").stdout.strip() == "10100"
    # an HTTP request from docker1 to its address, port 10100
    page = lab.ssh("docker1", f"curl -fsS --max-time 5 http://{lab.addr['docker1']}:10100/")
    assert page.rc == 0, page.stderr
    assert "The gazette gazette" in page.stdout and "port 10100" in page.stdout
    # what the container wrote to its named volume is on the NAS, owned by the machine-env's uid
    r = lab.root("nas", f"stat -c '%u:%g' {VOL}/gazette/prod/data/gazette/site/index.html "
                        f"{VOL}/gazette/prod/data/gazette/site/editions/log")
    assert r.stdout.split() == ["10100:10100", "10100:10100"], r.stderr
    assert "Edition 1" in lab.root("nas", f"cat {VOL}/gazette/prod/data/gazette/site/index.html").stdout
    # and nothing of it in Docker's own storage: the volume is a bind of the mount
    vol = json.loads(as_user(lab, "docker volume inspect gazette_site").stdout)[0]
    assert vol["Options"]["device"] == f"{MNT}/data/gazette/site"
    # the service's files: copied as the user, .env private to it
    r = lab.ssh("docker1", f"cd {MNT}/service/gazette && stat -c '%U %a %n' .env docker-compose.yml && cat .env")
    assert r.stdout.splitlines()[0].startswith("gazette-prod ")
    assert "TIN_PORT_0=10100" in r.stdout and "TIN_CATALOG_SERVICE=gazette" in r.stdout


def test_rootless_daemon_environment_has_no_xdg_into_mnt(machine):
    lab = machine
    r = lab.ssh("docker1", "for p in $(pgrep -u 10100 -f 'dockerd|rootlesskit|containerd'); do "
                           "echo \"== $p\"; tr '\\0' '\\n' </proc/$p/environ; done")
    assert r.rc == 0 and "== " in r.stdout, r.stderr
    xdg = [line for line in r.stdout.splitlines() if line.startswith("XDG_")]
    assert xdg, "the daemon runs with XDG_RUNTIME_DIR at least"
    assert not [line for line in xdg if "/mnt" in line], xdg
    assert not [line for line in xdg if line.split("=")[0] in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME")
                and "/mnt" in os.path.realpath(line.split("=", 1)[1])]


def test_redeploy_changes_nothing_in_one_round_trip(machine):
    rc, data = tin_json(machine, "service.deploy", *TARGET, "--stats")
    assert rc == 0, data
    assert data["totals"]["changed"] == 0 and data["totals"]["failed"] == 0
    assert data["hosts"]["docker1"]["round_trips"] == 1


def test_status_and_logs(machine):
    lab = machine
    rc, data = tin_json(lab, "service.status", *TARGET)
    assert rc == 0, data
    [svc] = [s for s in data["services"] if s["service"] == "gazette"]
    assert svc["state"] == "running" and svc["ports"] == [10100]
    [ctr] = svc["containers"]
    assert ctr["health"] == "healthy" and ctr["image"] == "lab/busybox:1"
    assert "0.0.0.0:10100->10100/tcp" in ctr["ports"]
    r = lab.tin("service.logs", *TARGET, "--tail", "5")
    assert r.rc == 0 and "gazette: edition" in r.stdout, r.stdout + r.stderr


def test_second_service_gets_the_next_free_ports(machine):
    lab = machine
    rc, data = tin_json(lab, "service.deploy", *TARGET, "--catalog-service", "almanac")
    assert rc == 0, data
    assert data["ports"] == [10101, 10102]
    assert "almanac index on 10102" in lab.ssh("docker1", f"curl -fsS http://{lab.addr['docker1']}:10102/").stdout
    assert "gazette=10100\n" in ports_file(lab) and "almanac=10101,10102\n" in ports_file(lab)
    rc, again = tin_json(lab, "service.deploy", *TARGET, "--catalog-service", "almanac")
    assert rc == 0 and again["totals"]["changed"] == 0 and again["ports"] == [10101, 10102]


@pytest.mark.parametrize("broken", [
    ("    image: lab/busybox:1\n", "    image: lab/busybox:1\n    privileged: true\n", "privileged cannot work"),
    ("    image: lab/busybox:1\n", "    image: lab/busybox:1\n    network_mode: host\n", "network_mode host"),
])
def test_a_compose_file_breaking_a_rule_is_refused_before_anything_changes(machine, catalog_with, broken):
    lab = machine
    good, bad, message = broken
    root = catalog_with(broken=BEACON.replace(good, bad))
    before = ports_file(lab)
    r = lab.tin("service.deploy", *TARGET, "--catalog-service", "broken")
    assert r.rc == 2, r.stdout + r.stderr
    assert message in r.stderr and str(root / "broken" / "docker-compose.yml") in r.stderr
    assert "fix:" in r.stderr
    assert lab.ssh("docker1", f"test -e {MNT}/service/broken").rc != 0
    assert ports_file(lab) == before


def test_stop_then_deploy_starts_again(machine):
    lab = machine
    rc, data = tin_json(lab, "service.stop", *TARGET, "--catalog-service", "almanac")
    assert rc == 0 and data["totals"]["changed"] == 1, data
    assert as_user(lab, "docker ps -q --filter label=com.docker.compose.project=almanac").stdout.strip() == ""
    rc, data = tin_json(lab, "service.stop", *TARGET, "--catalog-service", "almanac")
    assert rc == 0 and data["totals"]["changed"] == 0
    rc, data = tin_json(lab, "service.deploy", *TARGET, "--catalog-service", "almanac")
    assert rc == 0 and data["totals"]["changed"] == 2, data  # validate, up
    assert "almanac pages" in lab.ssh("docker1", f"curl -fsS http://{lab.addr['docker1']}:10101/").stdout


def test_remove_keeps_data_and_frees_ports_for_the_next_deploy(machine, catalog_with):
    lab = machine
    rc, data = tin_json(lab, "service.remove", *TARGET)
    assert rc == 0, data
    assert data["freed_ports"] == [10100] and data["data_deleted"] is False
    assert as_user(lab, "docker ps -aq --filter label=com.docker.compose.project=gazette").stdout.strip() == ""
    assert lab.ssh("docker1", f"test -e {MNT}/service/gazette").rc != 0
    assert "gazette=" not in ports_file(lab)
    assert lab.root("nas", f"test -f {VOL}/gazette/prod/data/gazette/site/index.html").rc == 0  # the data stays
    rc, data = tin_json(lab, "service.remove", *TARGET)
    assert rc == 0 and data["totals"]["changed"] == 0

    catalog_with(beacon=BEACON)
    rc, data = tin_json(lab, "service.deploy", *TARGET, "--catalog-service", "beacon")
    assert rc == 0, data
    assert data["ports"] == [10100]  # the gap gazette left
    assert "beacon" in lab.ssh("docker1", f"curl -fsS http://{lab.addr['docker1']}:10100/").stdout


def test_remove_with_delete_data(machine, catalog_with):
    lab = machine
    catalog_with(beacon=BEACON)
    assert lab.root("nas", f"test -d {VOL}/gazette/prod/data/beacon/beam").rc == 0
    r = lab.tin("service.remove", *TARGET, "--catalog-service", "beacon", "--delete-data")
    assert r.rc == 2 and "--yes" in r.stderr  # destructive: no prompt without a terminal
    assert lab.root("nas", f"test -d {VOL}/gazette/prod/data/beacon").rc == 0
    rc, data = tin_json(lab, "service.remove", *TARGET, "--catalog-service", "beacon", "--delete-data", "--yes")
    assert rc == 0 and data["data_deleted"] is True, data
    assert lab.root("nas", f"test -e {VOL}/gazette/prod/data/beacon").rc != 0
    assert lab.root("nas", f"test -f {VOL}/gazette/prod/data/gazette/site/index.html").rc == 0  # others' data stays
    assert ports_file(lab).count("=") == 1  # almanac's line only


def git(*args, cwd=None):
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "HOME": "/tmp", "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env)


def test_catalog_install_from_a_bare_repo_with_the_url_inferred_from_origin(tmp_path):
    """A real `git clone` of a file:// URL, found from a tinsnip checkout's own origin."""
    remotes = tmp_path / "remotes"
    bare = remotes / "service.git"
    git("init", "-q", "--bare", "-b", "main", str(bare))
    work = tmp_path / "work"
    git("clone", "-q", f"file://{bare}", str(work))
    shutil.copytree(REPO / "service", work, dirs_exist_ok=True)
    git("add", ".", cwd=work)
    git("commit", "-qm", "catalog", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)

    checkout = tmp_path / "tinsnip"
    git("clone", "-q", str(REPO), str(checkout))  # tinsnip as a user has it, with origin elsewhere
    for rel in ("tinsnip", "templates"):
        shutil.rmtree(checkout / rel)
        shutil.copytree(REPO / rel, checkout / rel, ignore=shutil.ignore_patterns("__pycache__"))
    git("remote", "set-url", "origin", f"file://{remotes}/tinsnip.git", cwd=checkout)
    dest = tmp_path / "opt" / "dynamicalsystem.service"

    def install(*extra):
        env = {k: v for k, v in os.environ.items() if k not in ("SERVICE_REPO_URL", "SERVICE_PATH")}
        env["PYTHONPATH"] = str(checkout)
        r = subprocess.run([sys.executable, "-m", "tinsnip", "service.catalog-install", "--dest", str(dest),
                            "--json", *extra], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        return json.loads(r.stdout)

    dry = install("--dry-run")
    assert dry["url"] == f"file://{bare}" and dry["action"] == "clone" and not dest.exists()
    first = install()
    assert first["action"] == "clone" and first["services"] >= 2
    assert (dest / "gazette" / "docker-compose.yml").is_file()
    assert install()["action"] == "unchanged"
    (work / "NEWS").write_text("a new service soon\n")
    git("add", ".", cwd=work)
    git("commit", "-qm", "news", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    assert install()["action"] == "update"
    assert (dest / "NEWS").is_file()
