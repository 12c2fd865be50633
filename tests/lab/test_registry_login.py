"""Registry logins and secrets of a machine-env on the lab (issues 12 and 13): a private image pulls
only after `machine.login`, the login comes back on a wiped home, `machine.logout` takes it away, a
secret set with `machine.secret-set` lands owner-only on the NAS, and neither value ever shows in
output, --json, the change log or in `ps` on docker1 and the NAS while tinsnip works.
"""

from __future__ import annotations

import json
import secrets as pysecrets

import pytest

from tinsnip import changelog
from tinsnip.lab import registry

pytestmark = pytest.mark.lab

TARGET = ("--service", "gazette", "--env", "prod")
HOME = "/home/gazette-prod"
TREE = "/volume1/dynamicalsystem/gazette/prod"
DOCKER_ENV = f"XDG_RUNTIME_DIR=/run/user/10100 DOCKER_HOST=unix:///run/user/10100/docker.sock HOME={HOME}"
SAMPLER = ("rm -f /tmp/ps.stop /tmp/ps.log; setsid sh -c 'while [ ! -e /tmp/ps.stop ]; do ps -eo args >>/tmp/ps.log; "
           "sleep 0.05; done' </dev/null >/dev/null 2>&1 &")


def as_user(lab, command: str):
    return lab.ssh("docker1", f"cd / && runuser -u gazette-prod -- env -i PATH=/usr/bin:/bin {DOCKER_ENV} {command}",
                   timeout=180)


@pytest.fixture(scope="module")
def machine(lab):
    lab.tin_checked("machine.create", *TARGET)
    for host in ("docker1", "nas"):
        lab.root(host, SAMPLER)
    outputs: list[str] = []
    yield lab, outputs
    for host in ("docker1", "nas"):
        lab.root(host, "touch /tmp/ps.stop")


def run(lab, outputs, *args, input=None, code=0):
    r = lab.tin(*args, input=input)
    outputs.append(r.stdout + r.stderr)
    assert r.rc == code, f"{args} exited {r.rc}:\n{r.stdout}\n{r.stderr}"
    return r


def test_a_private_image_needs_the_login_and_pulls_after_machine_login(machine):
    lab, outputs = machine
    private = registry.private_registry(lab.id)
    image = f"{private}/private/busybox:1"
    r = as_user(lab, f"docker pull -q {image}")
    assert r.rc != 0 and ("no basic auth credentials" in r.stderr or "unauthorized" in r.stderr), r.stderr
    user, password = lab.env[registry.USER_VAR], lab.env[registry.PASSWORD_VAR]
    dry = run(lab, outputs, "machine.login", *TARGET, "--registry", private, "--username", user, "--dry-run",
              input=password + "\n")
    assert "registry login for" in dry.stdout
    run(lab, outputs, "machine.login", *TARGET, "--registry", private, "--username", user, input=password + "\n")
    cfg = lab.ssh("docker1", f"stat -c %U:%a {HOME}/.docker/config.json").stdout.strip()
    assert cfg == "gazette-prod:600"
    r = as_user(lab, f"docker pull -q {image}")
    assert r.rc == 0, r.stderr
    names = json.loads(run(lab, outputs, "machine.secrets", *TARGET, "--json").stdout)
    assert names["registry_logins"] == [private]
    again = json.loads(run(lab, outputs, "machine.create", *TARGET, "--json").stdout)
    assert again["totals"]["changed"] == 0
    outputs.append(json.dumps(again))


def test_a_wiped_home_gets_the_login_back_from_the_nas(machine):
    lab, outputs = machine
    lab.ssh("docker1", f"rm -f {HOME}/.docker/config.json")
    status = lab.tin("machine.status", *TARGET)
    outputs.append(status.stdout + status.stderr)
    assert status.rc == 1 and "registry logins in ~/.docker/config.json missing" in status.stdout, status.stdout
    run(lab, outputs, "machine.create", *TARGET, "--dry-run")
    run(lab, outputs, "machine.create", *TARGET, "--verbose")
    auths = json.loads(lab.ssh("docker1", f"cat {HOME}/.docker/config.json").stdout)["auths"]
    assert list(auths) == [registry.private_registry(lab.id)]


def test_a_secret_is_kept_owner_only_on_the_nas_and_listed_by_name(machine):
    lab, outputs = machine
    value = "s3cret-" + pysecrets.token_hex(12)
    lab.secret_value = value
    run(lab, outputs, "machine.secret-set", *TARGET, "--name", "DB_PASSWORD", "--dry-run", input=value)
    assert lab.root("nas", f"test -e {TREE}/.machine/secrets/DB_PASSWORD").rc != 0
    run(lab, outputs, "machine.secret-set", *TARGET, "--name", "DB_PASSWORD", input=value)
    again = json.loads(run(lab, outputs, "machine.secret-set", *TARGET, "--name", "DB_PASSWORD", "--json",
                           input=value).stdout)
    assert again["totals"]["changed"] == 0
    st = lab.root("nas", f"stat -c '%u:%g %a' {TREE}/.machine/secrets {TREE}/.machine/secrets/DB_PASSWORD").stdout.split("\n")
    assert st[:2] == ["10100:10100 700", "10100:10100 600"]
    assert lab.root("nas", f"cat {TREE}/.machine/secrets/DB_PASSWORD").stdout == value
    listed = json.loads(run(lab, outputs, "machine.secrets", *TARGET, "--json").stdout)
    assert listed["secrets"] == ["DB_PASSWORD"]
    r = run(lab, outputs, "machine.secret-set", *TARGET, "--name", "db_password", input=value, code=2)
    assert "secret name" in r.stderr


def test_logout_takes_the_login_away(machine):
    lab, outputs = machine
    private = registry.private_registry(lab.id)
    run(lab, outputs, "machine.logout", *TARGET, "--registry", private)
    auths = json.loads(lab.ssh("docker1", f"cat {HOME}/.docker/config.json").stdout)
    assert "auths" not in auths
    as_user(lab, f"docker rmi -f {private}/private/busybox:1")
    r = as_user(lab, f"docker pull -q {private}/private/busybox:1")
    assert r.rc != 0
    assert json.loads(run(lab, outputs, "machine.secrets", *TARGET, "--json").stdout)["registry_logins"] == []


def test_the_rootless_daemon_has_no_xdg_paths_in_its_environment(machine):
    lab, _ = machine
    env = lab.ssh("docker1", "tr '\\0' '\\n' </proc/$(pgrep -u 10100 -x dockerd | head -n1)/environ").stdout
    assert "DOCKERD_ROOTLESS" in env or "HOME=" in env
    assert not [line for line in env.splitlines() if line.startswith(("XDG_DATA_HOME=", "XDG_CONFIG_HOME=", "XDG_STATE_HOME="))]


def test_no_value_in_output_the_change_log_or_ps(machine):
    lab, outputs = machine
    password = lab.env[registry.PASSWORD_VAR]
    value = lab.secret_value
    import base64

    encoded = base64.b64encode(f"{lab.env[registry.USER_VAR]}:{password}".encode()).decode()
    log = lab.root("nas", f"cat {changelog.path('/volume1', 'dynamicalsystem')}").stdout
    assert "registry login for" in log and "secret DB_PASSWORD" in log
    for host in ("docker1", "nas"):
        lab.root(host, "touch /tmp/ps.stop; sleep 0.2")
    samples = {host: lab.root(host, "cat /tmp/ps.log").stdout for host in ("docker1", "nas")}
    assert all(s.count("\n") > 20 for s in samples.values()), {h: s.count("\n") for h, s in samples.items()}
    for blob in [*outputs, log, *samples.values()]:
        assert password not in blob and value not in blob and encoded not in blob
    print(f"ps lines sampled: docker1 {samples['docker1'].count(chr(10))}, nas {samples['nas'].count(chr(10))}; "
          f"outputs checked: {len(outputs)}")
