"""SMEP numbers and names: SPEC §2–4, every worked example and the rules for bad values."""

import pytest

from tinsnip import smep
from tinsnip.errors import InputError

WORKED = [  # (machine, env, uid) in the default sheet, from SPEC §2
    ("station", "prod", 10000),
    ("station", "test", 10010),
    ("gazette", "prod", 10100),
    ("gazette", "test", 10110),
    ("gazette", "dev", 10120),
    ("lldap", "prod", 10200),
    ("lldap", "test", 10210),
    ("gateway", "prod", 10300),
]


@pytest.mark.parametrize("machine,env,uid", WORKED)
def test_worked_examples(machine, env, uid):
    m = smep.MachineEnv("dynamicalsystem", 1, machine, smep.RESERVED_MACHINES[machine], env)
    assert m.uid == m.gid == uid
    assert m.ports == list(range(uid, uid + 10))
    assert m.user == f"{machine}-{env}"
    assert m.nas_path == f"/volume1/dynamicalsystem/{machine}/{env}"
    assert m.mount == f"/mnt/{machine}-{env}"
    assert m.docker_host == f"unix:///run/user/{uid}/docker.sock"


def test_lldap_test_ports():
    m = smep.MachineEnv("dynamicalsystem", 1, "lldap", 2, "test")
    assert (m.ports[0], m.ports[-1]) == (10210, 10219)


def test_env_numbers_follow_the_allocation_table():
    assert list(smep.ENVS.items()) == [("prod", 0), ("test", 1), ("dev", 2), ("staging", 3), ("demo", 4),
                                       ("qa", 5), ("uat", 6), ("preview", 7), ("canary", 8), ("local", 9)]


@pytest.mark.parametrize("sheet,preferred", [("dynamicalsystem", 1), ("acmecorp", 3), ("mycompany", 7)])
def test_sheet_hash_rule(sheet, preferred):
    assert smep.preferred_sheet_number(sheet) == preferred


def test_sheet_allocation_prefers_hash_then_lowest_free_and_never_shares():
    taken = {"dynamicalsystem": 1}
    assert smep.allocate_sheet_number("acmecorp", taken) == 3
    taken["acmecorp"] = 3
    assert smep.allocate_sheet_number("mycompany", taken) == 2  # preferred 7 is over 5
    taken.update({"mycompany": 2, "a": 4, "b": 5})
    with pytest.raises(InputError, match="no free sheet number"):
        smep.allocate_sheet_number("sixth", taken)
    assert smep.allocate_sheet_number("acmecorp", taken) == 3  # a number stays with its sheet
    with pytest.raises(InputError, match="taken by sheet 'acmecorp'"):
        smep.allocate_sheet_number("new", {"acmecorp": 3}, pinned=3)


def test_machine_allocation():
    assert smep.allocate_machine_number("gazette", {}) == 1
    assert smep.allocate_machine_number("homelab", {}) == 4
    assert smep.allocate_machine_number("next", {"homelab": 4, "other": 6}) == 5
    assert smep.allocate_machine_number("homelab", {"homelab": 4}) == 4
    with pytest.raises(InputError, match="taken by 'homelab'"):
        smep.allocate_machine_number("new", {"homelab": 4}, pinned=4)
    with pytest.raises(InputError, match="taken by 'lldap'"):
        smep.allocate_machine_number("new", {}, pinned=2)
    with pytest.raises(InputError, match="reserved"):
        smep.allocate_machine_number("gazette", {}, pinned=7)
    full = {f"m{i}": i for i in range(4, 100)}
    with pytest.raises(InputError, match="no free machine number"):
        smep.allocate_machine_number("one-more", full)


def test_subordinate_ids_are_deterministic_and_disjoint():
    a = smep.MachineEnv("dynamicalsystem", 1, "gazette", 1, "prod")
    b = smep.MachineEnv("dynamicalsystem", 1, "gazette", 1, "test")
    last = smep.MachineEnv("dynamicalsystem", 5, "m", 99, "local")
    assert a.subid_start == 1_000_000_000 + 100 * 65536
    assert b.subid_start - a.subid_start >= smep.SUBID_COUNT
    assert last.subid_start + smep.SUBID_COUNT <= 2**32


BAD_NAMES = ["", "Gazette", "gazette;id", "$(id)", "`id`", "a b", "-lead", "trail-", "dou--ble", "1abc",
             "ga/zette", "..", "/etc", "gaz\nette", "gazеtte", "x" * 33, "q'uote", 'q"uote', "a_b", "ünï"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_state_the_rule(name):
    with pytest.raises(InputError) as err:
        smep.check_name(name, "machine")
    assert err.value.code == 2
    assert "lowercase letters" in str(err.value) or "at most 32" in str(err.value)


@pytest.mark.parametrize("env", ["", "production", "PROD", "prod ", "p;rod", "10"])
def test_unknown_env_lists_the_known_ones(env):
    with pytest.raises(InputError, match=r"prod \(0\), test \(1\)"):
        smep.check_env(env)


@pytest.mark.parametrize("value", ["100", "-1", "abc", "1e2", "٣", "", "4.5"])
def test_machine_number_out_of_range(value):
    with pytest.raises(InputError, match="0 to 99"):
        smep.check_machine_number(value)


@pytest.mark.parametrize("value", ["6", "9", "0"])
def test_sheet_past_five_is_refused(value):
    with pytest.raises(InputError):
        smep.check_sheet_number(value)


def test_user_name_limit():
    smep.user_name("a" * 26, "prod")  # 31 characters
    with pytest.raises(InputError, match="at most 32"):
        smep.user_name("a" * 28, "staging")


def test_info_has_the_json_keys_spec_lists():
    info = smep.MachineEnv("dynamicalsystem", 1, "gazette", 1, "test").info()
    for key in ("sheet", "sheet_number", "machine", "machine_number", "env", "env_number", "uid", "gid",
                "ports", "user", "nas_path", "mount"):
        assert key in info
    assert info["uid"] == 10110 and info["ports"] == list(range(10110, 10120))
