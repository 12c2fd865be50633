"""Registry logins and per machine-env secrets, on plain facts: what is planned, that a second run plans
nothing, and that no secret value reaches a plan, diff, JSON or message."""

import io
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tinsnip import secrets
from tinsnip.engine import Engine, Options, Output, json_dump
from tinsnip.errors import InputError
from tinsnip.plans import machine as pm
from tinsnip.plans import registry_login as rl
from tinsnip.steps import Noop, Run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_plans_machine import GP, HOST, NAS, b64, done_facts  # noqa: E402

PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
PASSWORD = "hunter2-very-secret-pw"
REG = "198.18.3.30:5001"
REG_HOST = replace(HOST, registry_mirrors=("https://198.18.3.30:5000",), registry_cas=((REG, PEM),))


def login():
    return {REG: ("builder", secrets.Secret(PASSWORD))}


def converged(logins=None):
    """Facts of a host on which the logins are already in place."""
    facts = done_facts(GP)
    cfg = rl.docker_config(None, logins) if logins else None
    facts[f"me:{GP.name}"]["dockercfg"] = secrets.Secret(cfg) if cfg else None
    return facts


def changes(plan):
    return [s for s in plan.steps if not isinstance(s, Noop)]


def test_a_login_is_written_to_config_json_owner_only():
    plan = pm.plan_host(HOST, [GP], NAS, done_facts(GP), {GP.name: login()})
    [mkdir, cfg] = changes(plan)
    assert mkdir.argv == ("mkdir", "-p", "-m", "0700", f"{GP.home}/.docker") and mkdir.as_user == GP.user
    assert cfg.path == f"{GP.home}/.docker/config.json" and cfg.mode == 0o600 and cfg.as_user == GP.user
    assert cfg.secret
    assert json.loads(cfg.content) == {"auths": {REG: {"auth": b64(f"builder:{PASSWORD}")}}}


def test_second_run_plans_nothing():
    plan = pm.plan_host(HOST, [GP], NAS, converged(login()), {GP.name: login()})
    assert plan.converged, [s.desc for s in changes(plan)]
    assert f"{GP.name}: logged in to {REG}" in [s.desc for s in plan.steps]


def test_logout_removes_the_auth_and_keeps_other_keys():
    facts = converged(login())
    data = json.loads(facts[f"me:{GP.name}"]["dockercfg"].reveal())
    data["credHelpers"] = {}
    facts[f"me:{GP.name}"]["dockercfg"] = secrets.Secret(json.dumps(data))
    [_, up] = changes(pm.plan_host(HOST, [GP], NAS, facts, {GP.name: {}}))
    assert json.loads(up.content) == {"credHelpers": {}}


def test_logins_not_read_leave_config_json_alone():
    assert pm.plan_host(HOST, [GP], NAS, converged(login()), None).converged
    assert pm.plan_host(HOST, [GP], NAS, done_facts(GP), {GP.name: {}}).converged


def test_status_reports_a_changed_password_as_drift():
    facts = converged({REG: ("builder", secrets.Secret("an-older-password"))})
    part = next(p for p in pm.assess_host(HOST, [GP], NAS, facts, {GP.name: login()}).parts[GP.name] if p.name == "logins")
    assert part.state == "drifted" and "differ" in part.detail


def test_probe_reads_config_json():
    out = f"linger=1\ndaemon_json=-\ndropin=-\ndockercfg={b64('{}')}\n"
    assert pm.parse_machine(0, out)["dockercfg"].reveal() == "{}"
    assert ".docker/config.json" in pm.machine_fact_command(GP)


# -- secrets and masking ---------------------------------------------------------------------------

def test_a_secret_is_masked_in_str_repr_format_and_json():
    s = secrets.Secret("correct-horse-battery")
    assert str(s) == repr(s) == f"{s}" == "[secret]"
    assert json_dump({"v": s, "t": "x correct-horse-battery y"}) == '{\n  "v": "[secret]",\n  "t": "x [secret] y"\n}'
    assert "correct-horse" not in repr({"a": [s]})


def test_the_rendered_plan_diff_and_json_never_hold_the_password():
    plan = pm.plan_host(REG_HOST, [GP], NAS, done_facts(GP), {GP.name: login()})
    buf = io.StringIO()
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
    # a step's output that echoes either form is masked
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


def test_doctor_checks_each_registry_once_with_the_inventory_ca():
    from tinsnip.plans import doctor

    host = replace(HOST, registry_mirrors=("https://198.18.3.30:5000", "https://mirror.lan"),
                   registry_cas=(("198.18.3.30:5000", PEM), (REG, PEM)))
    checks = doctor.registry_checks(host)
    assert [c.name for c in checks] == ["registry 198.18.3.30:5000", f"registry {REG}", "registry mirror.lan:443"]
    assert '--cacert "$ca"' in checks[0].command and "MIIBfake" in checks[0].command
    assert "--cacert" not in checks[2].command and "registry_cas" in checks[2].fix
    assert checks[1].judge(0, " 401") == (True, f"https://{REG}/v2/ answers over TLS (HTTP 401, login needed)")
    ok, detail = checks[0].judge(60, "curl: (60) SSL certificate problem: unable to get local issuer certificate\nmore\n 000")
    assert not ok and detail.startswith("curl: (60) SSL certificate problem")
    assert doctor.registry_checks(HOST) == []
