"""Image references and registry digests: what a container runs against what its tag now names. Pure.

A registry is asked for a tag's digest with a manifest HEAD (no pull, no layer is fetched), sent by
curl on the Docker host as the machine user: the host's network, DNS and registry CAs
(`~/.config/docker/certs.d/HOST:PORT/ca.crt`) are the ones its rootless daemon pulls with, which the
machine running tinsnip may not share. Docker Hub names go to the daemon's mirrors first, as a pull
does. A login (the `auth` of the user's `~/.docker/config.json`) reaches curl through `--config -`
on its stdin, never its argv. Every image gets its own answer: one registry down is one error line.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
HUB_ENDPOINT = "https://registry-1.docker.io"
HUB_AUTH_KEY = "https://index.docker.io/v1/"
ACCEPT = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
HEAD_TIMEOUT = 10


@dataclass(frozen=True)
class Ref:
    """An image reference split the way Docker reads it (`busybox` → docker.io/library/busybox:latest)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository as `docker images` shows it (Docker Hub names without docker.io/library/)."""
        if self.registry == DOCKER_HUB:
            return self.repository.removeprefix("library/")
        return f"{self.registry}/{self.repository}"

    @property
    def tagged(self) -> str:
        return f"{self.name}:{self.tag or 'latest'}"

    def pinned(self, digest: str) -> str:
        """`name:tag@digest`: runs exactly that digest, and the tag stays readable in `docker ps`."""
        return f"{self.tagged}@{digest}"


def parse_ref(text: str) -> Ref:
    """Split an image reference; ValueError for one Docker would refuse too."""
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"not an image reference: {text!r}")
    rest, _, digest = text.partition("@")
    if digest and not (digest.startswith("sha256:") and len(digest) == 71):
        raise ValueError(f"not a sha256 digest in {text!r}")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = DOCKER_HUB, rest
    tag = None
    if ":" in path.rsplit("/", 1)[-1]:
        path, _, tag = path.rpartition(":")
    if not path or path != path.lower() or path.startswith("/") or path.endswith("/"):
        raise ValueError(f"not an image reference: {text!r}")
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return Ref(registry, path, tag or (None if digest else "latest"), digest or None)


def endpoints(ref: Ref, mirrors: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Where a pull of `ref` goes, in order: the mirrors, then Docker Hub, for Docker Hub names."""
    if ref.registry == DOCKER_HUB:
        return [m.rstrip("/") for m in mirrors] + [HUB_ENDPOINT]
    return [f"https://{ref.registry}"]


def auth_key(endpoint: str) -> str:
    """The `auths` key of ~/.docker/config.json that holds the login for an endpoint."""
    host = endpoint.split("://", 1)[-1].rstrip("/")
    return HUB_AUTH_KEY if host == "registry-1.docker.io" else host


def repo_digest(ref: Ref, repo_digests: list[str]) -> str | None:
    """The manifest digest an image was pulled as, from `docker image inspect`'s RepoDigests."""
    for entry in repo_digests or []:
        name, _, digest = entry.partition("@")
        try:
            other = parse_ref(name)
        except ValueError:
            continue
        if (other.registry, other.repository) == (ref.registry, ref.repository) and digest:
            return digest
    return None


# The HEAD of one manifest, as the machine user. $1 endpoint, $2 repository, $3 tag, $4 CA file or "",
# $5 the login (base64 user:password) or "" — the caller passes it through the script text, never argv.
HEAD_SCRIPT = r"""tinsnip_head() {
  ep=$1 repo=$2 tag=$3 ca=$4 auth=$5
  set -- --silent --show-error --head --max-time __TIMEOUT__ --output /dev/null --dump-header "$T/h" \
    --write-out '%{http_code}' __ACCEPT__
  [ -n "$ca" ] && [ -f "$ca" ] && set -- "$@" --cacert "$ca"
  url="$ep/v2/$repo/manifests/$tag"
  code=$(curl "$@" "$url" 2>"$T/ce") || { echo "error $(tr '\n' ' ' <"$T/ce")"; return; }
  if [ "$code" = 401 ]; then
    chal=$(tr -d '\r' <"$T/h" | sed -n 's/^[Ww][Ww][Ww]-[Aa]uthenticate: *//p' | head -n 1)
    case $chal in
      [Bb]earer*)
        realm=$(printf '%s' "$chal" | sed -n 's/.*realm="\([^"]*\)".*/\1/p')
        svc=$(printf '%s' "$chal" | sed -n 's/.*service="\([^"]*\)".*/\1/p')
        scope=$(printf '%s' "$chal" | sed -n 's/.*scope="\([^"]*\)".*/\1/p')
        tok=$( { [ -z "$auth" ] || printf 'header = "Authorization: Basic %s"\n' "$auth"; } |
          curl --silent --show-error --fail --max-time __TIMEOUT__ --config - ${ca:+--cacert "$ca"} \
            --get --data-urlencode "service=$svc" --data-urlencode "scope=$scope" "$realm" 2>"$T/ce" |
          tr -d '\n' | sed -n 's/.*"\(access_\)\{0,1\}token" *: *"\([^"]*\)".*/\2/p') || tok=
        [ -n "$tok" ] || { echo "error no token from $realm: $(tr '\n' ' ' <"$T/ce")"; return; }
        hdr="Authorization: Bearer $tok" ;;
      *)
        [ -n "$auth" ] || { echo "error 401: the registry wants a login (machine.login)"; return; }
        hdr="Authorization: Basic $auth" ;;
    esac
    code=$(printf 'header = "%s"\n' "$hdr" | curl "$@" --config - "$url" 2>"$T/ce") ||
      { echo "error $(tr '\n' ' ' <"$T/ce")"; return; }
  fi
  dig=$(tr -d '\r' <"$T/h" | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: *//p' | head -n 1)
  if [ "$code" = 200 ] && [ -n "$dig" ]; then echo "ok $dig"; else echo "error HTTP $code from $url"; fi
}
"""


@dataclass(frozen=True)
class Query:
    """One manifest HEAD: a tag at an endpoint, with the CA file and login to use there."""

    ref: Ref
    endpoint: str
    ca_file: str = ""
    auth: str = ""  # secret: only ever in the script text, masked everywhere else


def head_script(queries: list[Query]) -> str:
    """Shell (run as the machine user) that prints one `N ok DIGEST` or `N error WHY` line per query."""
    accept = " ".join(f"--header {shlex.quote('Accept: ' + a)}" for a in ACCEPT)
    fn = HEAD_SCRIPT.replace("__TIMEOUT__", str(HEAD_TIMEOUT)).replace("__ACCEPT__", accept)
    lines = ['T=$(mktemp -d) || exit 1', "trap 'rm -rf \"$T\"' EXIT", fn]
    for i, q in enumerate(queries):
        args = shlex.join([q.endpoint, q.ref.repository, q.ref.tag or "latest", q.ca_file, q.auth])
        lines.append(f'printf "%s " {i}; tinsnip_head {args}')
    return "\n".join(lines) + "\n"


def parse_heads(out: str, count: int) -> list[dict]:
    """Per query: {"digest": ...} or {"error": ...}; a query with no answer is an error too."""
    answers: dict[int, dict] = {}
    for line in out.splitlines():
        index, _, rest = line.partition(" ")
        if not index.isdigit():
            continue
        kind, _, value = rest.partition(" ")
        answers[int(index)] = {"digest": value.strip()} if kind == "ok" else {"error": value.strip() or "no answer"}
    return [answers.get(i, {"error": "no answer from the registry check"}) for i in range(count)]


def compare(running: str | None, registry: str | None) -> str:
    """current | outdated | unknown: a container is outdated when its tag now names another digest."""
    if not running or not registry:
        return "unknown"
    return "current" if running == registry else "outdated"
