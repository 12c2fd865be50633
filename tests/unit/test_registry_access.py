"""Registry mirrors and CAs per Docker host: the inventory keys, and what the machine planner writes."""

import json
from pathlib import Path

import pytest
import yaml

from tinsnip import inventory
from tinsnip.errors import InputError
from tinsnip.inventory import DockerHost
from tinsnip.plans import machine as pm
from tinsnip.plans import registry_access as ra
from tinsnip.smep import MachineEnv
from tinsnip.steps import Noop, Run, Upload

ROOT = Path(__file__).resolve().parents[2]
PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
GP = MachineEnv("dynamicalsystem", 1, "gazette", 1, "prod")
POOLS = (("198.19.104.0/21", 24),)


def with_keys(tmp_path, **keys):
    data = yaml.safe_load((ROOT / "hosts.yaml").read_text())
    data["docker_hosts"]["docker1"].update(keys)
    p = tmp_path / "hosts.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_mirrors_and_cas_are_read_relative_to_the_inventory(tmp_path):
    (tmp_path / "lab-ca.crt").write_text(PEM)
    inv = inventory.load(with_keys(tmp_path, registry_mirrors=["https://198.18.0.30:5000/"],
                                   registry_cas={"198.18.0.30:5000": "lab-ca.crt"}))
    h = inv.docker_hosts["docker1"]
    assert h.registry_mirrors == ("https://198.18.0.30:5000",)
    assert h.registry_cas == (("198.18.0.30:5000", PEM),)


@pytest.mark.parametrize("keys, path, words", [
    ({"registry_mirrors": ["http://plain:5000"]}, "registry_mirrors[0]", "https URL"),
    ({"registry_mirrors": "https://x:5000"}, "registry_mirrors", "list"),
    ({"registry_cas": {"no-port": "ca.crt"}}, "registry_cas.no-port", "HOST:PORT"),
    ({"registry_cas": {"r:5000": "missing.crt"}}, "registry_cas.r:5000", "cannot read"),
    ({"registry_cas": {"r:5000": "key.pem"}}, "registry_cas.r:5000", "not a PEM CA certificate"),
])
def test_bad_registry_keys_name_their_key_path(tmp_path, keys, path, words):
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n")
    with pytest.raises(InputError) as err:
        inventory.load(with_keys(tmp_path, **keys))
    assert f"docker_hosts.docker1.{path}" in str(err.value) and words in str(err.value)


def test_daemon_json_carries_pools_and_mirrors():
    host = DockerHost(name="d", address="a", user="root", registry_mirrors=("https://m:5000",), address_pools=POOLS)
    assert json.loads(pm.daemon_json(host)) == {
        "default-address-pools": [{"base": "198.19.104.0/21", "size": 24}], "registry-mirrors": ["https://m:5000"]}
    assert pm.daemon_json(DockerHost(name="d", address="a", user="root")) is None


def test_cas_go_to_the_users_certs_d_and_a_converged_file_is_left_alone():
    host = DockerHost(name="d", address="a", user="root", registry_cas=(("r:5000", PEM), ("r:5001", PEM)))
    state, _, steps = ra.assess(host, GP, {"cas:gazette-prod": [None, PEM]})
    uploads = [s for s in steps if isinstance(s, Upload)]
    assert state == "drifted" and [u.path for u in uploads] == ["/home/gazette-prod/.config/docker/certs.d/r:5000/ca.crt"]
    assert uploads[0].as_user == "gazette-prod" and uploads[0].content == PEM
    assert ra.assess(host, GP, {"cas:gazette-prod": [PEM, PEM]})[0] == "ok"
    fact = ra.facts(host, [GP])[0]
    assert fact("0", "-\n" + __import__("base64").b64encode(PEM.encode()).decode() + "\n") == [None, PEM]


def test_a_new_mirror_reloads_the_daemon_and_new_pools_restart_it():
    old_host = DockerHost(name="d", address="a", user="root", address_pools=POOLS)
    new_host = DockerHost(name="d", address="a", user="root", address_pools=POOLS, registry_mirrors=("https://m:5000",))
    mf = {"unit": "1", "daemon_json": pm.daemon_json(old_host), "dropin": pm.dropin(new_host), "active": "active",
          "enabled": "enabled", "info": "20.10 name=rootless,", "bridge": ""}
    steps = pm.docker_part(GP, new_host, mf, user_ready=True).steps
    argv = [s.argv for s in steps if isinstance(s, Run)]
    assert any(a[-2:] == ("reload", "docker.service") for a in argv)
    assert not any("restart" in a for a in argv)
    moved = DockerHost(name="d", address="a", user="root", address_pools=(("198.19.200.0/21", 24),), registry_mirrors=("https://m:5000",))
    mf["dropin"] = pm.dropin(moved)
    argv = [s.argv for s in pm.docker_part(GP, moved, mf, user_ready=True).steps if isinstance(s, Run)]
    assert any(a[-2:] == ("restart", "docker.service") for a in argv)
    assert not isinstance(steps[0], Noop)
