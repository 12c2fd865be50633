"""Deploy, stop and remove plans of catalog services: ports, rendered files, steps, and convergence."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tinsnip import catalog
from tinsnip.errors import InputError, RemoteError
from tinsnip.plans import service as plans
from tinsnip.plans import service_files as manifest
from tinsnip.plans.service_override import spec_from_model
from tinsnip.render import render
from tinsnip.smep import MachineEnv
from tinsnip.steps import Noop, Run, Upload, sha256

REPO = Path(__file__).resolve().parents[2]
M = MachineEnv("dynamicalsystem", 1, "gazette", 1, "prod")
PORTS = M.ports  # 10100 … 10109
MACHINE_ENV = render("machine.env.j2", m=M, nas_host="198.18.0.10")


def deploy_spec(name="gazette", m=M, root=REPO / "service") -> plans.Deploy:
    svc = catalog.get(root, name)
    files = catalog.service_files(svc)
    return plans.Deploy(m=m, service=name, compose_file=svc.compose_file.name, files=files,
                        services=svc.services, volumes=svc.volumes, ports_needed=svc.ports_needed,
                        images=svc.images, archives={"lab/busybox:1": "/lab/images/busybox.tar"},
                        spec=spec_from_model(svc.model, set(files)))


class OverrideLoader(yaml.SafeLoader):
    """Reads compose's `!override` and `!reset` tags as plain values."""


OverrideLoader.add_constructor("!override", lambda loader, node: (
    loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else loader.construct_mapping(node)))


def load_override(text: str) -> dict:
    return yaml.load(text, Loader=OverrideLoader)


def fresh_facts(d: plans.Deploy) -> dict:
    """A machine-env machine.create has made, with nothing deployed."""
    facts = {"uid": M.uid, "mounted": True, "machine_env": MACHINE_ENV, "ports": None, "dirs": [], "files": {},
             "manifest": None, "secret_names": [],
             "ssh_home": "/root", "containers": {"error": None, "containers": []},
             "images": {i: None for i in d.images}}
    for rel in [*d.files, ".env", "docker-compose.override.yml"]:
        facts[f"file:{rel}"] = None
    return facts


def deployed_facts(d: plans.Deploy, others: dict | None = None) -> dict:
    """What the host answers after a successful deploy of `d` (plus `others` in the ports file)."""
    first = plans.plan_deploy(d, "docker1", {**fresh_facts(d), "ports": plans.render_ports(M, others or {})})
    facts = fresh_facts(d)
    for step in first.steps:
        if isinstance(step, Upload):
            rel = step.path[len(d.dir) + 1:]
            if step.path == plans.ports_path(M):
                facts["ports"] = step.content
            elif step.path == manifest.manifest_path(M, d.service):
                facts["manifest"] = step.content
            else:
                facts[f"file:{rel}"] = step.content
                facts["files"][rel] = step.mode
    facts["dirs"] = d.dirs() + d.data_dirs() + [manifest.deployed_dir(M)]
    facts["images"] = {i: "sha256:abc" for i in d.images}
    facts["containers"] = {"error": None, "containers": [
        {"name": f"{d.service}-{s}-1", "project": d.service, "service": s, "oneoff": False, "state": "running",
         "health": "healthy", "image": "lab/busybox:1", "image_id": "sha256:abc",
         "inputs": first.data["inputs"], "ports": [], "user": "10100:10100", "exit_code": 0}
        for s in d.services]}
    return facts


# -- ports ---------------------------------------------------------------------------------------------


def test_first_fit_reuses_gaps_and_keeps_what_a_service_has():
    alloc = {"a": [10100], "c": [10103]}
    assert plans.allocate_ports(PORTS, alloc, "b", 3)["b"] == [10101, 10102, 10104]
    assert plans.allocate_ports(PORTS, alloc, "a", 1) == alloc  # kept across deploys
    grown = plans.allocate_ports(PORTS, alloc, "a", 2)
    assert grown["a"] == [10100, 10101]
    shrunk = plans.allocate_ports(PORTS, {"a": [10104, 10101]}, "a", 1)
    assert shrunk == {"a": [10104]}  # ports keep their order: TIN_PORT_0 stays put
    assert "x" not in plans.allocate_ports(PORTS, alloc, "x", 0)


def test_removing_frees_ports_for_the_next_deploy():
    alloc = plans.allocate_ports(PORTS, {}, "gazette", 1)
    alloc = plans.allocate_ports(PORTS, alloc, "almanac", 2)
    assert alloc == {"gazette": [10100], "almanac": [10101, 10102]}
    alloc = plans.free_ports(alloc, "gazette")
    assert plans.allocate_ports(PORTS, alloc, "beacon", 2)["beacon"] == [10100, 10103]


def test_too_few_ports_is_bad_input_naming_the_holders():
    alloc = {f"s{i}": [p] for i, p in enumerate(PORTS[:9])}
    with pytest.raises(InputError, match=r"needs 2 ports but only 1 .*\(held by s0: 10100"):
        plans.allocate_ports(PORTS, alloc, "big", 2)


def test_ports_file_round_trip_ignores_foreign_lines():
    alloc = {"gazette": [10100], "almanac": [10101, 10102]}
    text = plans.render_ports(M, alloc)
    assert plans.parse_ports(text) == alloc
    assert plans.parse_ports(text + "# note\nbroken line\nbad=x,y\n\n") == alloc
    assert plans.parse_ports(None) == {}


def test_ports_outside_the_machine_are_dropped():
    assert plans.allocate_ports(PORTS, {"a": [20000, 10105]}, "a", 2)["a"] == [10105, 10100]


# -- rendered files --------------------------------------------------------------------------------------


def test_service_env():
    text = plans.service_env(M, "almanac", [10101, 10102])
    assert plans.parse_env(text) == {"TIN_CATALOG_SERVICE": "almanac", "TIN_PORT_0": "10101", "TIN_PORT_1": "10102"}


def test_override_binds_every_named_volume_to_the_nas():
    text = plans.override(M, "almanac", ("pages", "index"), ("almanac", "cache"), "f00")
    data = load_override(text)
    assert data["volumes"]["cache"] == {"driver": "local", "driver_opts": {
        "type": "none", "o": "bind", "device": "/mnt/gazette-prod/data/almanac/cache"}}
    assert data["services"]["index"]["labels"] == {plans.INPUTS_LABEL: "f00"}
    assert "volumes" not in load_override(plans.override(M, "x", ("web",), (), "f00"))


def compose_bin() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    standalone = "/usr/libexec/docker/cli-plugins/docker-compose"
    return [standalone] if os.access(standalone, os.X_OK) else None


@pytest.mark.parametrize("name", ["gazette", "almanac"])
def test_rendered_service_passes_real_docker_compose_config(tmp_path, name):
    """Lay out a machine-env's mount as a deploy would and let Compose v2 validate and resolve it."""
    compose = compose_bin()
    if compose is None:
        pytest.skip("Compose v2 is not installed")
    mount = tmp_path / "mnt"
    m = MachineEnv("dynamicalsystem", 1, "gazette", 1, "prod")
    d = deploy_spec(name)
    plan = plans.plan_deploy(d, "docker1", fresh_facts(d))
    for step in plan.steps:
        if isinstance(step, Upload):
            target = mount / step.path[len(m.mount) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(step.content)
    (mount / ".machine").mkdir(exist_ok=True)
    (mount / ".machine/machine.env").write_text(MACHINE_ENV)
    up = next(s for s in plan.steps if isinstance(s, Run) and s.argv[-1] == "--quiet")
    sdir = mount / "service" / name
    argv = [a.replace(m.mount, str(mount)) for a in up.argv[up.argv.index("docker") + 2:]]  # after "docker compose"
    env = {"PATH": os.environ["PATH"], **dict(up.env)}
    r = subprocess.run([*compose, *argv], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    resolved = yaml.safe_load(subprocess.run([*compose, *argv[:-1]], env=env, capture_output=True, text=True,
                                             check=True).stdout)
    assert resolved["name"] == name
    for vol in d.volumes:
        assert resolved["volumes"][vol]["driver_opts"]["device"] == f"{m.mount}/data/{name}/{vol}"
    for svc in resolved["services"].values():
        assert svc["user"] == "10100:10100"
        assert svc["environment"]["TIN_SERVICE_UID"] == "10100"  # from machine.env through env_file
        assert svc["labels"][plans.INPUTS_LABEL] == plan.data["inputs"]
    published = sorted(int(p["published"]) for s in resolved["services"].values() for p in s.get("ports", []))
    assert published == plan.data["ports"]
    assert sdir.is_dir()


# -- deploy plans ------------------------------------------------------------------------------------------


def kinds(plan):
    return [type(s).__name__ for s in plan.steps]


def test_first_deploy_plans_every_step_in_order():
    d = deploy_spec("gazette")
    plan = plans.plan_deploy(d, "docker1", fresh_facts(d))
    descs = [s.desc for s in plan.changes]
    assert descs[0].startswith("create /mnt/gazette-prod/service/gazette")
    assert plan.data["ports"] == [10100]
    uploads = {s.path: s for s in plan.steps if isinstance(s, Upload)}
    assert set(uploads) == {
        "/mnt/gazette-prod/service/gazette/docker-compose.yml", "/mnt/gazette-prod/service/gazette/bin/start.sh",
        "/mnt/gazette-prod/.machine/ports", "/mnt/gazette-prod/service/gazette/.env",
        "/mnt/gazette-prod/service/gazette/docker-compose.override.yml",
        "/mnt/gazette-prod/.machine/deployed/gazette.files"}
    for u in uploads.values():
        assert u.as_user == "gazette-prod"  # written as the machine user: the mount squashes root anyway
        assert u.expect == "absent"
    assert uploads["/mnt/gazette-prod/service/gazette/bin/start.sh"].mode == 0o755
    assert uploads["/mnt/gazette-prod/service/gazette/.env"].mode == 0o640
    mkdata = next(s for s in plan.steps if isinstance(s, Run) and "/mnt/gazette-prod/data/gazette/site" in s.argv)
    assert mkdata.as_user == "gazette-prod"
    load = next(s for s in plan.steps if isinstance(s, Run) and "load image" in s.desc)
    assert "/root/" + plans.archive_name("lab/busybox:1") in load.argv
    assert plan.data["archive_uploads"] == [("/lab/images/busybox.tar", plans.archive_name("lab/busybox:1"))]
    config, up = plan.steps[-2:]
    assert config.argv[-2:] == ("config", "--quiet") and config.argv[:2] == ("sh", "-c")
    assert "up --detach --remove-orphans --wait" in up.argv[2]
    assert up.as_user == config.as_user == "gazette-prod"


def test_up_reads_machine_env_and_env_as_env_files_and_gets_only_dockers_variables():
    d = deploy_spec("gazette")
    up = plans.plan_deploy(d, "docker1", fresh_facts(d)).steps[-1]
    assert dict(up.env) == {"HOME": "/home/gazette-prod", "XDG_RUNTIME_DIR": "/run/user/10100",
                            "DOCKER_HOST": "unix:///run/user/10100/docker.sock", "IMAGES": "lab/busybox:1",
                            "HOST": "docker1"}
    argv = list(up.argv)
    files = [argv[i + 1] for i, a in enumerate(argv) if a == "--env-file"]
    assert files == ["/mnt/gazette-prod/.machine/machine.env", "/mnt/gazette-prod/service/gazette/.env"]
    assert not any("=" in a and a.split("=")[0].isupper() for a in argv[3:])  # no VAR=value in argv
    # machine.env's XDG values point into the NAS mount (SPEC §7), for compose interpolation
    env = plans.parse_env(MACHINE_ENV)
    assert (env["XDG_DATA_HOME"], env["XDG_CONFIG_HOME"], env["XDG_STATE_HOME"]) == (
        "/mnt/gazette-prod/data", "/mnt/gazette-prod/config", "/mnt/gazette-prod/state")


def test_a_deployed_service_plans_only_noops():
    d = deploy_spec("gazette")
    plan = plans.plan_deploy(d, "docker1", deployed_facts(d))
    assert plan.converged, [s.desc for s in plan.changes]
    assert plan.steps[-1].desc.startswith("gazette is running")


def test_a_second_service_gets_the_next_free_ports_and_keeps_the_first():
    d = deploy_spec("almanac")
    facts = fresh_facts(d)
    facts["ports"] = plans.render_ports(M, {"gazette": [10100]})
    plan = plans.plan_deploy(d, "docker1", facts)
    assert plan.data["ports"] == [10101, 10102]
    ports = next(s for s in plan.steps if isinstance(s, Upload) and s.path.endswith("/.machine/ports"))
    assert plans.parse_ports(ports.content) == {"gazette": [10100], "almanac": [10101, 10102]}
    assert ports.expect == sha256(facts["ports"])  # compare-and-swap: a concurrent deploy re-plans


@pytest.mark.parametrize("change,reason", [
    (lambda f: f["containers"]["containers"][0].update(state="exited"), "is exited"),
    (lambda f: f["containers"]["containers"][0].update(health="unhealthy"), "is unhealthy"),
    (lambda f: f["containers"]["containers"][0].update(inputs="old"), "configuration changed"),
    (lambda f: f["containers"]["containers"].clear(), "no container"),
    (lambda f: f["images"].update({"lab/busybox:1": "sha256:new"}), "image lab/busybox:1 changed"),
])
def test_containers_that_do_not_match_are_brought_up(change, reason):
    d = deploy_spec("gazette")
    facts = deployed_facts(d)
    change(facts)
    plan = plans.plan_deploy(d, "docker1", facts)
    assert [s.desc.split(" (")[0] for s in plan.changes] == ["validate gazette with docker compose config", "start gazette"]
    assert reason in plan.changes[-1].desc


def test_a_changed_file_is_uploaded_with_its_diff_and_recreates_the_containers():
    d = deploy_spec("gazette")
    facts = deployed_facts(d)
    facts["file:bin/start.sh"] = "#!/bin/sh\necho old\n"
    plan = plans.plan_deploy(d, "docker1", facts)
    up = plan.changes[0]
    assert isinstance(up, Upload) and up.path.endswith("bin/start.sh")
    assert "-echo old" in up.diff()
    assert up.expect == sha256("#!/bin/sh\necho old\n")
    assert kinds(plan).count("Upload") == 1  # the catalog is unchanged: the override and its label stay
    assert plan.changes[-1].desc.startswith("start gazette")


def test_a_new_machine_env_file_recreates_the_containers():
    d = deploy_spec("gazette")
    facts = deployed_facts(d)
    facts["machine_env"] = MACHINE_ENV.replace("198.18.0.10", "198.18.0.11")
    plan = plans.plan_deploy(d, "docker1", facts)
    assert [s.path for s in plan.changes if isinstance(s, Upload)] == [
        "/mnt/gazette-prod/service/gazette/docker-compose.override.yml"]
    assert plan.changes[-1].desc.startswith("start gazette")


def test_stale_files_are_removed_and_modes_follow_the_catalog():
    d = deploy_spec("gazette")
    facts = deployed_facts(d)
    facts["files"]["old.conf"] = 0o644  # copied by an earlier deploy (in its manifest), no longer shipped
    facts["files"]["kuma.db"] = 0o644  # written by the app: never in a manifest
    facts["manifest"] = manifest.render_manifest(d.dir, [*d.files, "old.conf"])
    facts["files"]["bin/start.sh"] = 0o644
    plan = plans.plan_deploy(d, "docker1", facts)
    argvs = [s.argv for s in plan.changes if isinstance(s, Run)]
    assert ("chmod", "755", "/mnt/gazette-prod/service/gazette/bin/start.sh") in argvs
    assert ("rm", "-f", "--", "/mnt/gazette-prod/service/gazette/old.conf") in argvs
    assert not any("kuma.db" in a for argv in argvs for a in argv)
    assert plan.data["kept_files"] == ["kuma.db"]
    new_manifest = next(s for s in plan.changes if isinstance(s, Upload) and s.path.endswith("/gazette.files"))
    assert manifest.parse_manifest(new_manifest.content) == set(d.files)


def test_a_service_written_file_is_never_overwritten_by_a_catalog_file_of_that_name():
    d = deploy_spec("gazette")
    facts = deployed_facts(d)
    facts["manifest"] = manifest.render_manifest(d.dir, ["docker-compose.yml"])
    facts["file:bin/start.sh"] = "written by the service\n"
    with pytest.raises(InputError, match="was written by gazette, not copied by a deploy"):
        plans.plan_deploy(d, "docker1", facts)


def test_without_a_manifest_a_deploy_removes_nothing():
    d = deploy_spec("gazette")
    facts = deployed_facts(d)
    facts["manifest"] = None
    facts["files"]["data/kuma.db"] = 0o644
    plan = plans.plan_deploy(d, "docker1", facts)
    assert not any(isinstance(s, Run) and s.argv[:2] == ("rm", "-f") for s in plan.steps)
    assert any(isinstance(s, Upload) and s.path == manifest.manifest_path(M, "gazette") for s in plan.steps)


def test_present_image_is_not_loaded_and_unknown_image_is_left_to_compose():
    d = deploy_spec("gazette")
    facts = fresh_facts(d)
    facts["images"] = {"lab/busybox:1": "sha256:abc"}
    assert not any("load image" in s.desc for s in plans.plan_deploy(d, "docker1", facts).steps)
    d2 = plans.Deploy(**{**d.__dict__, "archives": {}})
    facts["images"] = {"lab/busybox:1": None}
    plan = plans.plan_deploy(d2, "docker1", facts)
    assert any(isinstance(s, Noop) and "compose will pull it" in s.desc for s in plan.steps)
    assert plan.data["archive_uploads"] == []


@pytest.mark.parametrize("patch,match", [
    ({"uid": None}, "there is no user gazette-prod"),
    ({"uid": 1000}, "has uid 1000, not 10100"),
    ({"mounted": False}, "is not mounted"),
    ({"machine_env": None}, "machine.env is missing"),
])
def test_a_machine_env_that_is_not_set_up_is_bad_input(patch, match):
    d = deploy_spec("gazette")
    with pytest.raises(InputError, match=match) as err:
        plans.plan_deploy(d, "docker1", {**fresh_facts(d), **patch})
    assert "machine.create --service gazette --env prod" in str(err.value)


def test_a_daemon_that_does_not_answer_is_a_remote_error():
    d = deploy_spec("gazette")
    with pytest.raises(RemoteError, match="does not answer"):
        plans.plan_deploy(d, "docker1", {**fresh_facts(d), "containers": {"error": "no socket", "containers": []}})


def test_inputs_digest_changes_with_each_input():
    d = deploy_spec("gazette")
    base = plans.inputs_digest(d, "E=1\n", MACHINE_ENV)
    assert plans.inputs_digest(d, "E=1\n", MACHINE_ENV) == base
    assert plans.inputs_digest(d, "E=2\n", MACHINE_ENV) != base
    assert plans.inputs_digest(d, "E=1\n", MACHINE_ENV + "X=1\n") != base
    files = dict(d.files)
    files["bin/start.sh"] = (files["bin/start.sh"][0], 0o644)
    assert plans.inputs_digest(plans.Deploy(**{**d.__dict__, "files": files}), "E=1\n", MACHINE_ENV) != base


# -- stop, remove, status -------------------------------------------------------------------------------------


def project(containers=(), ports=None, dirs=(), objects=None):
    return {"uid": M.uid, "mounted": True, "ports": ports, "dirs": list(dirs),
            "containers": {"error": None, "containers": list(containers)},
            "objects": objects if objects is not None else {"containers": len(containers), "networks": 0, "volumes": 0}}


RUNNING = {"name": "gazette-web-1", "project": "gazette", "service": "web", "state": "running", "health": None,
           "oneoff": False}


def test_stop_stops_running_containers_once():
    plan = plans.plan_stop(M, "gazette", "docker1", project([RUNNING]))
    assert plan.changes[0].argv == ("docker", "compose", "--ansi", "never", "--project-name", "gazette", "stop")
    assert plan.changes[0].as_user == "gazette-prod"
    assert plans.plan_stop(M, "gazette", "docker1", project([{**RUNNING, "state": "exited"}])).converged


def test_remove_keeps_data_unless_asked_and_frees_ports():
    sdir, ddir = "/mnt/gazette-prod/service/gazette", "/mnt/gazette-prod/data/gazette"
    ports = plans.render_ports(M, {"gazette": [10100], "almanac": [10101]})
    facts = project([RUNNING], ports=ports, dirs=[sdir, ddir])
    facts["files"] = {"docker-compose.yml": 0o644, ".env": 0o640, "docker-compose.override.yml": 0o644,
                      "data/kuma.db": 0o644}
    facts["manifest"] = manifest.render_manifest(sdir, ["docker-compose.yml"])
    plan = plans.plan_remove(M, "gazette", False, "docker1", facts)
    argvs = [s.argv for s in plan.changes if isinstance(s, Run)]
    assert argvs[0][:7] == ("docker", "compose", "--ansi", "never", "--project-name", "gazette", "down")
    rm = next(a for a in argvs if a[:2] == ("sh", "-c") and sdir in a)
    assert set(rm[rm.index(sdir) + 1:]) == {"docker-compose.yml", ".env", "docker-compose.override.yml"}
    assert "data/kuma.db" not in rm and not any(a[:2] == ("rm", "-rf") and sdir in a for a in argvs)
    assert ("rm", "-f", "--", manifest.manifest_path(M, "gazette")) in argvs
    assert not any(ddir in a for a in argvs)
    freed = next(s for s in plan.changes if isinstance(s, Upload))
    assert plans.parse_ports(freed.content) == {"almanac": [10101]}
    assert plan.data["freed_ports"] == [10100]
    deleting = plans.plan_remove(M, "gazette", True, "docker1", facts)
    assert ("rm", "-rf", "--", ddir) in [s.argv for s in deleting.changes if isinstance(s, Run)]
    assert ("rm", "-rf", "--", sdir) in [s.argv for s in deleting.changes if isinstance(s, Run)]


def test_removed_service_plans_only_noops():
    ports = plans.render_ports(M, {"almanac": [10101]})
    gone = project([], ports=ports, dirs=["/mnt/gazette-prod/data/gazette"])
    assert plans.plan_remove(M, "gazette", False, "docker1", gone).converged
    assert not plans.plan_remove(M, "gazette", True, "docker1", gone).converged
    assert plans.plan_remove(M, "gazette", True, "docker1", project([], ports=ports)).converged


def test_leftover_networks_or_volumes_are_removed_too():
    plan = plans.plan_remove(M, "gazette", False, "docker1",
                             project([], objects={"containers": 0, "networks": 1, "volumes": 1}))
    assert "1 networks, 1 volumes" in plan.changes[0].desc


def test_parse_container_from_docker_inspect():
    c = plans.parse_container({
        "Name": "/gazette-web-1", "Image": "sha256:abc",
        "Config": {"Image": "lab/busybox:1", "User": "10100:10100", "Labels": {
            "com.docker.compose.project": "gazette", "com.docker.compose.service": "web",
            "com.docker.compose.oneoff": "False", plans.INPUTS_LABEL: "f00"}},
        "State": {"Status": "running", "ExitCode": 0, "Health": {"Status": "healthy"}},
        "NetworkSettings": {"Ports": {"10100/tcp": [{"HostIp": "0.0.0.0", "HostPort": "10100"}], "81/tcp": None}},
    })
    assert c == {"name": "gazette-web-1", "project": "gazette", "service": "web", "oneoff": False,
                 "state": "running", "health": "healthy", "exit_code": 0, "image": "lab/busybox:1",
                 "image_id": "sha256:abc", "inputs": "f00", "ports": ["0.0.0.0:10100->10100/tcp"],
                 "user": "10100:10100"}
    assert plans._containers(1, "Cannot connect")["error"] == "Cannot connect"


def test_status_report_per_service():
    facts = {"uid": M.uid, "mounted": True, "ports": plans.render_ports(M, {"gazette": [10100]}),
             "deployed": ["gazette"], "containers": {"error": None, "containers": [
                 {**RUNNING, "health": "healthy"}, {**RUNNING, "project": "other", "state": "exited"}]}}
    report = plans.status_report(M, "docker1", facts)
    assert [(s["service"], s["state"], s["ports"]) for s in report["services"]] == [
        ("gazette", "running", [10100]), ("other", "stopped", [])]
    assert plans.status_report(M, "docker1", facts, "gazette")["services"][0]["deployed"] is True


def test_planner_is_pure():
    text = Path(plans.__file__).read_text()
    assert "import fabric" not in text and "from fabric" not in text and "invoke" not in text


# -- the override of a published compose file -----------------------------------------------------------

PUBLISHED = """services:
  app:
    image: example/app:1.2
    env_file: [app.env, {path: ./local.env, required: false}]
    ports:
      - "8080:80"
      - 127.0.0.1:9000:9000/udp
      - "7000-7001:7000-7001"
      - target: 443
        published: "8443"
        protocol: tcp
      - "${TIN_PORT_5}:5000"
    volumes:
      - ./data:/app/data
      - ./conf/app.ini:/etc/app.ini:ro
      - cache:/cache
    environment:
      DB_PASSWORD: ${DB_PASSWORD}
      UPLOAD: ${UPLOAD_LOCATION}
      MODE: ${MODE:-prod}
volumes:
  cache:
"""


def published(tmp_path, compose=PUBLISHED, extra=None):
    root = tmp_path / "catalog"
    d = root / "app"
    (d / "conf").mkdir(parents=True)
    (d / "docker-compose.yml").write_text(compose)
    (d / "conf" / "app.ini").write_text("[app]\n")
    (d / "app.env").write_text("UPLOAD_LOCATION=/uploads\n")
    for rel, text in (extra or {}).items():
        (d / rel).write_text(text)
    return deploy_spec("app", root=root)


def override_of(plan) -> dict:
    up = next(s for s in plan.steps if isinstance(s, Upload) and s.path.endswith("docker-compose.override.yml"))
    return load_override(up.content)


def test_override_maps_every_port_syntax_onto_the_machine_ports(tmp_path):
    d = published(tmp_path)
    facts = fresh_facts(d)
    facts["secret_names"] = ["DB_PASSWORD"]
    plan = plans.plan_deploy(d, "docker1", facts)
    assert d.ports_needed == 6 and plan.data["ports"] == PORTS[:6]
    ports = override_of(plan)["services"]["app"]["ports"]
    got = [(str(p["target"]), p["published"], p.get("host_ip"), p["protocol"]) for p in ports]
    assert got == [("80", "10100", None, "tcp"), ("9000", "10101", "127.0.0.1", "udp"),
                   ("7000", "10102", None, "tcp"), ("7001", "10103", None, "tcp"),
                   ("443", "10104", None, "tcp"), ("5000", "10105", None, "tcp")]  # ${TIN_PORT_5} keeps 5


def test_override_binds_runtime_data_onto_the_nas_and_leaves_shipped_config(tmp_path):
    d = published(tmp_path)
    facts = fresh_facts(d)
    facts["secret_names"] = ["DB_PASSWORD"]
    plan = plans.plan_deploy(d, "docker1", facts)
    app = override_of(plan)["services"]["app"]
    assert app["volumes"] == [{"type": "bind", "source": "/mnt/gazette-prod/data/app/data", "target": "/app/data"}]
    assert override_of(plan)["volumes"]["cache"]["driver_opts"]["device"] == "/mnt/gazette-prod/data/app/cache"
    mk = [s for s in plan.steps if isinstance(s, Run) and "/mnt/gazette-prod/data/app/data" in s.argv]
    assert mk and mk[0].argv[0] == "mkdir"
    assert {(w["kind"], w["path"]) for w in plan.data["where"]} == {
        ("volume", "/mnt/gazette-prod/data/app/cache"), ("bind", "/mnt/gazette-prod/data/app/data")}


def test_data_an_earlier_deploy_left_in_the_service_dir_moves_to_the_nas_data_tree(tmp_path):
    d = published(tmp_path)
    facts = fresh_facts(d)
    facts["secret_names"] = ["DB_PASSWORD"]
    facts["dirs"] = [d.dir, "/mnt/gazette-prod/service/app/data"]
    plan = plans.plan_deploy(d, "docker1", facts)
    mv = next(s for s in plan.steps if isinstance(s, Run) and "move ./data" in s.desc)
    assert mv.argv[-2:] == ("/mnt/gazette-prod/service/app/data", "/mnt/gazette-prod/data/app/data")


def test_override_env_files_are_tinsnips_then_the_services_own(tmp_path):
    d = published(tmp_path)
    facts = fresh_facts(d)
    facts["secret_names"] = ["DB_PASSWORD"]
    plan = plans.plan_deploy(d, "docker1", facts)
    assert override_of(plan)["services"]["app"]["env_file"] == [
        "../../.machine/machine.env", ".env", "app.env", {"path": "./local.env", "required": False}]
    up = plan.steps[-1]
    files = [up.argv[i + 1] for i, a in enumerate(up.argv) if a == "--env-file"]
    assert files == ["/mnt/gazette-prod/service/app/app.env", "/mnt/gazette-prod/.machine/machine.env",
                     "/mnt/gazette-prod/service/app/.env"]


def test_a_variable_nobody_sets_is_bad_input_naming_it_and_how_to_set_it(tmp_path):
    d = published(tmp_path)
    with pytest.raises(InputError) as err:
        plans.plan_deploy(d, "docker1", fresh_facts(d))
    msg = str(err.value)
    assert "${DB_PASSWORD}" in msg and "docker-compose.yml:18" in msg and "machine.secret-set" in msg
    assert "UPLOAD_LOCATION" not in msg and "MODE" not in msg  # set by app.env; has a default


def test_secrets_reach_compose_through_a_private_env_file_never_argv(tmp_path):
    d = published(tmp_path)
    facts = fresh_facts(d)
    facts["secret_names"] = ["DB_PASSWORD"]
    plan = plans.plan_deploy(d, "docker1", facts)
    config, up = plan.steps[-2:]
    for step in (config, up):
        assert "/mnt/gazette-prod/.machine/secrets" in step.argv  # the directory, read on the host
        assert 'umask 077' in step.argv[2] and '--env-file "$sf"' in step.argv[2]
        assert not any("DB_PASSWORD" in a for a in step.argv[3:])


def test_published_override_passes_real_docker_compose_config(tmp_path):
    """The merged project (base, override, env files, a secret) as compose itself resolves it."""
    compose = compose_bin()
    if compose is None:
        pytest.skip("Compose v2 is not installed")
    d = published(tmp_path)
    facts = fresh_facts(d)
    facts["secret_names"] = ["DB_PASSWORD"]
    plan = plans.plan_deploy(d, "docker1", facts)
    mount = tmp_path / "mnt"
    for step in plan.steps:
        if isinstance(step, Upload):
            target = mount / step.path[len(M.mount) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(step.content)
    (mount / ".machine/machine.env").write_text(MACHINE_ENV)
    (mount / ".machine/secrets").mkdir()
    (mount / ".machine/secrets/DB_PASSWORD").write_text("s3cret-value-42")
    config = plan.steps[-2]
    argv = [a.replace(M.mount, str(mount)) for a in config.argv[:-1]]  # without --quiet: print the project
    r = subprocess.run(argv, env={"PATH": os.environ["PATH"], "XDG_RUNTIME_DIR": str(tmp_path)},
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    resolved = yaml.safe_load(r.stdout)
    app = resolved["services"]["app"]
    assert app["environment"]["DB_PASSWORD"] == "s3cret-value-42"
    assert app["environment"]["UPLOAD"] == "/uploads" and app["environment"]["TIN_SERVICE_UID"] == "10100"
    assert sorted(int(p["published"]) for p in app["ports"]) == PORTS[:6]
    binds = {v["target"]: v["source"] for v in app["volumes"]}
    assert binds["/app/data"] == "/mnt/gazette-prod/data/app/data"
    assert binds["/etc/app.ini"] == str(mount / "service/app/conf/app.ini")  # shipped config stays
    assert not list(tmp_path.glob("tinsnip-secrets.*"))  # the private env file is gone afterwards


def test_a_failed_up_names_each_missing_image_its_registry_and_the_remedies_and_is_recorded(tmp_path):
    """The up step's own shell, run with a docker that fails every call (as when a pull times out)."""
    d = deploy_spec("gazette")
    plan = plans.plan_deploy(d, "docker1", fresh_facts(d))
    up = plan.steps[-1]
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "docker").write_text("#!/bin/sh\nexit 1\n")
    (fake / "docker").chmod(0o755)
    last = tmp_path / "gazette.last"
    argv = list(up.argv)
    argv[argv.index(plans.last_deploy_path(M, "gazette"))] = str(last)
    env = {**dict(up.env), "IMAGES": "example.org:5000/app:1 redis:7", "PATH": f"{fake}:/usr/bin:/bin"}
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert r.returncode == 1
    assert "image example.org:5000/app:1 is not in" in r.stderr and "pulled from example.org:5000" in r.stderr
    assert "image redis:7" in r.stderr and "pulled from docker.io" in r.stderr
    assert "docker_hosts.docker1.images" in r.stderr and "mirror" in r.stderr
    record = plans.parse_last("gazette\0" + last.read_text() + "\0")["gazette"]
    assert record["outcome"] == "failed" and "redis:7" in record["why"]


def test_status_shows_a_failed_last_deploy():
    facts = {"uid": M.uid, "mounted": True, "ports": None, "deployed": ["gazette"],
             "containers": {"error": None, "containers": []},
             "last": plans.parse_last("gazette\0failed 2026-01-01T00:00:00Z\nimage x:1 could not be pulled\0")}
    [s] = plans.status_report(M, "docker1", facts)["services"]
    assert s["last_deploy"] == {"outcome": "failed", "at": "2026-01-01T00:00:00Z", "why": "image x:1 could not be pulled"}
