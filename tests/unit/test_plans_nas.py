"""The NAS planner: step lists for given facts, the converged case, removal, status. No SSH."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinsnip import exports as ex
from tinsnip.config import Settings
from tinsnip.errors import InputError, RemoteError
from tinsnip.inventory import DockerHost, Inventory, Nas
from tinsnip.plans import nas
from tinsnip.plans import registry as reg
from tinsnip.smep import MachineEnv
from tinsnip.steps import Noop, Run, Upload, sha256

VOL = "/volume1"
SHEET = "dynamicalsystem"
NAS_ADDR = "198.18.0.10"
GAZ = MachineEnv(SHEET, 1, "gazette", 1, "prod", VOL)
STATION = reg.tree_paths("/volume1/dynamicalsystem/station/prod")
FOREIGN = "# DSM\n/volume1/photo\t192.168.1.5(ro)\n"


def settings():
    inv = Inventory(Path("/x/hosts.yaml"), SHEET, Nas(name="nas", address=NAS_ADDR, user="admin", role="nas"),
                    {"docker1": DockerHost(name="docker1", address="198.18.0.20", user="root", nfs_client="198.18.0.20")},
                    {"gazette-prod": "docker1"})
    return Settings(inv, SHEET, {})


def tree(m, ok=True):
    t = {p: ("directory", m.uid, m.gid, 0o750) for p in reg.tree_paths(m.nas_path)} if ok else {}
    if ok:
        t[nas.machine_env_file(m.nas_path)] = ("regular file", m.uid, m.gid, 0o640)
    return t


def converged_facts():
    exports_text = FOREIGN + ex.marker(f"{SHEET}/gazette-prod") + ex.render_line(GAZ.nas_path, "198.18.0.20", 10100)
    return {
        "reg:sheets": "dynamicalsystem=1\n", "reg:machines": "gazette=01\n",
        "tree:station:dynamicalsystem": {p: ("directory", 10000, 10000, 0o750) for p in STATION},
        "exports": exports_text,
        "active": f"{GAZ.nas_path}\n\t\t198.18.0.20(sync,wdelay,rw,all_squash)\n",
        "tree:gazette-prod": tree(GAZ),
        "menv:gazette-prod": nas.machine_env_text(GAZ, NAS_ADDR),
    }


def fresh_facts():
    return {"reg:sheets": None, "reg:machines": None, "tree:station:dynamicalsystem": {},
            "exports": FOREIGN, "active": "", "tree:gazette-prod": {}, "menv:gazette-prod": None}


def plan(f, targets=(("gazette", "prod", ["198.18.0.20"]),), **kw):
    return nas.plan_setup(f, VOL, SHEET, NAS_ADDR, nas.check_targets(targets), **kw)


def test_job_facts_are_the_ones_the_planner_reads():
    job = nas.nas_job(settings(), [("gazette", "prod", ["198.18.0.20"])])
    assert {f.name for f in job.facts} == set(fresh_facts())
    assert job.host.name == "nas"
    p = job.plan(converged_facts())
    assert p.converged


def test_converged_plans_only_noops_and_carries_machine_envs():
    p = plan(converged_facts())
    assert all(isinstance(s, Noop) for s in p.steps), [s.desc for s in p.changes]
    assert p.data["machine_envs"] == {"gazette-prod": GAZ}


def test_fresh_nas_gets_every_step_in_order():
    p = plan(fresh_facts())
    kinds = [(type(s).__name__, getattr(s, "path", None) or s.argv[0]) for s in p.changes]
    assert kinds == [
        ("Run", "mkdir"), ("Run", "chown"), ("Run", "chmod"),                   # station tree
        ("Upload", "/volume1/dynamicalsystem/station/prod/data/sheets"),
        ("Upload", "/volume1/dynamicalsystem/station/prod/data/machines"),
        ("Run", "mkdir"), ("Run", "chown"), ("Run", "chmod"),                   # gazette-prod tree
        ("Upload", "/etc/exports"),
        ("Upload", "/volume1/dynamicalsystem/gazette/prod/.machine/machine.env"),
    ]
    tree_runs = [s for s in p.changes if isinstance(s, Run)][3:]
    assert tree_runs[1].argv == ("chown", "-h", "10100:10100", *reg.tree_paths(GAZ.nas_path))
    assert "/volume1/dynamicalsystem/gazette" not in tree_runs[1].argv  # parents are never chowned
    exp = next(s for s in p.changes if isinstance(s, Upload) and s.path == "/etc/exports")
    assert exp.backup and exp.then == ("exportfs", "-ra") and exp.expect == sha256(FOREIGN)
    assert exp.content.startswith(FOREIGN)
    assert exp.content.endswith("anonuid=10100,anongid=10100)\n")
    menv = p.changes[-1]
    assert menv.mode == 0o640 and menv.owner == "10100:10100"
    assert "TIN_SERVICE_UID=10100\n" in menv.content and f"TIN_NAS_HOST={NAS_ADDR}\n" in menv.content


def test_many_targets_one_exports_write():
    f = fresh_facts()
    f.update({"tree:web-test": {}, "menv:web-test": None})
    p = plan(f, (("gazette", "prod", ["198.18.0.20"]), ("web", "test", ["198.18.0.21"])))
    assert sum(1 for s in p.changes if isinstance(s, Upload) and s.path == "/etc/exports") == 1
    assert p.data["machine_envs"]["web-test"].uid == 10410


def test_line_present_but_inactive_runs_exportfs_only():
    f = converged_facts()
    f["active"] = ""
    [step] = plan(f).changes
    assert isinstance(step, Run) and step.argv == ("exportfs", "-ra")


def test_hand_edited_line_and_wrong_mode_are_repaired():
    f = converged_facts()
    f["exports"] = f["exports"].replace("all_squash,", "")
    f["tree:gazette-prod"] = {**tree(GAZ), GAZ.nas_path + "/data": ("directory", 0, 0, 0o755)}
    changes = plan(f).changes
    assert [type(s).__name__ for s in changes] == ["Run", "Run", "Run", "Upload"]
    assert "changed" in changes[-1].desc


def test_pinned_number_taken_is_refused():
    f = converged_facts()
    with pytest.raises(InputError, match="taken by 'gazette'"):
        plan(f, (("web", "prod", ["198.18.0.20"]),), pins={"web": 1})


@pytest.mark.parametrize("targets", [
    [("Bad", "prod", ["1.2.3.4"])], [("web", "nope", ["1.2.3.4"])], [("web", "prod", ["*"])],
    [("web", "prod", ["a b"])], [("web", "prod", ["h(rw)"])],
])
def test_bad_targets_are_refused_before_any_connection(targets):
    with pytest.raises(InputError):
        nas.nas_job(settings(), targets)


def remove_facts(exports_text, real):
    return {"exports": exports_text, "realpath:gazette-prod": real}


def test_remove_drops_lines_and_keeps_data():
    f = converged_facts()
    p = nas.plan_remove(remove_facts(f["exports"], GAZ.nas_path), VOL, SHEET, "gazette", "prod", ["198.18.0.20"], False)
    up = p.changes[0]
    assert isinstance(up, Upload) and up.content == FOREIGN and up.then == ("exportfs", "-ra")
    assert len(p.changes) == 1
    again = nas.plan_remove(remove_facts(FOREIGN, GAZ.nas_path), VOL, SHEET, "gazette", "prod", [], False)
    assert again.converged


def test_remove_with_delete_data_never_follows_a_symlink():
    p = nas.plan_remove(remove_facts(FOREIGN, GAZ.nas_path), VOL, SHEET, "gazette", "prod", [], True)
    assert p.changes[0].argv == ("rm", "-rf", "--", GAZ.nas_path)
    with pytest.raises(RemoteError, match="resolves to /etc"):
        nas.plan_remove(remove_facts(FOREIGN, "/etc"), VOL, SHEET, "gazette", "prod", [], True)
    assert nas.plan_remove(remove_facts(FOREIGN, None), VOL, SHEET, "gazette", "prod", [], True).converged


def test_status_reports_drift_with_the_fix():
    f = converged_facts()
    trees = {**tree(GAZ)}
    facts = {"reg:sheets": f["reg:sheets"], "reg:machines": f["reg:machines"], "exports": f["exports"],
             "active": f["active"], "trees": trees}
    [ok] = nas.status(facts, VOL, SHEET, None, {"gazette-prod": ("198.18.0.20",)})
    assert ok["ok"] and ok["uid"] == 10100 and ok["fix"] is None
    facts["exports"] = FOREIGN + ex.marker(f"{SHEET}/gazette-prod")
    facts["active"] = ""
    [bad] = nas.status(facts, VOL, SHEET, None, {"gazette-prod": ("198.18.0.20",)})
    assert not bad["ok"]
    assert "export for 198.18.0.20 missing" in bad["problems"]
    assert bad["fix"] == "tin nas.setup --service gazette --env prod --sheet dynamicalsystem"
