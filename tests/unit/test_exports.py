"""/etc/exports: foreign bytes kept exactly, managed lines found, merged, removed and checked for drift."""

from __future__ import annotations

import pytest

from tinsnip import exports as ex

DSM = (
    "# /etc/exports: written by DSM\n"
    "\n"
    '"/volume1/my share"\t192.168.1.0/24(rw,async,no_wdelay,all_squash,insecure_locks,sec=sys,anonuid=1025,anongid=100)\n'
    "/volume1/photo    192.168.1.5(ro,sync)   192.168.1.6(rw,sync,no_root_squash)\n"
    "   # an indented comment with trailing spaces   \n"
    "/volume1/long \\\n"
    "    10.0.0.9(rw)\n"
    "/volume1/last 10.0.0.7(rw)"  # no newline at the end, as hand edits often leave it
)
PATH = "/volume1/dynamicalsystem/gazette/prod"
KEY = "dynamicalsystem/gazette-prod"


def line(client="198.18.0.20", uid=10100):
    return ex.render_line(PATH, client, uid)


def test_rendered_line_is_the_spec_line():
    assert line() == (f"{PATH} 198.18.0.20(rw,sync,no_subtree_check,all_squash,anonuid=10100,anongid=10100)\n")


@pytest.mark.parametrize("client", ["*", "", "a b", "host(rw)", "x#y"])
def test_rendered_line_refuses_wildcards_and_junk(client):
    with pytest.raises(ValueError):
        ex.render_line(PATH, client, 10100)


@pytest.mark.parametrize("text", [DSM, "", "\n", "no newline", DSM + "\n", "# tinsnip: a/b-prod\n", "\\\n\\"])
def test_parse_round_trips_byte_for_byte(text):
    assert ex.parse(text).text == text


def test_parse_reads_quoted_paths_and_several_clients():
    doc = ex.parse(DSM)
    parsed = [i.parsed for i in doc.items if i.parsed]
    assert parsed[0].path == "/volume1/my share"
    assert parsed[1].client_names == ["192.168.1.5", "192.168.1.6"]
    assert parsed[2].path == "/volume1/long" and parsed[2].client_names == ["10.0.0.9"]
    assert doc.managed() == []


def test_merge_adds_marked_line_and_keeps_every_foreign_byte():
    out = ex.merge(DSM, KEY, PATH, [line()])
    assert out == DSM + "\n" + f"# tinsnip: {KEY}\n" + line()
    doc = ex.parse(out)
    [m] = doc.managed(KEY)
    assert m.kind == "managed" and m.parsed.path == PATH
    # merging again changes nothing; removing gives back the original bytes (plus the final newline)
    assert ex.merge(out, KEY, PATH, [line()]) == out
    assert ex.merge(out, KEY, PATH, []) == DSM + "\n"


def test_merge_replaces_in_place_and_leaves_other_machine_envs_alone():
    other = ex.marker("dynamicalsystem/lldap-prod") + ex.render_line("/volume1/dynamicalsystem/lldap/prod", "198.18.0.21", 10200)
    text = "# top\n" + ex.marker(KEY) + line(uid=99999) + other + "# bottom\n"
    out = ex.merge(text, KEY, PATH, [line()])
    assert out == "# top\n" + ex.marker(KEY) + line() + other + "# bottom\n"


def test_merge_handles_several_clients_and_moves():
    two = ex.merge("", KEY, PATH, [line("198.18.0.20"), line("198.18.0.21")])
    assert [i.parsed.client_names for i in ex.parse(two).managed(KEY)] == [["198.18.0.20"], ["198.18.0.21"]]
    moved = ex.merge(two, KEY, PATH, [line("198.18.0.21")])
    assert moved == ex.marker(KEY) + line("198.18.0.21")


def test_unmarked_identical_line_is_adopted_not_duplicated():
    text = "# dsm\n" + line() + "# end\n"
    out = ex.merge(text, KEY, PATH, [line()])
    assert out == "# dsm\n" + ex.marker(KEY) + line() + "# end\n"
    assert ex.merge(out, KEY, PATH, []) == "# dsm\n# end\n"


def test_unmarked_line_for_another_client_is_foreign():
    text = f"{PATH} 10.9.9.9(rw)\n"
    out = ex.merge(text, KEY, PATH, [line()])
    assert out.startswith(text)


def test_orphan_marker_is_drift_and_repaired_in_place():
    text = "# a\n" + ex.marker(KEY) + "# b\n"
    d = ex.drift(text, KEY, PATH, {"198.18.0.20": line()})
    assert not d.ok and d.missing == ("198.18.0.20",) and d.orphans == 1
    assert ex.merge(text, KEY, PATH, [line()]) == "# a\n" + ex.marker(KEY) + line() + "# b\n"


def test_drift_reports_changed_extra_and_unmarked():
    edited = line().replace("sync", "async")
    d = ex.drift(ex.marker(KEY) + edited, KEY, PATH, {"198.18.0.20": line()})
    assert d.changed and d.changed[0][0] == "198.18.0.20" and not d.missing
    assert "changed" in d.describe()[0]
    d = ex.drift(ex.marker(KEY) + line("198.18.0.99"), KEY, PATH, {"198.18.0.20": line()})
    assert d.extra == ("198.18.0.99",) and d.missing == ("198.18.0.20",)
    d = ex.drift(line(), KEY, PATH, {"198.18.0.20": line()})
    assert d.unmarked == ("198.18.0.20",) and not d.missing
    assert ex.drift(ex.marker(KEY) + line(), KEY, PATH, {"198.18.0.20": line()}).ok


def test_parse_active_reads_both_exportfs_layouts():
    out = ("/volume1/dynamicalsystem/gazette/prod\n\t\t198.18.0.20(sync,wdelay,rw,all_squash)\n"
           "/short \t198.18.0.21(rw)\n/volume1/my\\040share\n\t\t<world>(ro)\n")
    assert ex.parse_active(out) == {(PATH, "198.18.0.20"), ("/short", "198.18.0.21"), ("/volume1/my share", "<world>")}
