"""The service catalog: lookup order, the compose rules, what a service needs, and installing with git."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tinsnip import catalog
from tinsnip.errors import InputError

REPO = Path(__file__).resolve().parents[2]
GOOD = """services:
  web:
    image: lab/busybox:1
    user: "${TIN_SERVICE_UID}:${TIN_SERVICE_UID}"
    env_file:
      - ../../.machine/machine.env
      - .env
    ports: ["${TIN_PORT_0}:80", "${TIN_PORT_2}:81"]
    volumes: [data:/data, shared:/shared]
volumes:
  data:
  shared:
    external: true
"""


VOLUMES_ONLY = frozenset({"volumes"})

def make_service(root: Path, name: str, compose: str = GOOD, extra: dict | None = None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "docker-compose.yml").write_text(compose)
    for rel, text in (extra or {}).items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return d


# -- lookup ----------------------------------------------------------------------------------------


def test_lookup_order_service_path_then_home_then_cwd(tmp_path):
    home, cwd, sp = tmp_path / "home", tmp_path / "cwd", tmp_path / "sp"
    places = catalog.candidates("acme", {"SERVICE_PATH": str(sp)}, home, cwd)
    assert [p for _, p in places] == [sp, home / ".local/opt/acme.service", cwd / "service"]
    (cwd / "service").mkdir(parents=True)
    assert catalog.find("acme", {}, home, cwd) == cwd / "service"
    (home / ".local/opt/acme.service").mkdir(parents=True)
    assert catalog.find("acme", {}, home, cwd) == home / ".local/opt/acme.service"
    sp.mkdir()
    assert catalog.find("acme", {"SERVICE_PATH": str(sp)}, home, cwd) == sp


def test_service_path_that_does_not_exist_is_an_error_not_skipped(tmp_path):
    (tmp_path / "service").mkdir()
    with pytest.raises(InputError, match="SERVICE_PATH=.*not a directory"):
        catalog.find("acme", {"SERVICE_PATH": str(tmp_path / "nope")}, tmp_path, tmp_path)


def test_no_catalog_says_how_to_get_one(tmp_path):
    with pytest.raises(InputError, match="catalog-install"):
        catalog.find("acme", {}, tmp_path / "h", tmp_path / "c")


def test_repo_catalog_follows_the_rules():
    services = {s.name: s for s in catalog.list_services(REPO / "service")}
    assert {"gazette", "almanac"} <= set(services)
    for s in services.values():
        assert s.follows_rules, s.problems
    assert services["gazette"].ports_needed == 1
    assert services["gazette"].volumes == ("site",)
    assert services["gazette"].images == ("lab/busybox:1",)
    assert services["almanac"].ports_needed == 2
    assert services["almanac"].services == ("pages", "index")


def test_get_unknown_service_lists_the_known_ones(tmp_path):
    make_service(tmp_path, "gazette")
    with pytest.raises(InputError, match="has: gazette"):
        catalog.get(tmp_path, "nope")
    with pytest.raises(InputError):
        catalog.get(tmp_path, "../etc")


# -- rules -------------------------------------------------------------------------------------------


def test_good_compose_file_parsed(tmp_path):
    make_service(tmp_path, "svc")
    s = catalog.get(tmp_path, "svc")
    assert s.follows_rules
    assert s.port_indexes == (0, 2)
    assert s.ports_needed == 3  # TIN_PORT_0 … TIN_PORT_2
    assert s.volumes == ("data",)  # the external one is not tinsnip's to bind
    s.require_rules()


@pytest.mark.parametrize("env_file", [
    None, "[.env]", "[../../.machine/machine.env]", "[.env, ../../.machine/machine.env]", ".env",
])
def test_env_file_rule(tmp_path, env_file):
    line = f"    env_file: {env_file}\n" if env_file else ""
    compose = ("services:\n  web:\n    image: x\n    user: \"${TIN_SERVICE_UID}:${TIN_SERVICE_UID}\"\n" + line)
    d = make_service(tmp_path, "svc", compose)
    s = catalog.load_dir(d, VOLUMES_ONLY)  # an override that supplies no env files
    assert not s.follows_rules
    with pytest.raises(InputError) as err:
        s.require_rules()
    msg = str(err.value)
    assert str(d / "docker-compose.yml") in msg  # names the file
    assert "env_file must list ../../.machine/machine.env then .env" in msg
    # and the fix, lined up under the offending line (the file's own indentation, after the gutter)
    assert "|     env_file:\n" in msg and "|       - ../../.machine/machine.env\n" in msg and msg.endswith("|       - .env")
    assert err.value.code == 2


def test_env_file_long_syntax_and_dot_slash_accepted(tmp_path):
    compose = ("services:\n  web:\n    image: x\n    user: \"${TIN_SERVICE_UID}:${TIN_SERVICE_UID}\"\n"
               "    env_file:\n      - path: ../../.machine/machine.env\n      - ./.env\n      - extra.env\n")
    assert catalog.load_dir(make_service(tmp_path, "svc", compose, extra={"extra.env": "A=1\n"})).follows_rules
    # an env file that is not shipped makes `docker compose` fail: it is named, with its line
    s = catalog.load_dir(make_service(tmp_path / "b", "svc", compose))
    assert s.problems == (f"{tmp_path}/b/svc/docker-compose.yml:8: service 'web': env_file extra.env is not in the "
                          "catalog service\n    8 |       - extra.env\n  fix: ship extra.env in svc/, or drop it from env_file",)


@pytest.mark.parametrize("user", [None, '"1000:1000"', '"${TIN_SERVICE_UID}"', "root", '"${UID}:${UID}"', "999",
                                  '"${TIN_SERVICE_UID}:${TIN_SERVICE_UID}"'])
def test_user_is_no_rule(tmp_path, user):
    # It used to be one (`user: "${TIN_SERVICE_UID}:..."`), which was wrong under rootless Docker: container
    # root already is the machine-env's uid on the host, `user: N` is a subordinate uid, and the NAS squashes
    # every write to the machine-env's uid anyway; forcing a user only broke images that start as root.
    line = f"    user: {user}\n" if user else ""
    compose = "services:\n  web:\n    image: x:1\n    restart: always\n    env_file: [../../.machine/machine.env, .env]\n" + line
    s = catalog.load_dir(make_service(tmp_path, "svc", compose))
    assert s.problems == ()
    assert [w for w in s.warnings if "${UID} is set by no env file" not in w] == []


def test_unquoted_user_with_a_colon_is_base_60(tmp_path):
    compose = "services:\n  web:\n    image: x:1\n    restart: always\n    env_file: [../../.machine/machine.env, .env]\n    user: 10:10\n"
    s = catalog.load_dir(make_service(tmp_path, "svc", compose))
    assert s.problems == (f"{tmp_path}/svc/docker-compose.yml:6: service 'web': unquoted user 10:10 is read by YAML 1.1 "
                          "as a base-60 number (610)\n    6 |     user: 10:10\n  fix: quote it\n      |     user: \"10:10\"",)


def test_every_service_of_a_file_is_checked(tmp_path):
    compose = GOOD.replace("volumes:\n  data:", "  other:\n    image: x\nvolumes:\n  data:")
    s = catalog.load_dir(make_service(tmp_path, "svc", compose), VOLUMES_ONLY)
    assert [p.split(": ")[1] for p in s.problems] == ["service 'other'"]
    assert catalog.load_dir(make_service(tmp_path, "svc2", compose)).follows_rules  # today's override wires both


def test_files_tinsnip_writes_must_not_ship(tmp_path):
    s = catalog.load_dir(make_service(tmp_path, "svc", extra={".env": "X=1\n"}))
    assert any(p.startswith(f"{tmp_path}/svc/.env: tinsnip writes .env at deploy") and "rename it (e.g. svc.env)" in p
               and "secrets" in p for p in s.problems)


@pytest.mark.parametrize("text", ["", "services: []\n", "just text\n", "services: {a: [\n"])
def test_broken_compose_files(tmp_path, text):
    assert not catalog.load_dir(make_service(tmp_path, "svc", text)).follows_rules


def test_service_files_modes_and_skips(tmp_path):
    d = make_service(tmp_path, "svc", extra={"bin/start.sh": "#!/bin/sh\n", "conf/a.conf": "a\n",
                                             ".git/config": "x", "docker-compose.override.yml": "x"})
    (d / "bin/start.sh").chmod(0o755)
    files = catalog.service_files(catalog.load_dir(d))
    assert set(files) == {"docker-compose.yml", "bin/start.sh", "conf/a.conf"}
    assert files["bin/start.sh"] == ("#!/bin/sh\n", 0o755)
    assert files["conf/a.conf"][1] == 0o644


def test_binary_files_are_refused(tmp_path):
    d = make_service(tmp_path, "svc")
    (d / "logo.png").write_bytes(b"\x89PNG\xff\xfe")
    with pytest.raises(InputError, match="not a UTF-8 text file"):
        catalog.service_files(catalog.load_dir(d))


def test_interpolate():
    v = {"A": "1", "EMPTY": ""}
    assert catalog.interpolate("img:${A}", v) == "img:1"
    assert catalog.interpolate("img:${B:-2}-$A-${EMPTY:-e}", v) == "img:2-1-e"
    assert catalog.interpolate("$$A", v) == "$A"


# -- install -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("origin,url", [
    ("git@github.com:dynamicalsystem/tinsnip.git", "git@github.com:dynamicalsystem/service.git"),
    ("https://github.com/tinsnip/tinsnip", "https://github.com/tinsnip/service"),
    ("file:///srv/git/tinsnip.git\n", "file:///srv/git/service.git"),
])
def test_infer_repo_url(origin, url):
    assert catalog.infer_repo_url(origin) == url


def test_infer_repo_url_needs_tinsnip_in_it():
    with pytest.raises(InputError, match="SERVICE_REPO_URL"):
        catalog.infer_repo_url("https://example.com/other.git")


def git(*args, cwd=None):
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "HOME": "/tmp", "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout


def test_repo_url_order_and_inference_from_a_checkout(tmp_path):
    checkout = tmp_path / "tinsnip"
    checkout.mkdir()
    git("init", "-q", cwd=checkout)
    git("remote", "add", "origin", f"file://{tmp_path}/remotes/tinsnip.git", cwd=checkout)
    assert catalog.repo_url(None, {}, checkout) == (f"file://{tmp_path}/remotes/service.git",
                                                    f"origin of {checkout} with tinsnip → service")
    assert catalog.repo_url(None, {"SERVICE_REPO_URL": "u"}, checkout)[0] == "u"
    assert catalog.repo_url("flag", {"SERVICE_REPO_URL": "u"}, checkout)[0] == "flag"
    bare = tmp_path / "plain"
    bare.mkdir()
    git("init", "-q", cwd=bare)
    with pytest.raises(InputError, match="no git remote 'origin'"):
        catalog.repo_url(None, {}, bare)


def test_install_clones_then_updates_from_a_bare_repo(tmp_path):
    bare = tmp_path / "service.git"
    git("init", "-q", "--bare", "-b", "main", str(bare))
    work = tmp_path / "work"
    git("clone", "-q", f"file://{bare}", str(work))
    make_service(work, "gazette")
    git("add", ".", cwd=work)
    git("commit", "-qm", "gazette", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)

    dest = tmp_path / "opt" / "acme.service"
    assert catalog.install_action(dest) == "clone"
    action, _ = catalog.install(f"file://{bare}", dest)
    assert action == "clone"
    assert [s.name for s in catalog.list_services(dest)] == ["gazette"]
    assert catalog.install(f"file://{bare}", dest)[0] == "unchanged"

    make_service(work, "almanac")
    git("add", ".", cwd=work)
    git("commit", "-qm", "almanac", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    assert catalog.install(f"file://{bare}", dest)[0] == "update"
    assert [s.name for s in catalog.list_services(dest)] == ["almanac", "gazette"]

    with pytest.raises(InputError, match="is a clone of"):
        catalog.install(f"file://{tmp_path}/other.git", dest)


def test_install_refuses_a_directory_that_is_not_a_clone(tmp_path):
    (tmp_path / "x" / "file").parent.mkdir()
    (tmp_path / "x" / "file").write_text("mine")
    with pytest.raises(InputError, match="not a git clone"):
        catalog.install_action(tmp_path / "x")


def test_the_service_template_follows_the_rules():
    s = catalog.load_dir(REPO / "examples" / "service-template")
    assert s.follows_rules, s.problems
    assert s.ports_needed == 1 and s.volumes == ("data",)
    assert catalog.service_files(s)["run.sh"][1] == 0o755
