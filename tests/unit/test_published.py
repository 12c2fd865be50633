"""The catalog check on compose files of self-hosted apps exactly as their upstreams publish them.

tests/published/<app>/ holds each app's files byte for byte, with SOURCE.md naming the upstream repository,
path and revision. The check runs as it will once the generated override supplies env files, ports and
binds (compose.ALL_SUPPLIES), and as it runs with today's override. Every finding names a line (or the
file, for a shipped .env) and a fix; an app with no error is a valid compose project, merged with tinsnip's
override, by Compose v2 itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tinsnip import catalog, compose
from tinsnip.plans import service as plans
from tinsnip.render import render
from tinsnip.smep import MachineEnv

PUBLISHED = Path(__file__).resolve().parents[1] / "published"
APPS = sorted(p.name for p in PUBLISHED.iterdir() if p.is_dir())
M = MachineEnv("dynamicalsystem", 1, "demo", 5, "prod")
COMPOSE_V2 = "/usr/libexec/docker/cli-plugins/docker-compose"

# (level, line, start of the message after "service 'x': "), in the order the check reports them.
EXPECTED = {
    "freshrss": [
        ("warning", 7, 'image freshrss/freshrss:latest is latest'),
        ("warning", 13, 'container_name is global to the Docker d'),
    ],
    "gitea": [
        ("error", 9, 'image gitea/gitea:@version@ is not an im'),
        ("warning", 10, 'container_name is global to the Docker d'),
    ],
    "homepage": [
        ("warning", 3, 'image ghcr.io/gethomepage/homepage:lates'),
        ("error", 8, '/path/to/config is a placeholder path'),
        ("error", 9, "/var/run/docker.sock is the host's Docke"),
        ("warning", 4, 'container_name is global to the Docker d'),
        ("warning", 2, 'no restart policy: the container stays d'),
    ],
    "immich": [
        ("error", None, 'tinsnip writes .env at deploy (the servi'),
        ("warning", 21, '${UPLOAD_LOCATION} is set by no env file'),
        ("warning", 61, '${DB_PASSWORD} is set by no env file of '),
        ("warning", 62, '${DB_USERNAME} is set by no env file of '),
        ("warning", 63, '${DB_DATABASE_NAME} is set by no env fil'),
        ("warning", 69, '${DB_DATA_LOCATION} is set by no env fil'),
        ("warning", 14, 'container_name is global to the Docker d'),
        ("warning", 35, 'container_name is global to the Docker d'),
        ("warning", 51, 'container_name is global to the Docker d'),
        ("warning", 69, "a database's data directory (/var/lib/po"),
        ("warning", 58, 'container_name is global to the Docker d'),
    ],
    "jellyfin": [
        ("error", 6, 'user uid:gid is a placeholder'),
        ("error", 11, '/path/to/config is a placeholder path'),
        ("error", 12, '/path/to/cache is a placeholder path'),
        ("error", 14, '/path/to/media is a placeholder path'),
        ("error", 17, '/path/to/media2 is a placeholder path'),
        ("error", 22, '/path/to/fonts is a placeholder path'),
        ("warning", 4, 'container_name is global to the Docker d'),
    ],
    "linkding": [
        ("warning", 4, 'image sissbruecker/linkding:latest is la'),
        ("warning", 3, 'container_name is global to the Docker d'),
    ],
    "mealie": [
        ("error", 4, 'build context ../ is outside the catalog'),
        ("warning", 7, 'container_name is global to the Docker d'),
    ],
    "miniflux": [
        ("warning", 3, 'image miniflux/miniflux:latest is latest'),
        ("warning", 4, 'container_name is global to the Docker d'),
        ("warning", 29, "a database's data directory (/var/lib/po"),
        ("warning", 23, 'container_name is global to the Docker d'),
        ("warning", 21, 'no restart policy: the container stays d'),
    ],
    "navidrome": [
        ("warning", 10, 'image deluan/navidrome:latest is latest:'),
        ("warning", 9, 'container_name is global to the Docker d'),
    ],
    "nextcloud": [
        ("warning", 6, "a database's data directory (/var/lib/po"),
    ],
    "paperless-ngx": [
        ("error", None, 'tinsnip writes .env at deploy (the servi'),
        ("warning", 34, "a database's data directory (/data) on a"),
        ("warning", 40, "a database's data directory (/var/lib/po"),
        ("warning", 47, 'image ghcr.io/paperless-ngx/paperless-ng'),
    ],
    "uptime-kuma": [
        ("warning", 9, 'container_name is global to the Docker d'),
    ],
    "vaultwarden": [
        ("error", 6, 'build context . (with Dockerfile) is not'),
        ("warning", 5, 'no restart policy: the container stays d'),
    ],
    "wallabag": [
        ("warning", 7, '${MYSQL_ROOT_PASSWORD} is set by no env '),
        ("warning", 9, '${MYSQL_HOST} is set by no env file of t'),
        ("warning", 11, '${MYSQL_DATABASE} is set by no env file '),
        ("warning", 12, '${MYSQL_USER} is set by no env file of t'),
        ("warning", 13, '${MYSQL_PASSWORD} is set by no env file '),
        ("warning", 15, '${MAILER_HOST} is set by no env file of '),
        ("warning", 16, '${MAILER_USER} is set by no env file of '),
        ("warning", 17, '${MAILER_PASSWORD} is set by no env file'),
        ("warning", 18, '${FROM_EMAIL} is set by no env file of t'),
        ("warning", 19, '${SERVER_URL} is set by no env file of t'),
        ("warning", 20, '${SERVER_NAME} is set by no env file of '),
        ("warning", 22, '${SERVER_PORT} is set by no env file of '),
        ("warning", 24, '${WALLABAG_DATA_IMAGES} is set by no env'),
        ("warning", 25, '${WALLABAG_DATA_CONFIG} is set by no env'),
        ("warning", 36, '${MYSQL_DATA} is set by no env file of t'),
        ("warning", 4, 'image wallabag/wallabag is untagged: eac'),
        ("warning", 28, 'image mariadb is untagged: each deploy m'),
        ("warning", 36, "a database's data directory (/var/lib/my"),
    ],
}


def outcome(app: str, supplies=compose.ALL_SUPPLIES) -> list[tuple]:
    s = catalog.load_dir(PUBLISHED / app, supplies)
    return [(f.level, f.line, f.message.split(": ", 1)[-1]) for f in s.findings]


def test_the_set_is_at_least_twelve_apps_each_with_its_source():
    assert len(APPS) >= 12 and set(APPS) == set(EXPECTED)
    for app in APPS:
        source = (PUBLISHED / app / "SOURCE.md").read_text()
        assert "repository: https://github.com/" in source and "revision: " in source, app


@pytest.mark.parametrize("app", APPS)
def test_exact_outcome_of_the_catalog_check(app):
    got = outcome(app)
    assert len(got) == len(EXPECTED[app]), got
    for (level, line, msg), (elevel, eline, emsg) in zip(got, EXPECTED[app], strict=True):
        assert (level, line) == (elevel, eline) and msg.startswith(emsg), (level, line, msg)


@pytest.mark.parametrize("app", APPS)
def test_every_finding_names_its_line_and_a_fix(app):
    s = catalog.load_dir(PUBLISHED / app, compose.ALL_SUPPLIES)
    for f in s.findings:
        assert f.fix
        if f.line is None:  # only a file tinsnip writes is named without a line
            assert f.file.endswith("/.env"), f
        else:
            text = (PUBLISHED / app / Path(f.file).name).read_text().splitlines()
            assert f.source == text[f.line - 1]  # the snippet is the line itself
            assert f"{f.line:>5} | {f.source}" in f.render()
    if s.problems:
        with pytest.raises(Exception) as err:
            s.require_rules()
        assert getattr(err.value, "code", None) == 2


def test_with_an_override_of_volumes_only_the_file_must_wire_env_files_and_ports():
    got = outcome("uptime-kuma", frozenset({"volumes"}))
    errors = [(ln, msg) for lv, ln, msg in got if lv == "error"]
    assert errors[0][1].startswith("env_file must list ../../.machine/machine.env then .env")
    assert any(msg.startswith("./uptime-kuma-data is not shipped in the catalog") for _, msg in errors)
    assert any(msg.startswith("port 3001:3001 is not one of the machine-env's ports") for _, msg in errors)


def test_a_commented_out_port_variable_reserves_no_port(tmp_path):
    d = tmp_path / "svc"
    d.mkdir()
    (d / "docker-compose.yml").write_text(
        "services:\n  web:\n    image: x:1\n    restart: always\n"
        "    env_file: [../../.machine/machine.env, .env]\n    ports:\n      - \"${TIN_PORT_0}:80\"\n"
        "      # - \"${TIN_PORT_5}:81\"\n")
    assert catalog.load_dir(d).ports_needed == 1


def test_tin_port_10_is_refused_not_ignored(tmp_path):
    d = tmp_path / "svc"
    d.mkdir()
    (d / "docker-compose.yml").write_text(
        "services:\n  web:\n    image: x:1\n    restart: always\n"
        "    env_file: [../../.machine/machine.env, .env]\n    ports:\n      - \"${TIN_PORT_10}:80\"\n")
    s = catalog.load_dir(d)
    assert [f.line for f in s.findings if f.level == "error"] == [7]
    assert "${TIN_PORT_10}: a machine-env has ten ports" in s.problems[0]


@pytest.mark.skipif(not os.access(COMPOSE_V2, os.X_OK), reason="Compose v2 is not installed")
@pytest.mark.parametrize("app", [a for a in APPS if not any(lv == "error" for lv, *_ in EXPECTED[a])])
def test_an_app_with_no_error_is_a_valid_compose_project_with_the_override(tmp_path, app):
    """Lay the app out as a deploy would (service dir, machine.env, tinsnip's .env and override), set
    every variable the check warned about (as a secret would), and let Compose v2 validate the merge."""
    svc = catalog.load_dir(PUBLISHED / app, compose.ALL_SUPPLIES)
    mount = tmp_path / "mnt"
    sdir = mount / "service" / app
    shutil.copytree(PUBLISHED / app, sdir)
    (mount / ".machine").mkdir()
    (mount / ".machine/machine.env").write_text(render("machine.env.j2", m=M, nas_host="198.18.0.10"))
    ports = M.ports[:svc.ports_needed]
    env_text = plans.service_env(M, app, ports)
    (sdir / ".env").write_text(env_text)
    (sdir / catalog.OVERRIDE_NAME).write_text(plans.override(M, app, svc.services, svc.volumes, "f00"))
    warned = {f.message.split("}")[0][2:] for f in svc.findings if " is set by no env file" in f.message}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           **plans.parse_env(render("machine.env.j2", m=M, nas_host="198.18.0.10")), **plans.parse_env(env_text),
           **{v: f"/x/{v.lower()}" if "DATA" in v else "8080" if "PORT" in v else "x" for v in warned}}
    r = subprocess.run([COMPOSE_V2, "--project-directory", str(sdir), "-f", str(svc.compose_file.name and
                        sdir / svc.compose_file.name), "-f", str(sdir / catalog.OVERRIDE_NAME), "config", "-q"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


LINT = """\
services:
  web:
    image: nginx:1.25
    restart: always
    privileged: true
    network_mode: host
    sysctls:
      net.core.somaxconn: 1024
    cap_add: [NET_ADMIN, SYS_ADMIN]
    devices:
      - /dev/dri:/dev/dri
    user: 10:10
    volumes:
      - /srv/web:/srv
      - ~/cache:/cache
      - ../shared:/shared
      - <your data dir>:/data
      - /etc/localtime:/etc/localtime:ro
      - ${XDG_DATA_HOME}/${TIN_SHEET}/web:/app/data
      - ./conf:/etc/nginx/conf.d:ro
      - cache:/var/cache
    ports:
      - "80:80"
      - "${TIN_PORT_10}:81"
  bulk:
    image: busybox:1
    restart: always
    ports: ["9000-9010:9000-9010"]
"""


def test_each_lint_case_names_its_line():
    """Every error case of the check in one file, with the exact line each points at."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "lint"
        (d / "conf").mkdir(parents=True)
        (d / "conf" / "site.conf").write_text("server {}\n")
        (d / "docker-compose.yml").write_text(LINT)
        got = [(f.level, f.line, f.message.split(": ", 1)[-1][:30])
               for f in catalog.load_dir(d, compose.ALL_SUPPLIES).findings]
    assert got == [
        ("error", 24, "a machine-env has ten ports, T"),
        ("error", 5, "privileged cannot work under r"),
        ("error", 6, "network_mode host shares the h"),
        ("error", 8, "sysctl net.core.somaxconn cann"),
        ("error", 9, "cap_add SYS_ADMIN is host-wide"),
        ("error", 11, "device /dev/dri belongs to the"),
        ("error", 12, "unquoted user 10:10 is read by"),
        ("error", 14, "/srv/web is a host path outsid"),
        ("error", 15, "~/cache is in the Docker host'"),
        ("error", 16, "../shared is outside the catal"),
        ("error", 17, "<your data dir> is a placehold"),
        ("error", 21, "volume cache is not declared u"),
        ("error", 28, "the file publishes more ports "),
    ]


def test_without_the_port_mapping_low_and_literal_ports_are_errors(tmp_path):
    d = tmp_path / "svc"
    d.mkdir()
    (d / "docker-compose.yml").write_text(
        "services:\n  web:\n    image: x:1\n    restart: always\n    env_file: [../../.machine/machine.env, .env]\n"
        "    ports:\n      - \"80:80\"\n      - \"8080:81\"\n      - \"${TIN_PORT_1}:82\"\n")
    s = catalog.load_dir(d, frozenset({"volumes"}))
    assert [(f.line, f.message.split(": ", 1)[1][:22]) for f in s.findings] == [
        (7, "host port 80 is below "), (8, "port 8080:81 is not on")]
    assert s.ports_needed == 2  # TIN_PORT_0 … TIN_PORT_1
