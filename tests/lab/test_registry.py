"""registry.* on the lab's real NAS: concurrent writers, sheet numbers, pins, malformed files,
dry-run, idempotence, removal guarded by storage, and machine.info reading from the registry."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from tinsnip import smep

pytestmark = pytest.mark.lab

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHEETS = "/volume1/dynamicalsystem/station/prod/data/sheets"
ACME = "/volume1/acmecorp/station/prod/data/machines"






def cat(lab, path):
    r = lab.root("nas", f"cat {path}")
    assert r.rc == 0, r.stderr
    return r.stdout


def test_sheet_add_gives_preferred_then_lowest_free(lab):
    before = {s["sheet"]: s["number"] for s in lab.tin_json("registry.sheets")["sheets"]}
    assert "acmecorp" not in before
    acme = lab.tin_json("registry.sheet-add", "--sheet", "acmecorp")
    assert acme["sheet_number"] == 3
    taken = set(before.values()) | {3} | ({1} if "dynamicalsystem" not in before else set())
    lowest = min(n for n in range(1, 6) if n not in taken)
    assert smep.preferred_sheet_number("mycompany") == 7
    my = lab.tin_json("registry.sheet-add", "--sheet", "mycompany")
    assert my["sheet_number"] == lowest
    listed = {s["sheet"]: s["number"] for s in lab.tin_json("registry.sheets")["sheets"]}
    assert listed["acmecorp"] == 3 and listed["mycompany"] == lowest and listed["dynamicalsystem"] == 1
    # again: nothing changes, the numbers stay
    assert lab.tin_json("registry.sheet-add", "--sheet", "acmecorp")["totals"]["changed"] == 0
    # a taken sheet number is refused, naming the holder
    r = lab.tin_checked("registry.sheet-add", "--sheet", "othercorp", "--number", "3", code=2)
    assert "taken by sheet 'acmecorp'" in r.stderr
    # the station of the default sheet holds the registry: station-prod's tree, root's readable files
    st = lab.root("nas", f"stat -c '%u:%g %a' /volume1/dynamicalsystem/station/prod/data {SHEETS}").stdout.split("\n")
    assert st[:2] == ["10000:10000 750", "0:0 644"]


def test_eight_concurrent_adds_get_04_to_11(lab):
    lab.tin_checked("registry.sheet-add", "--sheet", "acmecorp")
    names = [f"worker{i}" for i in range(1, 9)]
    env = {**os.environ, **lab.env}
    procs = [subprocess.Popen([sys.executable, "-m", "tinsnip", "registry.add", "--sheet", "acmecorp",
                               "--service", n, "--json"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for n in names]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    for rc, out, err in results:
        assert rc == 0, f"{out}\n{err}"
    numbers = sorted(json.loads(out)["number"] for _, out, _ in results)
    assert numbers == list(range(4, 12))

    text = cat(lab, ACME)
    entries = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(entries) == 8 and len(set(entries)) == 8
    assert {e.split("=")[0] for e in entries} == set(names)
    assert sorted(int(e.split("=")[1]) for e in entries) == list(range(4, 12))
    listed = lab.tin_json("registry.list", "--sheet", "acmecorp")["machines"]
    assert {m["machine"]: m["number"] for m in listed if m["machine"].startswith("worker")} == \
        {e.split("=")[0]: int(e.split("=")[1]) for e in entries}


def test_pinned_number_taken_is_refused_with_its_holder(lab):
    holder = next(line.split("=")[0] for line in cat(lab, ACME).splitlines() if line.endswith("=05"))
    r = lab.tin_checked("registry.add", "--sheet", "acmecorp", "--service", "latecomer", "--number", "05", code=2)
    assert f"taken by {holder!r}" in r.stderr
    assert "latecomer" not in cat(lab, ACME)
    pinned = lab.tin_json("registry.add", "--sheet", "acmecorp", "--service", "pinned", "--number", "42")
    assert pinned["number"] == 42 and "pinned=42\n" in cat(lab, ACME)


def test_dry_run_changes_nothing_and_a_second_add_changes_nothing(lab):
    before = hashlib.sha256(cat(lab, ACME).encode()).hexdigest()
    dry = lab.tin_json("registry.add", "--sheet", "acmecorp", "--service", "newcomer", "--dry-run")
    assert dry["dry_run"] and dry["totals"]["changed"] == 1
    assert hashlib.sha256(cat(lab, ACME).encode()).hexdigest() == before
    first = lab.tin_json("registry.add", "--sheet", "acmecorp", "--service", "newcomer")
    assert first["totals"]["changed"] == 1
    second = lab.tin_json("registry.add", "--sheet", "acmecorp", "--service", "newcomer")
    assert second["totals"]["changed"] == 0 and second["number"] == first["number"]


def test_hand_edited_comments_survive_and_a_malformed_line_is_reported(lab):
    original = cat(lab, ACME)
    edited = original + "# added by hand: keep me\n"
    assert lab.root("nas", f"cat >{ACME}", input=edited).rc == 0
    lab.tin_checked("registry.add", "--sheet", "acmecorp", "--service", "afterhand")
    now = cat(lab, ACME)
    assert now.startswith(edited) and "afterhand=" in now.removeprefix(edited)

    broken = now + "this line is broken\n"
    assert lab.root("nas", f"cat >{ACME}", input=broken).rc == 0
    line = broken.count("\n")
    r = lab.tin_checked("registry.list", "--sheet", "acmecorp", code=2)
    assert f"{ACME} line {line}" in r.stderr
    r = lab.tin_checked("registry.add", "--sheet", "acmecorp", "--service", "more", code=2)
    assert f"line {line}" in r.stderr
    assert cat(lab, ACME) == broken  # never rewritten around a line it cannot read
    assert lab.root("nas", f"cat >{ACME}", input=now).rc == 0


def test_remove_refuses_while_storage_exists(lab):
    lab.tin_checked("nas.setup", "--sheet", "acmecorp", "--service", "worker1", "--env", "prod", "--host", "docker1")
    r = lab.tin_checked("registry.remove", "--sheet", "acmecorp", "--service", "worker1", code=2)
    assert "storage on the NAS for worker1-prod" in r.stderr and "export lines" in r.stderr
    assert "worker1=" in cat(lab, ACME)
    # a machine with nothing left goes, and the rest of the file stays as it was
    before = cat(lab, ACME)
    lab.tin_checked("registry.remove", "--sheet", "acmecorp", "--service", "worker8")
    after = cat(lab, ACME)
    assert after == "".join(line for line in before.splitlines(keepends=True) if not line.startswith("worker8="))
    assert lab.tin_json("registry.remove", "--sheet", "acmecorp", "--service", "worker8")["totals"]["changed"] == 0


def test_machine_info_reads_numbers_from_the_registry(lab):
    number = int(next(line.split("=")[1] for line in cat(lab, ACME).splitlines() if line.startswith("worker3=")))
    info = lab.tin_json("machine.info", "--sheet", "acmecorp", "--service", "worker3", "--env", "test")
    assert info["source"] == "registry"
    assert info["sheet_number"] == 3 and info["machine_number"] == number
    assert info["uid"] == 30000 + number * 100 + 10
    r = lab.tin_checked("machine.info", "--sheet", "acmecorp", "--service", "unheard", "--env", "prod", code=2)
    assert "registry.add --service unheard" in r.stderr


def test_lock_is_free_and_names_its_last_holder(lab):
    data = lab.tin_json("registry.lock")
    assert data["state"] == "free"
    assert data["holder"] and "pid" in data["holder"] and data["age_seconds"] is not None


def test_held_lock_names_its_holder_and_a_killed_holder_leaves_no_lock(lab):
    hold = ("mkdir -p /run/lock; echo 'ann@laptop (registry.add) pid 4242 since 2026-01-01T00:00:00Z' "
            ">/var/lock/tinsnip.lock.holder; "
            "setsid flock -o /var/lock/tinsnip.lock sleep 60 </dev/null >/dev/null 2>&1 & echo $! >/tmp/holder.pid; sleep 0.5")
    assert lab.root("nas", hold).rc == 0
    try:
        data = lab.tin_json("registry.lock")
        assert data["state"] == "held" and data["holder"].startswith("ann@laptop (registry.add) pid 4242")
        assert data["age_seconds"] > 0
    finally:
        lab.root("nas", "kill -- -$(cat /tmp/holder.pid); rm -f /tmp/holder.pid")  # its process group
    # the kernel freed the lock with its holder: nothing stale is left to clear, and writers go on
    assert lab.tin_json("registry.lock")["state"] == "free"
    assert lab.tin_json("registry.add", "--sheet", "acmecorp", "--service", "afterlock")["ok"]
