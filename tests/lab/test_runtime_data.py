"""A deploy never loses what a service wrote (issue 13): relative binds the catalog does not ship are
runtime data on the NAS, only files a deploy copied are ever replaced or removed, and the design
documents' XDG pattern keeps its data on the NAS.

The data here is written by the apps themselves (a busybox shell in the container), never by the test.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
TARGET = ("--service", "gazette", "--env", "prod")
MNT = "/mnt/gazette-prod"
TREE = "/volume1/dynamicalsystem/gazette/prod"
DOCKER_ENV = "XDG_RUNTIME_DIR=/run/user/10100 DOCKER_HOST=unix:///run/user/10100/docker.sock HOME=/home/gazette-prod"

# As upstream projects publish them: data in relative binds next to the compose file (uptime-kuma's
# `./data:/app/data` style), a shipped config read through a relative bind, and a restart policy.
KEEPER = """services:
  app:
    image: lab/busybox:1
    user: "${TIN_SERVICE_UID}:${TIN_SERVICE_UID}"
    env_file:
      - ../../.machine/machine.env
      - .env
    command: ["sh", "-c", "date +%s%N >> /app/data/boots; [ -f /app/data/kuma.db ] || echo created-by-the-app > /app/data/kuma.db; cat /conf/app.conf > /app/data/seen.conf; exec sleep 1000000"]
    volumes:
      - ./data:/app/data
      - ./conf:/conf:ro
    restart: unless-stopped
"""

# deployment-strategy.md's Python-service pattern: ${XDG_DATA_HOME}/${TIN_SHEET}/${TIN_SERVICE_NAME}
XDG_APP = """services:
  app:
    image: lab/busybox:1
    user: "${TIN_SERVICE_UID}:${TIN_SERVICE_UID}"
    env_file:
      - ../../.machine/machine.env
      - .env
    command: ["sh", "-c", "echo from-the-xdg-app > /app/data/note; exec sleep 1000000"]
    volumes:
      - ${XDG_DATA_HOME}/${TIN_SHEET}/${TIN_SERVICE_NAME}:/app/data
"""


def as_user(lab, command: str):
    return lab.ssh("docker1", f"cd / && runuser -u gazette-prod -- env -i PATH=/usr/bin:/bin {DOCKER_ENV} {command}")


def nas(lab, command: str) -> str:
    return lab.root("nas", command).stdout


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
    (root / "keeper" / "conf").mkdir(parents=True)
    (root / "keeper" / "docker-compose.yml").write_text(KEEPER)
    (root / "keeper" / "conf" / "app.conf").write_text("edition 1\n")
    (root / "keeper" / "NOTES.md").write_text("shipped with the catalog\n")
    (root / "xdgapp").mkdir()
    (root / "xdgapp" / "docker-compose.yml").write_text(XDG_APP)
    lab.env["SERVICE_PATH"] = str(root)
    lab.tin_checked("machine.create", *TARGET)
    yield root
    lab.env.pop("SERVICE_PATH", None)


def deploy(lab, name):
    return lab.tin_json("service.deploy", *TARGET, "--catalog-service", name)


def boots(lab) -> int:
    return len(nas(lab, f"cat {TREE}/data/keeper/data/boots 2>/dev/null").split())


def test_relative_binds_are_runtime_data_on_the_nas(catalog, lab):
    data = deploy(lab, "keeper")
    wait_for(lambda: boots(lab) == 1, "the app's first start")
    assert nas(lab, f"cat {TREE}/data/keeper/data/kuma.db") == "created-by-the-app\n"
    assert nas(lab, f"stat -c %u {TREE}/data/keeper/data/kuma.db").strip() == "10100"
    assert nas(lab, f"test -e {TREE}/service/keeper/data && echo in-service-dir || echo not-there").strip() == "not-there"
    assert nas(lab, f"cat {TREE}/data/keeper/data/seen.conf") == "edition 1\n"  # the shipped bind reads the copy
    text = str(data)
    assert f"{MNT}/data/keeper/data" in text  # the summary says where the runtime data lives


def test_two_redeploys_keep_what_the_app_wrote(catalog, lab):
    (catalog / "keeper" / "conf" / "app.conf").write_text("edition 2\n")
    (catalog / "keeper" / "NOTES.md").unlink()  # a file an earlier deploy copied: it may go
    as_user(lab, f"sh -c 'mkdir -p {MNT}/service/keeper/uploads && echo written-by-the-service > {MNT}/service/keeper/uploads/photo'")
    first = deploy(lab, "keeper")
    assert first["totals"]["failed"] == 0
    wait_for(lambda: boots(lab) == 2, "the recreated container")
    again = deploy(lab, "keeper")
    assert again["totals"]["changed"] == 0
    assert nas(lab, f"cat {TREE}/data/keeper/data/kuma.db") == "created-by-the-app\n"
    assert nas(lab, f"cat {TREE}/data/keeper/data/seen.conf") == "edition 2\n"
    assert nas(lab, f"cat {TREE}/service/keeper/uploads/photo") == "written-by-the-service\n"
    assert nas(lab, f"test -e {TREE}/service/keeper/NOTES.md || echo gone").strip() == "gone"
    manifest = nas(lab, f"cat {TREE}/.machine/deployed/keeper.files")
    assert "conf/app.conf" in manifest and "uploads/photo" not in manifest and "NOTES.md" not in manifest


def test_a_catalog_file_never_overwrites_one_the_service_wrote(catalog, lab):
    (catalog / "keeper" / "uploads").mkdir()
    (catalog / "keeper" / "uploads" / "photo").write_text("from the catalog\n")
    r = lab.tin("service.deploy", *TARGET, "--catalog-service", "keeper")
    assert r.rc == 2 and "written by keeper" in r.stdout + r.stderr, r.stdout + r.stderr
    assert nas(lab, f"cat {TREE}/service/keeper/uploads/photo") == "written-by-the-service\n"
    shutil.rmtree(catalog / "keeper" / "uploads")


def test_remove_without_delete_data_and_a_new_deploy_keep_it(catalog, lab):
    lab.tin_checked("service.remove", *TARGET, "--catalog-service", "keeper", "--yes")
    assert "keeper" not in as_user(lab, "docker ps -a --format '{{.Names}}'").stdout
    deploy(lab, "keeper")
    wait_for(lambda: boots(lab) == 3, "the new deploy's start")
    assert nas(lab, f"cat {TREE}/data/keeper/data/kuma.db") == "created-by-the-app\n"


def test_the_design_documents_xdg_pattern_keeps_its_data_on_the_nas(catalog, lab):
    env = nas(lab, f"cat {TREE}/.machine/machine.env")
    assert f"XDG_DATA_HOME={MNT}/data" in env and f"XDG_STATE_HOME={MNT}/state" in env
    data = deploy(lab, "xdgapp")
    assert data["totals"]["failed"] == 0, data
    note = f"{TREE}/data/dynamicalsystem/gazette/note"
    wait_for(lambda: nas(lab, f"cat {note} 2>/dev/null") == "from-the-xdg-app\n", "the XDG app's file on the NAS")
    assert nas(lab, f"stat -c %u {note}").strip() == "10100"
    assert lab.ssh("docker1", "test -e /home/gazette-prod/.local/share/dynamicalsystem/gazette/note").rc != 0
    pid = lab.ssh("docker1", "pgrep -u 10100 -x dockerd").stdout.split()[0]
    environ = lab.ssh("docker1", f"tr '\\0' '\\n' </proc/{pid}/environ").stdout
    assert "XDG_DATA_HOME" not in environ and "XDG_CONFIG_HOME" not in environ and "XDG_STATE_HOME" not in environ
