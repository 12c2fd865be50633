"""The pure parts of bench/run.py: counting, parsing Ansible's recap, the README table, placement."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_sshd_log_counts_connections_and_sessions(bench):
    log = """Connection from 198.18.5.1 port 40000 on 198.18.5.20 port 22 rdomain ""
Accepted publickey for root from 198.18.5.1 port 40000 ssh2: ED25519 SHA256:abc
User child is on pid 123
Starting session: command for root from 198.18.5.1 port 40000 id 0
Starting session: command for root from 198.18.5.1 port 40000 id 1
Close session: user root from 198.18.5.1 port 40000 id 0
"""
    assert bench.count_sshd(log) == {"connections": 1, "round_trips": 2}
    assert bench.count_sshd("") == {"connections": 0, "round_trips": 0}


def test_parse_recap(bench):
    out = """PLAY RECAP *********************************************************************
docker1                    : ok=14   changed=13   unreachable=0    failed=0    skipped=1    rescued=0    ignored=0
nas                        : ok=5    changed=5    unreachable=0    failed=0    skipped=0    rescued=0    ignored=0
"""
    recap = bench.parse_recap(out)
    assert recap["docker1"] == {"ok": 14, "changed": 13, "unreachable": 0, "failed": 0}
    assert recap["nas"]["changed"] == 5


def test_tinsnip_counts_from_json(bench):
    summary = {"hosts": {"nas": {"round_trips": 1, "connections": 1}, "docker1": {"round_trips": 2, "connections": 1}},
               "totals": {"changed": 0}}
    assert bench.tinsnip_counts(summary) == ({"nas": 1, "docker1": 2}, {"nas": 1, "docker1": 1}, 0)


def test_median_and_ratio(bench):
    assert bench.median([3.0, 1.0, 2.0]) == 2.0
    assert bench.median([]) is None
    assert bench.ratio(12.0, 1.5) == 8.0
    assert bench.ratio(None, 1.5) is None
    assert bench.ratio(3.0, None) is None


def test_twenty_machine_envs_split_evenly_with_reserved_names(bench):
    from tinsnip import smep

    placement = bench.placement_20()
    assert len(placement) == 20 and len(set(placement)) == 20
    assert sorted(list(placement.values()).count(h) for h in bench.DOCKER_HOSTS) == [10, 10]
    for name in placement:
        machine, env = smep.parse_machine_env(name)
        assert machine in smep.RESERVED_MACHINES  # numbers need no registry, so both tools agree


def test_machine_envs_carry_smep_numbers(bench):
    [m] = bench.machine_envs(["gazette-test"], {"gazette-test": "docker2"}, {"docker2": "198.18.5.21"})
    assert m["uid"] == 10110 and m["nas_path"] == "/volume1/dynamicalsystem/gazette/test"
    assert m["client"] == "198.18.5.21" and m["subid_start"] == 1_000_000_000 + 110 * 65536


def test_normalized_listing_ignores_order_and_spacing(bench):
    a = bench.normalize_listing("b  2\na 1\n\n")
    assert a == bench.normalize_listing("a 1\nb 2") == "a 1\nb 2\n"
    assert bench.digest(a) != bench.digest(bench.normalize_listing("a 1\nb 3"))


def test_table_and_readme_block(bench):
    results = {"scenarios": {
        "create_noop": {"tinsnip_s": 1.0, "ansible_s": 12.0, "ratio": 12.0, "round_trips": {"nas": 1, "docker1": 1},
                        "connections": {"nas": 1, "docker1": 1}, "ansible_round_trips": {"nas": 14}},
        "cli_list": {"tinsnip_s": 0.3, "floor_s": 0.25, "ansible_s": None, "ratio": None, "round_trips": {},
                     "connections": {}},
    }}
    tbl = bench.table(results)
    assert "| create_noop | 1.0 | 12.0 | 12.0× | docker1 1 · nas 1 |" in tbl
    assert "| cli_list | 0.3 (floor 0.25) | – | – |" in tbl
    text = bench.update_readme("# bench\n\nprose\n", tbl, "meta")
    again = bench.update_readme(text, "new table\n", "meta2")
    assert again.count(bench.TABLE_BEGIN) == 1 and "new table" in again and "create_noop" not in again
    assert again.startswith("# bench\n\nprose\n")
