"""The shell side of the engine, run for real with /bin/sh on local files (no SSH involved)."""

import hashlib
import os
import subprocess

import pytest

from tinsnip import script
from tinsnip.steps import Noop, Run, Upload, sha256

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the apply script takes /var/lock/tinsnip.lock and chowns: needs root")


def run_sh(text):
    p = subprocess.run(["/bin/sh", "-s"], input=text.encode(), capture_output=True, timeout=30)
    return p.returncode, p.stdout, p.stderr.decode()


def test_facts_each_keep_their_output_and_status():
    facts = [script.Fact("a", "echo one; echo two >&2"), script.Fact("b", "printf 'no newline'; exit 3"),
             script.Fact("c", "echo '@@fakefake fact 0 0 5 0'")]
    nonce = script.new_nonce()
    rc, out, _ = run_sh(script.facts_script(facts, nonce))
    answers = script.parse_answers(out, nonce, "fact")
    assert rc == 0
    assert (answers[0].rc, answers[0].out, answers[0].err) == (0, "one\n", "two\n")
    assert (answers[1].rc, answers[1].out) == (3, "no newline")
    assert answers[2].out == "@@fakefake fact 0 0 5 0\n"  # a command cannot forge a marker


def test_apply_writes_atomically_with_mode_and_stops_at_first_failure(tmp_path):
    target = tmp_path / "f.conf"
    steps = [Noop("nothing"), Upload(str(target), "a=1\n", "write f.conf", mode=0o640, owner="0:0", expect="absent"),
             Run(("false",), "fail here"), Run(("touch", str(tmp_path / "never")), "not reached")]
    nonce = script.new_nonce()
    rc, out, _ = run_sh(script.apply_script(steps, nonce))
    answers = script.parse_answers(out, nonce, "step")
    assert rc == 1
    assert answers[1].rc == 0 and answers[2].rc == 1 and 3 not in answers
    assert target.read_text() == "a=1\n" and oct(target.stat().st_mode & 0o777) == "0o640"
    assert not (tmp_path / "never").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["f.conf"]  # no temp file left behind


def test_compare_and_swap_refuses_a_file_changed_meanwhile(tmp_path):
    target = tmp_path / "registry"
    target.write_text("old\n")
    stale = Upload(str(target), "new\n", "update", expect=sha256("something else\n"))
    nonce = script.new_nonce()
    rc, out, _ = run_sh(script.apply_script([stale], nonce))
    assert rc == script.EXIT_CONFLICT
    assert target.read_text() == "old\n"
    fresh = Upload(str(target), "new\n", "update", expect=hashlib.sha256(b"old\n").hexdigest())
    rc, _, _ = run_sh(script.apply_script([fresh], script.new_nonce()))
    assert rc == 0 and target.read_text() == "new\n"


def test_failing_then_command_restores_the_previous_file(tmp_path):
    target = tmp_path / "exports"
    target.write_text("good\n")
    step = Upload(str(target), "bad\n", "exports", backup=True,
                  then=("sh", "-c", f'grep -q good {target} || {{ echo "unknown keyword bad" >&2; exit 1; }}'))
    nonce = script.new_nonce()
    rc, out, _ = run_sh(script.apply_script([step], nonce))
    answer = script.parse_answers(out, nonce, "step")[0]
    assert rc == 1 and target.read_text() == "good\n"
    assert "unknown keyword bad" in answer.err and "was restored" in answer.err
    assert (tmp_path / "exports.tinsnip-bak").read_text() == "good\n"


def test_unless_guard_reports_already_done(tmp_path):
    steps = [Run(("mkdir", str(tmp_path / "d")), "make d", unless=f"test -d {tmp_path}")]
    nonce = script.new_nonce()
    rc, out, _ = run_sh(script.apply_script(steps, nonce))
    assert rc == 0 and script.parse_answers(out, nonce, "step")[0].out.strip() == "already done"


def test_hostile_content_and_paths_stay_data(tmp_path):
    evil = str(tmp_path / "x; touch PWNED; $(touch PWNED2)")
    content = "EOF\n'$(touch PWNED3)'\n`id`\n"
    rc, _, _ = run_sh(script.apply_script([Upload(evil, content, "evil")], script.new_nonce()))
    assert rc == 0
    assert open(evil).read() == content
    assert not any(p.name.startswith("PWNED") for p in tmp_path.iterdir())
    assert not os.path.exists("/PWNED")


def test_user_command_has_a_clean_environment():
    run = Run(("docker", "info"), "docker info", as_user="gazette-prod",
              env=(("XDG_RUNTIME_DIR", "/run/user/10100"), ("HOME", "/home/gazette-prod")))
    text = script.user_command(run)
    assert text.startswith("runuser -u gazette-prod -- env -i PATH=")
    assert "XDG_RUNTIME_DIR=/run/user/10100 HOME=/home/gazette-prod docker info" in text
