"""hosts.yaml: the example validates; a broken copy lists every problem with its key path."""

from pathlib import Path

import pytest
import yaml

from tinsnip import inventory
from tinsnip.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


def test_example_inventory_validates():
    inv = inventory.load(ROOT / "hosts.yaml")
    assert inv.sheet == "dynamicalsystem"
    assert inv.nas.volume == "/volume1" and inv.nas.user == "admin"
    assert set(inv.docker_hosts) == {"docker1", "docker2"}
    assert inv.machines["gazette-prod"] == "docker1"
    assert inv.placement("lldap", "prod").name == "docker2"


def load_text(tmp_path, text):
    p = tmp_path / "hosts.yaml"
    p.write_text(text)
    return inventory.load(p)


def test_broken_copy_lists_all_problems_with_key_paths(tmp_path):
    text = (ROOT / "hosts.yaml").read_text()
    data = yaml.safe_load(text)
    data["nas"]["adress"] = data["nas"].pop("address")
    del data["docker_hosts"]["docker1"]["address"]
    data["docker_hosts"]["docker2"]["port"] = 70000
    data["docker_hosts"]["docker2"]["address_pools"] = [{"base": "10.0.0.0/33", "size": 24}]
    data["machines"]["gazette-prdo"] = "docker1"
    data["machines"]["lldap-test"] = "docker9"
    with pytest.raises(InputError) as err:
        load_text(tmp_path, yaml.safe_dump(data))
    message = str(err.value)
    assert err.value.code == 2
    for expected in [
        "nas.adress: unknown key (did you mean 'address'?)",
        "nas.address: required",
        "docker_hosts.docker1.address: required",
        "docker_hosts.docker2.port: must be a port number",
        "docker_hosts.docker2.address_pools[0].base: not a network",
        "machines.gazette-prdo: unknown environment 'prdo'",
        "machines.lldap-test: unknown Docker host 'docker9'",
    ]:
        assert expected in message, message
    assert "7 problem(s)" in message


def test_secrets_are_refused_with_where_they_belong(tmp_path):
    with pytest.raises(InputError, match=r"nas.sudo_password: secrets never go in hosts.yaml.*TINSNIP_NAS_SUDO_PASSWORD"):
        load_text(tmp_path, "nas: {address: 10.0.0.2, user: admin, sudo_password: x}\ndocker_hosts: {d1: {address: 10.0.0.3}}\n")


@pytest.mark.parametrize("text,expected", [
    ("nas: [1, 2\n", "not valid YAML at line"),
    ("- just a list\n", "must be a mapping"),
    ("", "nas: required"),
    ("nas: {address: 'a b', user: admin}\ndocker_hosts: {d1: {address: 10.0.0.3}}\n", "nas.address: must not contain spaces"),
    ("nas: {address: 10.0.0.2, user: admin, volume: relative}\ndocker_hosts: {d1: {address: 10.0.0.3}}\n", "nas.volume: must be an absolute path"),
    ("nas: {address: 10.0.0.2, user: admin}\ndocker_hosts: {Bad: {address: 10.0.0.3}}\n", "docker_hosts.Bad: invalid Docker host name"),
    ("nas: {address: 10.0.0.2, user: admin}\ndocker_hosts: {}\n", "name at least one Docker host"),
    ("nas: {address: 10.0.0.2, user: admin}\ndocker_hosts: {d1: {address: '$(reboot)'}}\n", "not an IP address or host name"),
    ("nas: {address: 10.0.0.2, user: admin}\ndocker_hosts: {d1: {address: 10.0.0.3}}\nmachines: {'x;id-prod': d1}\n", "invalid machine name"),
])
def test_broken_files(tmp_path, text, expected):
    with pytest.raises(InputError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")):
        load_text(tmp_path, text)


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(InputError, match="not found: pass --inventory"):
        inventory.load(tmp_path / "nope.yaml")


def test_relative_paths_are_relative_to_the_file(tmp_path):
    inv = load_text(tmp_path, "ssh: {key: k, known_hosts: kh}\nnas: {address: 10.0.0.2, user: admin}\n"
                              "docker_hosts: {d1: {address: 10.0.0.3, images: {'a/b:1': img/a.tar}}}\n")
    assert inv.ssh_key == tmp_path / "k" and inv.known_hosts == tmp_path / "kh"
    assert inv.docker_hosts["d1"].images == (("a/b:1", tmp_path / "img" / "a.tar"),)
    assert inv.docker_hosts["d1"].nfs_client == "10.0.0.3" and inv.docker_hosts["d1"].user == "root"
    assert inv.placement("x", "prod").name == "d1"  # the only Docker host


def test_ssh_key_survives_a_machines_section(tmp_path):
    inv = load_text(tmp_path, "ssh: {key: k}\nnas: {address: 10.0.0.2, user: admin}\n"
                              "docker_hosts: {d1: {address: 10.0.0.3}}\nmachines: {gazette-prod: d1}\n")
    assert inv.ssh_key == tmp_path / "k"
