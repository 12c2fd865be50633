"""The compose model: every syntax of ports, volumes, env files and interpolation, each with its line."""

from __future__ import annotations

import pytest

from tinsnip import compose

FILE = """\
x-common: &common
  restart: unless-stopped
services:
  web:
    <<: *common
    image: nginx:1.25
    user: 10:10
    ports:
      - 8080:80
      - "127.0.0.1:8443:443/udp"
      - "9000-9001:9000-9001"
      - "80"
      - "${TIN_PORT_3}:81"
      - "${WEB_PORT:-8081}:82"
      - target: 90
        published: "9090"
        protocol: udp
        host_ip: 0.0.0.0
        mode: host
    # - "${TIN_PORT_7}:99"
    volumes:
      - ./data:/data
      - /etc/localtime:/etc/localtime:ro
      - db:/db
      - type: tmpfs
        target: /tmp
      - ${UPLOAD:-./up}:/up:rw
      - type: bind
        source: conf
        target: /conf
        read_only: true
      - /anonymous
    env_file: .env
    environment:
      A: ${A:?need A}
      B: $$notvar $B
    command: |
      sh -c 'echo ${C}
      ${D:-${E}}'
  worker:
    build:
      context: ./src
      dockerfile: Dockerfile.worker
    env_file:
      - app.env
      - path: extra.env
        required: false
    environment:
      - X=1
      - Y
    cap_add: [NET_ADMIN, SYS_ADMIN]
    sysctls:
      net.core.somaxconn: 1024
volumes:
  db:
  ext:
    external: true
networks:
  back: {}
secrets:
  token:
    file: ./token.txt
"""


@pytest.fixture(scope="module")
def c():
    return compose.parse(FILE, "docker-compose.yml")


def test_services_and_key_lines(c):
    assert list(c.services) == ["web", "worker"]
    web = c.services["web"]
    assert web.line == 4
    assert web.key_line("image") == 6 and web.image.value == "nginx:1.25" and web.image.line == 6
    assert web.restart.value == "unless-stopped" and web.restart.line == 2  # merged: the anchor's line
    assert c.source_line(web.key_line("ports")) == "    ports:"


def test_user_keeps_the_text_and_says_pyyaml_misreads_it(c):
    user = c.services["web"].user
    assert (user.value, user.tag, user.quoted, user.line) == ("10:10", "int", False, 7)
    assert c.raw["services"]["web"]["user"] == 610  # YAML 1.1's base 60, what PyYAML builds


def test_every_port_syntax(c):
    p = c.services["web"].ports
    assert [(x.line, x.host_ip, x.published, x.target, x.protocol, x.long) for x in p] == [
        (9, None, "8080", "80", "tcp", False),
        (10, "127.0.0.1", "8443", "443", "udp", False),
        (11, None, "9000-9001", "9000-9001", "tcp", False),
        (12, None, None, "80", "tcp", False),
        (13, None, "${TIN_PORT_3}", "81", "tcp", False),
        (14, None, "${WEB_PORT:-8081}", "82", "tcp", False),
        (15, "0.0.0.0", "9090", "90", "udp", True),
    ]
    assert p[0].text == "8080:80"  # not 484880, the base-60 reading
    assert p[2].published_numbers() == [9000, 9001] and p[2].size() == 2
    assert p[3].published_numbers() == [] and p[4].published_numbers() is None
    assert p[4].tin_port_indexes() == [3] and p[4].is_symbolic
    assert p[6].mode == "host"


@pytest.mark.parametrize("text, expected", [
    ("[::1]:8080:80", ("::1", "8080", "80", "tcp")),
    ("${HOST_IP:-0.0.0.0}:${P:-1}:2/udp", ("${HOST_IP:-0.0.0.0}", "${P:-1}", "2", "udp")),
    ("53:53/udp", (None, "53", "53", "udp")),
    ("127.0.0.1::80", ("127.0.0.1", "", "80", "tcp")),
])
def test_short_port_split(text, expected):
    assert compose._split_short_port(text) == expected


def test_every_volume_syntax(c):
    v = c.services["web"].volumes
    assert [(m.line, m.type, m.source, m.target, m.read_only, m.long) for m in v] == [
        (22, "bind", "./data", "/data", False, False),
        (23, "bind", "/etc/localtime", "/etc/localtime", True, False),
        (24, "volume", "db", "/db", False, False),
        (25, "tmpfs", None, "/tmp", False, True),
        (27, "bind", "${UPLOAD:-./up}", "/up", False, False),
        (29, "bind", "conf", "/conf", True, True),
        (32, "volume", None, "/anonymous", False, False),
    ]
    assert [m.is_relative_bind for m in v] == [True, False, False, False, False, True, False]
    assert v[1].is_absolute_bind and v[4].is_symbolic and v[2].is_named_volume and not v[6].is_named_volume


def test_top_level_sections(c):
    assert c.named_volumes() == ("db",)
    assert c.volumes["ext"].external and c.volumes["db"].line == 55
    assert list(c.networks) == ["back"] and c.secrets["token"].spec == {"file": "./token.txt"}
    assert c.keys["volumes"] == 54


def test_env_files_and_environment(c):
    web, worker = c.services["web"], c.services["worker"]
    assert web.env_files == (compose.EnvFile(".env", 33),)
    assert worker.env_files == (compose.EnvFile("app.env", 45), compose.EnvFile("extra.env", 46, required=False))
    assert [(e.name, e.value, e.line) for e in web.environment] == [("A", "${A:?need A}", 35), ("B", "$$notvar $B", 36)]
    assert [(e.name, e.value) for e in worker.environment] == [("X", "1"), ("Y", None)]


def test_build_caps_sysctls(c):
    w = c.services["worker"]
    assert (w.build.value, w.build.line, w.build_dockerfile) == ("./src", 41, "Dockerfile.worker")
    assert [x.value for x in w.cap_add] == ["NET_ADMIN", "SYS_ADMIN"]
    assert [(x.value, x.line) for x in w.sysctls] == [("net.core.somaxconn=1024", 53)]


def test_variables_with_lines_escapes_and_no_comments(c):
    got = [(v.name, v.line, v.op, v.arg) for v in c.variables]
    assert got == [
        ("TIN_PORT_3", 13, "", None), ("WEB_PORT", 14, ":-", "8081"), ("UPLOAD", 27, ":-", "./up"),
        ("A", 35, ":?", "need A"), ("B", 36, "", None), ("C", 38, "", None),
        ("D", 39, ":-", "${E}"), ("E", 39, "", None),
    ]
    assert "TIN_PORT_7" not in c.variable_names()  # commented out
    assert "notvar" not in c.variable_names()  # $$ is a literal $
    a = next(v for v in c.variables if v.name == "A")
    assert a.required and not a.has_default


@pytest.mark.parametrize("value, names", [
    ("$$HOME", []), ("$A$B", ["A", "B"]), ("${A-x}${B?m}${C:+y}", ["A", "B", "C"]), ("$1 $", []),
    ("${A:-${B:-${C}}}", ["A", "B", "C"]), ("a$$$B", ["B"]),
])
def test_find_variables(value, names):
    assert [v.name for _, v in compose.find_variables(value)] == names


def test_port_slots_map_every_published_port_onto_tin_ports(c):
    slots = [(s.service, s.index, s.target, s.port.line) for s in compose.port_slots(c)]
    assert slots == [
        ("web", 3, "81", 13),  # written as ${TIN_PORT_3}: keeps 3
        ("web", 0, "80", 9), ("web", 1, "443", 10), ("web", 2, "9000", 11), ("web", 4, "9001", 11),
        ("web", 5, "80", 12), ("web", 6, "82", 14), ("web", 7, "90", 15),
    ]


def test_port_slots_share_one_port_for_tcp_and_udp():
    c = compose.parse('services:\n  dns:\n    image: x\n    ports: ["53:53/tcp", "53:53/udp", "8080:80"]\n')
    assert [s.index for s in compose.port_slots(c)] == [0, 0, 1]


@pytest.mark.parametrize("text, line", [
    ("", 1), ("just text\n", 1), ("services: []\n", 1), ("a: 1\nservices:\n", 2), ("services: {a: [\n", 2),
    ("services:\n  a: 1\n", 2), ("services:\n  a:\n    image: [\n", 4),
])
def test_not_a_compose_file(text, line):
    with pytest.raises(compose.ComposeError) as err:
        compose.parse(text)
    assert err.value.line == line
