"""Every template renders against the example inventory; errors name the template and the line."""

from pathlib import Path

import pytest

from tinsnip import inventory, render, smep
from tinsnip.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def m():
    inv = inventory.load(ROOT / "hosts.yaml")
    return smep.MachineEnv(inv.sheet, 1, "gazette", 1, "prod", inv.nas.volume), inv


def test_machine_env_has_every_variable(m):
    me, inv = m
    text = render.render("machine.env.j2", m=me, nas_host=inv.nas.address)
    values = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    expected = {
        "TIN_SHEET": "dynamicalsystem", "TIN_SHEET_NUMBER": "1", "TIN_MACHINE_NAME": "gazette",
        "TIN_MACHINE_NUMBER": "01", "TIN_SERVICE_NAME": "gazette", "TIN_SERVICE_ENVIRONMENT": "prod",
        "TIN_ENV_NUMBER": "0", "TIN_SERVICE_UID": "10100", "TIN_SERVICE_GID": "10100",
        "TIN_NAS_HOST": "192.168.1.10", "TIN_NAS_PATH": "/volume1/dynamicalsystem/gazette/prod",
        "TIN_MOUNT": "/mnt/gazette-prod", "DOCKER_HOST": "unix:///run/user/10100/docker.sock",
        "XDG_DATA_HOME": "/mnt/gazette-prod/data", "XDG_CONFIG_HOME": "/mnt/gazette-prod/config",
        "XDG_STATE_HOME": "/mnt/gazette-prod/state",
    }
    for key, value in expected.items():
        assert values.get(key) == value, key


def test_every_template_renders(m):
    me, inv = m
    for tpl in sorted(p.name for p in (ROOT / "templates").glob("*.j2")):
        values = {"m": me, "nas_host": inv.nas.address, "path": me.nas_path, "client": "192.168.1.20",
                  "uid": me.uid, "gid": me.gid, "sheet": me.sheet, "machine": me.machine, "env": me.env,
                  "service": "gazette", "ports": me.ports[:2], "volumes": ["data"],
                  "data_root": f"{me.mount}/data/gazette", "name": me.name, "machine_env": me.name}
        try:
            text = render.render(tpl, **values)
        except InputError as exc:  # a template needing a value this test does not know names it
            pytest.fail(f"{tpl}: {exc}")
        assert text.strip(), tpl


def test_template_errors_name_the_template(tmp_path, monkeypatch):
    (tmp_path / "broken.j2").write_text("line one\n{{ oops(\n")
    (tmp_path / "needs.j2").write_text("{{ missing }}\n")
    monkeypatch.setattr(render, "TEMPLATES", tmp_path)
    render._env.cache_clear()
    try:
        with pytest.raises(InputError, match=r"template broken.j2, line 2"):
            render.render("broken.j2")
        with pytest.raises(InputError, match=r"needs.j2: 'missing' is undefined"):
            render.render("needs.j2")
    finally:
        render._env.cache_clear()
