"""Image references, the registry HEAD script and the digest comparison (tinsnip/digests.py)."""

from __future__ import annotations

import subprocess

import pytest

from tinsnip import digests as d

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


@pytest.mark.parametrize("text, registry, repo, tag, digest", [
    ("busybox", "docker.io", "library/busybox", "latest", None),
    ("postgres:15", "docker.io", "library/postgres", "15", None),
    ("grafana/grafana:11.1", "docker.io", "grafana/grafana", "11.1", None),
    ("198.18.0.30:5001/lab/web:1", "198.18.0.30:5001", "lab/web", "1", None),
    ("localhost/x", "localhost", "x", "latest", None),
    (f"registry.lan/a/b:2@{A}", "registry.lan", "a/b", "2", A),
    (f"redis@{A}", "docker.io", "library/redis", None, A),
])
def test_parse_ref(text, registry, repo, tag, digest):
    ref = d.parse_ref(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repo, tag, digest)


@pytest.mark.parametrize("bad", ["", "a b", "Busybox", f"x@sha256:{'a' * 10}", "reg.lan/"])
def test_parse_ref_refuses(bad):
    with pytest.raises(ValueError):
        d.parse_ref(bad)


def test_pinned_keeps_the_tag_and_names():
    assert d.parse_ref("postgres:15").pinned(A) == f"postgres:15@{A}"
    assert d.parse_ref("reg.lan:5000/lab/web").pinned(B) == f"reg.lan:5000/lab/web:latest@{B}"


def test_endpoints_honour_mirrors_only_for_docker_hub():
    assert d.endpoints(d.parse_ref("postgres:15"), ["https://198.18.0.30:5000/"]) == [
        "https://198.18.0.30:5000", "https://registry-1.docker.io"]
    assert d.endpoints(d.parse_ref("reg.lan:5001/a:1"), ["https://m"]) == ["https://reg.lan:5001"]
    assert d.auth_key("https://registry-1.docker.io") == "https://index.docker.io/v1/"
    assert d.auth_key("https://reg.lan:5001") == "reg.lan:5001"


def test_repo_digest_picks_the_same_repository():
    ref = d.parse_ref("postgres:15")
    assert d.repo_digest(ref, [f"other@{B}", f"postgres@{A}"]) == A
    assert d.repo_digest(ref, [f"docker.io/library/postgres@{A}"]) == A
    assert d.repo_digest(ref, []) is None


def test_compare():
    assert d.compare(A, A) == "current"
    assert d.compare(A, B) == "outdated"
    assert d.compare(None, B) == "unknown" and d.compare(A, None) == "unknown"


def test_head_script_keeps_the_login_out_of_argv_and_answers_per_image():
    q = d.Query(d.parse_ref("127.0.0.1:1/lab/web:1"), "http://127.0.0.1:1", auth="c2VjcmV0OnB3")
    text = d.head_script([q, q])
    # the login is only ever an argument of a shell function or printf (builtins), never of curl
    for line in text.splitlines():
        if "curl " in line:
            assert "c2VjcmV0OnB3" not in line and "$auth" not in line.split("curl", 1)[1].split("|")[0]
    r = subprocess.run(["sh", "-c", text], capture_output=True, text=True, timeout=30)
    answers = d.parse_heads(r.stdout, 2)
    assert len(answers) == 2 and all("error" in a and "127.0.0.1" in a["error"] for a in answers), r.stdout


def test_parse_heads_missing_answer_is_an_error():
    assert d.parse_heads(f"0 ok {A}\n", 2) == [{"digest": A}, {"error": "no answer from the registry check"}]
