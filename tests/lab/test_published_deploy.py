"""A compose file as upstreams publish it deploys unchanged (issue 13): no env_file, a literal host port,
data in a relative bind, a secret in `${...}`. tinsnip's override supplies the env files, maps the port
onto the machine-env's TIN_PORT_0 and binds ./data onto the NAS; the secret reaches the container
through a private env file on the Docker host, never through output or argv.

The data is written by the app (a busybox shell in the container), never by the test.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
TARGET = ("--service", "gazette", "--env", "prod")
MNT = "/mnt/gazette-prod"
TREE = "/volume1/dynamicalsystem/gazette/prod"
SECRET = "lab-secret-7f3a9c1e"
DOCKER_ENV = "XDG_RUNTIME_DIR=/run/user/10100 DOCKER_HOST=unix:///run/user/10100/docker.sock HOME=/home/gazette-prod"

PUBLISHED = """services:
  web:
    image: lab/busybox:1
    command: ["sh", "-c", "mkdir -p /www; echo \\"$$GREETING\\" > /www/index.html; printf %s \\"$$TOKEN\\" > /data/token; date +%s >> /data/starts; exec httpd -f -p 80 -h /www"]
    environment:
      TOKEN: ${APP_TOKEN}
    env_file: web.env
    ports:
      - "8080:80"
    volumes:
      - ./data:/data
    restart: unless-stopped
"""

NEEDY = """services:
  web:
    image: lab/busybox:1
    command: ["sleep", "1000000"]
    environment:
      PASSWORD: ${NOBODY_SETS_THIS}
"""


def nas(lab, command: str) -> str:
    return lab.root("nas", command).stdout


def as_user(lab, command: str):
    return lab.ssh("docker1", f"cd / && runuser -u gazette-prod -- env -i PATH=/usr/bin:/bin {DOCKER_ENV} {command}")


def wait_for(probe, what, timeout=60.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if probe():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def catalog(lab, tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog")
    shutil.copytree(REPO / "service", root, dirs_exist_ok=True)
    (root / "greeter").mkdir()
    (root / "greeter" / "docker-compose.yml").write_text(PUBLISHED)
    (root / "greeter" / "web.env").write_text("GREETING=hello from the catalog\n")
    (root / "needy").mkdir()
    (root / "needy" / "docker-compose.yml").write_text(NEEDY)
    lab.env["SERVICE_PATH"] = str(root)
    lab.tin_checked("machine.create", *TARGET)
    # the admin's secret, as machine.secret-set keeps it: owner-only, on the NAS, in the machine-env's tree
    as_user(lab, f"sh -c 'umask 077; mkdir -p {MNT}/.machine/secrets && printf %s {SECRET} > {MNT}/.machine/secrets/APP_TOKEN'")
    yield root
    lab.env.pop("SERVICE_PATH", None)


def test_a_variable_nobody_sets_is_exit_2_before_any_change(catalog, lab):
    r = lab.tin("service.deploy", *TARGET, "--catalog-service", "needy")
    out = r.stdout + r.stderr
    assert r.rc == 2, out
    assert "${NOBODY_SETS_THIS}" in out and "machine.secret-set" in out
    assert nas(lab, f"test -e {TREE}/service/needy && echo there || echo absent").strip() == "absent"


def test_dry_run_lists_the_images_and_changes_nothing(catalog, lab):
    r = lab.tin("service.deploy", *TARGET, "--catalog-service", "greeter", "--dry-run", "--json")
    assert r.rc == 0, r.stdout + r.stderr
    data = json.loads(r.stdout)
    assert data["images"] == ["lab/busybox:1"]
    assert SECRET not in r.stdout + r.stderr
    assert nas(lab, f"test -e {TREE}/service/greeter && echo there || echo absent").strip() == "absent"


def test_a_published_file_deploys_unchanged_with_its_secret_out_of_sight(catalog, lab):
    watch = "for i in $(seq 1200); do ps -eo args; sleep 0.05; done > /tmp/tinsnip-ps.log 2>&1"
    lab.ssh("docker1", f"nohup sh -c '{watch}' >/dev/null 2>&1 & echo $! > /tmp/tinsnip-ps.pid")
    r = lab.tin("service.deploy", *TARGET, "--catalog-service", "greeter", "--json")
    lab.ssh("docker1", "kill $(cat /tmp/tinsnip-ps.pid) 2>/dev/null; true")
    assert r.rc == 0, r.stdout + r.stderr
    data = json.loads(r.stdout)
    port = data["ports"][0]
    assert [w["path"] for w in data["where"]] == [f"{MNT}/data/greeter/data"]
    token = f"{TREE}/data/greeter/data/token"
    wait_for(lambda: nas(lab, f"cat {token} 2>/dev/null") == SECRET, "the app's copy of its secret on the NAS")
    assert nas(lab, f"stat -c %u {token}").strip() == "10100"
    page = lab.ssh("docker1", f"wget -qO- http://127.0.0.1:{port}/").stdout
    assert page == "hello from the catalog\n"  # the service's own env file, the port on TIN_PORT_0
    assert SECRET not in r.stdout + r.stderr  # nor in the plan, the diffs, --json
    ps = lab.ssh("docker1", "cat /tmp/tinsnip-ps.log").stdout
    assert "docker compose" in ps or "compose" in ps  # the watcher saw the deploy run
    assert SECRET not in ps
    changelog = nas(lab, "cat /volume1/dynamicalsystem/station/prod/data/changes.log")
    assert "greeter" in changelog and SECRET not in changelog
    assert lab.ssh("docker1", "ls /run/user/10100/ | grep -c tinsnip-secrets || true").stdout.strip() == "0"


def test_redeploy_changes_nothing_and_keeps_the_apps_data(catalog, lab):
    starts = f"{TREE}/data/greeter/data/starts"
    before = nas(lab, f"cat {starts}")
    again = lab.tin_json("service.deploy", *TARGET, "--catalog-service", "greeter")
    assert again["totals"]["changed"] == 0, again
    lab.tin_checked("service.remove", *TARGET, "--catalog-service", "greeter", "--yes")
    lab.tin_checked("service.deploy", *TARGET, "--catalog-service", "greeter")
    wait_for(lambda: len(nas(lab, f"cat {starts}").split()) == len(before.split()) + 1, "the new deploy's start")
    assert nas(lab, f"cat {TREE}/data/greeter/data/token") == SECRET
