"""doctor's checks: judgements on plain probe output, and every failure names a fix."""

from tinsnip.inventory import DockerHost, Nas
from tinsnip.plans import doctor as d

NAS = Nas(name="nas", address="198.18.3.10", user="admin", role="nas")
HOST = DockerHost(name="docker1", address="198.18.3.20", user="root")


def test_every_check_has_a_fix_and_a_unique_name():
    for checks in (d.nas_checks(NAS), d.docker_checks(HOST)):
        names = [c.name for c in checks]
        assert len(names) == len(set(names))
        assert all(c.fix for c in checks)
    names = {c.name for c in d.docker_checks(HOST)}
    assert {"systemd", "logind", "newuidmap", "newgidmap", "rootless-setuptool", "compose", "nfs-client",
            "flock"} <= names
    assert {"exportfs", "volume", "sudo"} <= {c.name for c in d.nas_checks(NAS)}


def test_compose_v1_is_refused_and_v2_accepted():
    assert d._compose(0, "Docker Compose version 2.26.1-4\n") == (True, "Docker Compose version 2.26.1-4")
    ok, detail = d._compose(0, "docker-compose version 1.29.2, build unknown\n")
    assert not ok and "v2" in detail
    assert d._compose(1, "docker: 'compose' is not a docker command.\n")[0] is False


def test_subid_band_blocked_by_a_foreign_entry():
    ok, detail = d._subids(0, "tadmin:100000:65536\ngazette-prod:1006553600:65536\n")
    assert ok
    ok, detail = d._subids(0, "bob:1000000000:5000\n")
    assert not ok and "bob:1000000000:5000" in detail


def test_report_attaches_fixes_to_failures_only():
    checks = d.docker_checks(HOST)
    facts = {f"check:{c.name}": (True, "fine") for c in checks}
    facts["check:newuidmap"] = (False, "/usr/bin/newuidmap missing or not an executable file")
    rows = d.report(HOST, checks, facts)
    bad = [r for r in rows if not r["ok"]]
    assert [r["check"] for r in bad] == ["newuidmap"] and "uidmap" in bad[0]["fix"]
    assert all("fix" not in r for r in rows if r["ok"])
