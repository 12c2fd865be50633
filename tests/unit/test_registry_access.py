"""Registry access (mirrors, CAs, logins) and per machine-env secrets, on plain facts: what is planned,
that a second run plans nothing, and that no secret value reaches a plan, diff, JSON or message."""

import io
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tinsnip import secrets
from tinsnip.engine import Options, Output, json_dump
from tinsnip.errors import InputError
from tinsnip.inventory import RegistryCA, load
from tinsnip.plans import machine as pm
from tinsnip.plans import registry_access as ra
from tinsnip.steps import HostPlan, Noop, Run, Upload

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_plans_machine import GP, HOST, NAS, b64, done_facts  # noqa: E402

PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
PASSWORD = "hunter2-very-secret-pw"
MIRROR = "https://198.18.3.30:5000"
REG = "198.18.3.30:5001"
CA_HOST = replace(HOST, registry_mirrors=(MIRROR,),
                  registry_cas=(RegistryCA("198.18.3.30:5000", Path("/lab/registry-ca.crt"), PEM),
                                RegistryCA(REG, Path("/lab/registry-ca.crt"), PEM)))


def login():
    return {REG: ("builder", secrets.Secret(PASSWORD))}


def converged(host=CA_HOST, logins=None):
    """Facts of a host on which every registry setting is already in place."""
    facts = done_facts(GP)
    mf = facts[f"me:{GP.name}"]
    mf["daemon_json"] = pm.daemon_json(host)
    cfg = ra.docker_config(None, logins) if logins else None
    mf["access"] = {"cas": {ca.registry: ca.pem for ca in host.registry_cas},
                    "dockercfg": secrets.Secret(cfg) if cfg else None}
    return facts


def changes(plan):
    return [s for s in plan.steps if not isinstance(s, Noop)]


# -- inventory -----------------------------------------------------------------------------------

def write_inv(tmp_path, host_extra: str, files=None):
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(text)
    p = tmp_path / "hosts.yaml"
    p.write_text("nas: {address: 10.0.0.2, user: admin}\ndocker_hosts:\n  d1:\n    address: 10.0.0.3\n" + host_extra)
    return load(p)


def test_inventory_reads_mirrors_and_cas_relative_to_its_directory(tmp_path):
    inv = write_inv(tmp_path, "    registry_mirrors: [https://198.18.3.30:5000]\n"
                              "    registry_cas: {198.18.3.30:5000: registry-ca.crt}\n", {"registry-ca.crt": PEM})
    h = inv.docker_hosts["d1"]
    assert h.registry_mirrors == ("https://198.18.3.30:5000",)
    assert [(c.registry, c.path, c.pem) for c in h.registry_cas] == [("198.18.3.30:5000", tmp_path / "registry-ca.crt", PEM)]


def test_inventory_names_every_bad_registry_key(tmp_path):
    with pytest.raises(InputError) as err:
        write_inv(tmp_path, "    registry_mirrors: [http://198.18.3.30:5000, https://a/b, 7]\n"
                            "    registry_cas:\n      198.18.3.30: ca.crt\n      r.lan:5000: missing.crt\n"
                            "      r.lan:5001: notpem.crt\n      r.lan:5002: key.pem\n",
                  {"ca.crt": PEM, "notpem.crt": "hello\n", "key.pem": PEM + "-----BEGIN PRIVATE KEY-----\n"})
    msg = str(err.value)
    assert err.value.code == 2
    for expected in ["docker_hosts.d1.registry_mirrors[0]: must be an https URL",
                     "docker_hosts.d1.registry_mirrors[1]: must be https://HOST or https://HOST:PORT",
                     "docker_hosts.d1.registry_mirrors[2]: must be a non-empty string",
                     "docker_hosts.d1.registry_cas.198.18.3.30: the key must be HOST:PORT",
                     "docker_hosts.d1.registry_cas.r.lan:5000: cannot read",
                     "docker_hosts.d1.registry_cas.r.lan:5001: " ,
                     "is not a PEM certificate",
                     "docker_hosts.d1.registry_cas.r.lan:5002: ", "holds a private key"]:
        assert expected in msg, msg
    assert "7 problem(s)" in msg


def test_inventory_refuses_a_mapping_of_mirrors(tmp_path):
    with pytest.raises(InputError, match=r"registry_mirrors: must be a list of https URLs"):
        write_inv(tmp_path, "    registry_mirrors: {a: b}\n")


# -- planner -------------------------------------------------------------------------------------

def test_fresh_machine_env_gets_mirrors_cas_and_logins():
    facts = done_facts(GP)  # a converged host from before registries were configured
    plan = pm.plan_host(CA_HOST, [GP], NAS, facts, {GP.name: login()})
    steps = changes(plan)
    uploads = {s.path: s for s in steps if isinstance(s, Upload)}
    assert json.loads(uploads[pm.daemon_json_path(GP)].content)["registry-mirrors"] == [MIRROR]
    assert uploads[f"{GP.home}/.config/docker/certs.d/{REG}/ca.crt"].content == PEM
    assert uploads[f"{GP.home}/.config/docker/certs.d/{REG}/ca.crt"].as_user == GP.user
    cfg = uploads[f"{GP.home}/.docker/config.json"]
    assert cfg.mode == 0o600 and cfg.as_user == GP.user and cfg.secret
    assert json.loads(cfg.content) == {"auths": {REG: {"auth": b64(f"builder:{PASSWORD}")}}}
    # a mirror change alone: reload (SIGHUP), never a restart
    argvs = [s.argv for s in steps if isinstance(s, Run)]
    assert ("systemctl", "--user", "reload", "docker.service") in argvs
    assert not any("restart" in a for a in argvs)


def test_second_run_plans_nothing():
    plan = pm.plan_host(CA_HOST, [GP], NAS, converged(logins=login()), {GP.name: login()})
    assert plan.converged, [s.desc for s in changes(plan)]


def test_a_pool_change_with_mirrors_restarts():
    facts = converged()
    other = replace(CA_HOST, address_pools=(("198.19.200.0/21", 24),))
    argvs = [s.argv for s in changes(pm.plan_host(other, [GP], NAS, facts, {})) if isinstance(s, Run)]
    assert ("systemctl", "--user", "restart", "docker.service") in argvs
    assert ("systemctl", "--user", "reload", "docker.service") not in argvs


def test_a_new_ca_needs_no_reload_or_restart():
    facts = converged()
    facts[f"me:{GP.name}"]["access"]["cas"].pop(REG)
    steps = changes(pm.plan_host(CA_HOST, [GP], NAS, facts, {}))
    assert [type(s).__name__ for s in steps] == ["Run", "Upload"]
    assert steps[0].argv[:2] == ("mkdir", "-p")


def test_logout_removes_the_auth_and_keeps_other_keys():
    facts = converged(logins=login())
    old = facts[f"me:{GP.name}"]["access"]["dockercfg"].reveal()
    data = json.loads(old)
    data["credHelpers"] = {}
    facts[f"me:{GP.name}"]["access"]["dockercfg"] = secrets.Secret(json.dumps(data))
    [up] = [s for s in changes(pm.plan_host(CA_HOST, [GP], NAS, facts, {GP.name: {}})) if isinstance(s, Upload)]
    assert json.loads(up.content) == {"credHelpers": {}}


def test_logins_not_read_leave_config_json_alone():
    facts = converged(logins=login())
    assert pm.plan_host(CA_HOST, [GP], NAS, facts, None).converged


def test_status_reports_drift_of_registry_files():
    facts = converged()
    facts[f"me:{GP.name}"]["access"]["cas"][REG] = PEM.replace("fake", "other")
    part = next(p for p in pm.assess_host(CA_HOST, [GP], NAS, facts, {}).parts[GP.name] if p.name == "registry")
    assert part.state == "drifted" and f"CA for {REG} differs" in part.detail


def test_host_without_registry_settings_plans_no_registry_step():
    plan = pm.plan_host(HOST, [GP], NAS, done_facts(GP), {GP.name: {}})
    assert plan.converged and not any("registry" in s.desc for s in plan.steps)


def test_probe_parses_cas_and_config():
    out = f"linger=1\ndaemon_json=-\ndropin=-\nca:{REG}={b64(PEM)}\ndockercfg={b64('{}')}\n"
    access = pm.parse_machine(0, out)["access"]
    assert access["cas"] == {REG: PEM} and access["dockercfg"].reveal() == "{}"
    assert "certs.d/*/ca.crt" in pm.machine_fact_command(GP) and ".docker/config.json" in pm.machine_fact_command(GP)


# -- secrets and masking ---------------------------------------------------------------------------

def test_a_secret_is_masked_in_str_repr_format_and_json():
    s = secrets.Secret("correct-horse-battery")
    assert str(s) == repr(s) == f"{s}" == "[secret]"
    assert json_dump({"v": s, "t": "x correct-horse-battery y"}) == '{\n  "v": "[secret]",\n  "t": "x [secret] y"\n}'
    assert "correct-horse" not in repr({"a": [s]})


def test_the_rendered_plan_diff_and_json_never_hold_the_password():
    plan = pm.plan_host(CA_HOST, [GP], NAS, done_facts(GP), {GP.name: login()})
    buf = io.StringIO()
    from tinsnip.engine import Engine

    engine = Engine.__new__(Engine)
    engine.options = Options(dry_run=True, verbose=True)
    engine.out = Output([], stream=buf)
    engine.show(plan)
    text = buf.getvalue()
    encoded = b64(f"builder:{PASSWORD}")
    assert "config.json" in text and "[content not shown: it holds secrets]" in text
    described = json.dumps([s.describe() for s in plan.steps])
    for blob in (text, described, repr(plan), json_dump(plan.data)):
        assert PASSWORD not in blob and encoded not in blob
    # and a step's output that echoes it is masked
    assert engine.out.mask(f"auth {encoded} pw {PASSWORD}") == "auth [secret] pw [secret]"


def test_secret_upload_on_the_nas_is_owner_only():
    facts = {f"secrets:{GP.name}": {"dir": None, "files": {}}}
    steps = secrets.plan_set(facts, GP, "DB_PASSWORD", secrets.Secret("s3cr3t-value-1"))
    assert steps[0].argv == ("install", "-d", "-m", "0700", "-o", str(GP.uid), "-g", str(GP.gid),
                             f"{GP.nas_path}/.machine/secrets")
    up = steps[1]
    assert up.path == f"{GP.nas_path}/.machine/secrets/DB_PASSWORD" and up.mode == 0o600
    assert up.owner == f"{GP.uid}:{GP.gid}" and up.secret and "s3cr3t" not in up.diff() + repr(up)
    done = {f"secrets:{GP.name}": {"dir": f"{GP.uid}:{GP.gid}:700", "files": {
        "DB_PASSWORD": {"stat": f"{GP.uid}:{GP.gid}:600", "value": secrets.Secret("s3cr3t-value-1")}}}}
    assert all(isinstance(s, Noop) for s in secrets.plan_set(done, GP, "DB_PASSWORD", secrets.Secret("s3cr3t-value-1")))
    assert isinstance(secrets.plan_unset(done, GP, "DB_PASSWORD")[0], Run)
    assert isinstance(secrets.plan_unset(facts, GP, "DB_PASSWORD")[0], Noop)


def test_the_nas_probe_parses_names_values_and_logins():
    out = (f"dir {GP.uid}:{GP.gid}:700\n{GP.uid}:{GP.gid}:600|DB_PASSWORD\n{b64('pw-from-nas')}\n"
           f"{GP.uid}:{GP.gid}:600|registry@{REG}\n{b64(json.dumps({'username': 'u', 'password': 'pw-login-1'}))}\n")
    fact = secrets.secrets_fact(GP.name, GP.nas_path)
    facts = {fact.name: fact(0, out)}
    assert secrets.names(facts, GP) == ["DB_PASSWORD"]
    assert secrets.logins(facts, GP)[REG][0] == "u" and secrets.logins(facts, GP)[REG][1].reveal() == "pw-login-1"
    deploy = secrets.for_deploy(facts, GP, environ={"TINSNIP_SECRET_API_KEY": "from-ci-12345", "OTHER": "x"})
    assert {k: v.reveal() for k, v in deploy.items()} == {"API_KEY": "from-ci-12345", "DB_PASSWORD": "pw-from-nas"}
    assert secrets.secrets_fact(GP.name, GP.nas_path, values=False).command.count("base64") == 0


@pytest.mark.parametrize("value,message", [("", "is empty"), ("short", "shorter than"), ("a\nb-long-value", "more than one line")])
def test_bad_values_are_refused(value, message):
    with pytest.raises(InputError, match=message):
        secrets.check_value(value, "the value")


@pytest.mark.parametrize("name", ["db_password", "1X", "A-B", "registry@x:1", ""])
def test_bad_names_are_refused(name):
    with pytest.raises(InputError, match="secret name"):
        secrets.check_name(name)


def test_value_from_stdin_else_environment():
    assert secrets.read_value(io.StringIO("piped-value-1\n"), {}, "TINSNIP_SECRET_X", "x").reveal() == "piped-value-1"
    assert secrets.read_value(io.StringIO(""), {"TINSNIP_SECRET_X": "env-value-12"}, "TINSNIP_SECRET_X", "x").reveal() == "env-value-12"
    with pytest.raises(InputError, match="TINSNIP_SECRET_X"):
        secrets.read_value(io.StringIO(""), {}, "TINSNIP_SECRET_X", "x")
