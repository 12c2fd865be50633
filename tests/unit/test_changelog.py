import json
import os
import subprocess

import pytest

from tinsnip import changelog


def test_path_is_on_the_station():
    assert changelog.path("/volume1", "dynamicalsystem") == "/volume1/dynamicalsystem/station/prod/data/changes.log"


def test_entries_are_one_json_line_per_changed_host():
    lines = changelog.entries("machine.create", "ann@laptop", {"nas": ["export gazette-prod"], "docker1": []}, when=0)
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry == {"time": "1970-01-01T00:00:00Z", "who": "ann@laptop", "task": "machine.create",
                     "host": "nas", "changes": ["export gazette-prod"]}
    assert changelog.parse(lines[0] + "\nnot json\n") == [entry]


@pytest.mark.skipif(os.geteuid() != 0, reason="takes /var/lock/tinsnip.lock")
def test_append_script_appends_and_keeps_quotes(tmp_path):
    log = tmp_path / "station" / "changes.log"
    lines = changelog.entries("t", "w", {"nas": ["it's $(quoted)"]}, when=0)
    for _ in range(2):
        subprocess.run(["/bin/sh", "-c", changelog.append_script(str(log), lines)], check=True)
    assert [e["changes"] for e in changelog.parse(log.read_text())] == [["it's $(quoted)"]] * 2
