"""Registry files: parse and render keeping comments and order, allocation, malformed lines, lookup."""

from __future__ import annotations

import pytest

from tinsnip.errors import InputError
from tinsnip.plans import registry as reg
from tinsnip.steps import Noop, Run, Upload, sha256

VOL = "/volume1"
MPATH = "/volume1/dynamicalsystem/station/prod/data/machines"
SPATH = "/volume1/dynamicalsystem/station/prod/data/sheets"
HAND = "# hand-edited\n\ngazette=01   # the paper\nredis = 07\n\n# end\n"
GOOD_STATION = {p: ("directory", 10000, 10000, 0o750) for p in reg.tree_paths("/volume1/dynamicalsystem/station/prod")}


def facts(machines=None, sheets="dynamicalsystem=1\n", station=None, sheet="dynamicalsystem", other_station=None):
    f = {"reg:sheets": sheets, "reg:machines": machines,
         "tree:station:dynamicalsystem": GOOD_STATION if station is None else station}
    if sheet != "dynamicalsystem":
        f[f"tree:station:{sheet}"] = other_station or {}
    return f


def test_fact_names_match_the_real_facts():
    assert set(facts()) == {f.name for f in reg.registry_facts(VOL, "dynamicalsystem")}
    assert set(facts(sheet="acmecorp")) == {f.name for f in reg.registry_facts(VOL, "acmecorp")}


def test_paths():
    assert reg.machines_path(VOL, "acmecorp") == "/volume1/acmecorp/station/prod/data/machines"
    assert reg.sheets_path("/volume2/") == "/volume2/dynamicalsystem/station/prod/data/sheets"


def test_parse_keeps_comments_and_reads_entries():
    r = reg.parse("machines", MPATH, HAND)
    assert r.entries == {"gazette": 1, "redis": 7}
    assert r.lines == {"gazette": 3, "redis": 4}
    assert r.add("web", 4) == HAND + "web=04\n"
    assert r.remove("gazette") == "# hand-edited\n\nredis = 07\n\n# end\n"


def test_new_file_gets_a_header_and_a_missing_newline_is_added():
    assert reg.parse("sheets", SPATH, None).add("acmecorp", 3).endswith("\nacmecorp=3\n")
    assert reg.parse("machines", MPATH, "a=04").add("b", 5) == "a=04\nb=05\n"


@pytest.mark.parametrize("text,line,words", [
    ("gazette=01\nthis is not it\n", 2, "name=number"),
    ("# c\nGazette=05\n", 2, "invalid machine name"),
    ("a=04\nb=104\n", 2, "out of range"),
    ("a=04\na=05\n", 2, "listed twice"),
    ("a=04\nb=4\n", 2, "already held by 'a'"),
    ("gazette=05\n", 1, "reserved"),
    ("foo=02\n", 1, "reserved for 'lldap'"),
])
def test_malformed_lines_are_reported_with_their_line_number(text, line, words):
    with pytest.raises(InputError) as err:
        reg.parse("machines", MPATH, text)
    assert f"{MPATH} line {line}:" in str(err.value) and words in str(err.value)


def test_sheet_number_over_five_is_malformed():
    with pytest.raises(InputError, match="line 1: sheet number 6"):
        reg.parse("sheets", SPATH, "big=6\n")


def test_plan_allocates_lowest_free_and_appends_compare_and_swap():
    p = reg.plan(facts(machines=HAND), VOL, "dynamicalsystem", ["web", "gazette", "api"])
    assert p.numbers == {"web": 4, "gazette": 1, "api": 5}
    [up] = [s for s in p.steps if isinstance(s, Upload)]
    assert up.path == MPATH and up.content == HAND + "web=04\napi=05\n"
    assert up.expect == sha256(HAND) and up.mode == 0o644 and up.owner == "0:0"


def test_plan_pins_and_refuses_a_taken_number_naming_the_holder():
    p = reg.plan(facts(machines=HAND), VOL, "dynamicalsystem", ["web"], pins={"web": 42})
    assert p.numbers == {"web": 42}
    with pytest.raises(InputError, match="taken by 'redis'"):
        reg.plan(facts(machines=HAND), VOL, "dynamicalsystem", ["web"], pins={"web": 7})


def test_converged_registry_plans_only_noops():
    p = reg.plan(facts(machines=HAND), VOL, "dynamicalsystem", ["gazette", "redis"])
    assert all(isinstance(s, Noop) for s in p.steps)
    assert p.sheet_number == 1


def test_first_use_creates_station_and_both_files():
    p = reg.plan(facts(machines=None, sheets=None, station={}), VOL, "dynamicalsystem", ["web"])
    runs = [s for s in p.steps if isinstance(s, Run)]
    assert runs[0].argv[:2] == ("mkdir", "-p")
    assert ("chown", "-h", "10000:10000") == runs[1].argv[:3]
    assert ("chmod", "0750") == runs[2].argv[:2]
    ups = {s.path: s for s in p.steps if isinstance(s, Upload)}
    assert ups[SPATH].content.endswith("dynamicalsystem=1\n") and ups[SPATH].expect == "absent"
    assert ups[MPATH].content.endswith("web=04\n")
    # the station tree comes before the files in it
    assert p.steps.index(runs[0]) < p.steps.index(ups[SPATH])


def test_new_sheet_is_registered_with_the_default_sheet_and_gets_its_own_station():
    p = reg.plan(facts(sheets=None, station={}, sheet="acmecorp"), VOL, "acmecorp", ["web"])
    assert p.sheet_number == 3
    ups = {s.path: s for s in p.steps if isinstance(s, Upload)}
    assert ups[SPATH].content.endswith("dynamicalsystem=1\nacmecorp=3\n")
    assert any(isinstance(s, Run) and "30000:30000" in s.argv for s in p.steps)
    # mycompany prefers 7, over 5: the lowest free
    p = reg.plan(facts(sheets="dynamicalsystem=1\nacmecorp=3\n", sheet="mycompany"), VOL, "mycompany")
    assert p.sheet_number == 2


def test_sixth_sheet_is_refused():
    full = "".join(f"s{n}=\n".replace("=", f"={n}") for n in range(1, 6)).replace("s1=1", "dynamicalsystem=1")
    with pytest.raises(InputError, match="no free sheet number"):
        reg.plan(facts(sheets=full, sheet="late"), VOL, "late")


def test_unregister_removes_only_that_line():
    p = reg.plan(facts(machines=HAND), VOL, "dynamicalsystem", unregister=["redis"])
    [up] = [s for s in p.steps if isinstance(s, Upload)]
    assert up.content == "# hand-edited\n\ngazette=01   # the paper\n\n# end\n"


def test_symlink_in_a_tree_is_refused():
    bad = dict(GOOD_STATION)
    bad["/volume1/dynamicalsystem/station/prod/data"] = ("symbolic link", 0, 0, 0o777)
    with pytest.raises(Exception, match="symbolic link"):
        reg.plan(facts(station=bad), VOL, "dynamicalsystem", ["web"])


def test_resolve_reads_without_changing():
    f = facts(machines=HAND)
    assert reg.resolve(f, VOL, "dynamicalsystem", "redis")[:2] == (1, 7)
    assert reg.resolve(f, VOL, "dynamicalsystem", "lldap")[:2] == (1, 2)
    assert reg.resolve(f, VOL, "dynamicalsystem", "new", number="33")[:2] == (1, 33)
    with pytest.raises(InputError, match="registry.add --service new"):
        reg.resolve(f, VOL, "dynamicalsystem", "new")
    s, m, notes = reg.resolve(facts(machines=None, sheets=None), VOL, "acmecorp", "gazette")
    assert (s, m) == (3, 1) and any("not in the sheet registry" in n for n in notes)


class FakeEngine:
    """Just enough of the engine for lookup: one gather, counted."""

    def __init__(self, answers):
        from tinsnip.inventory import Inventory, Nas

        self.answers = answers
        self.calls = []
        nas = Nas(name="nas", address="198.18.0.10", user="admin")
        self.settings = type("S", (), {"inventory": Inventory(None, "dynamicalsystem", nas, {}, {})})()

    def gather(self, host, fact_list):
        self.calls.append([f.name for f in fact_list])
        return {f.name: self.answers[f.name] for f in fact_list}


def test_lookup_is_one_round_trip():
    engine = FakeEngine({"reg:sheets": "dynamicalsystem=1\n", "reg:machines": "web=04\n"})
    assert reg.lookup(engine, "dynamicalsystem", "web")[:2] == (1, 4)
    assert engine.calls == [["reg:sheets", "reg:machines"]]
