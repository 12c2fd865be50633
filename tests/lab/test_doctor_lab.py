"""doctor on the lab: passes on healthy hosts, names the missing piece when one is taken away."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.lab


def test_doctor_passes_on_the_lab_in_one_round_trip_per_host(lab):
    r = lab.tin("doctor", "--json")
    data = json.loads(r.stdout)
    assert r.rc == 0 and data["ok"], r.stdout
    assert set(data["hosts"]) == {"nas", "docker1", "docker2"}
    assert all(h["round_trips"] == 1 and h["connections"] == 1 for h in data["hosts"].values())


def test_doctor_names_hidden_uidmap_and_its_fix(lab):
    assert lab.ssh("docker2", "mount --bind /dev/null /usr/bin/newuidmap").rc == 0
    try:
        r = lab.tin("doctor", "--host", "docker2", "--json")
        data = json.loads(r.stdout)
        bad = [c for c in data["hosts"]["docker2"]["checks"] if not c["ok"]]
        assert r.rc == 1 and [c["check"] for c in bad] == ["newuidmap"]
        assert "uidmap" in bad[0]["fix"]
        text = lab.tin("doctor", "--host", "docker2")
        assert text.rc == 1 and "FAIL newuidmap" in text.stdout and "fix: apt-get install uidmap" in text.stdout
    finally:
        lab.ssh("docker2", "umount /usr/bin/newuidmap")
    assert lab.tin("doctor", "--host", "docker2").rc == 0
