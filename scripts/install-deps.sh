#!/bin/bash
# Install the system packages tinsnip's lab (and `make demo`, `make lab`, CI) needs, on Debian 12, as root.
#
# Idempotent: when every package is already installed and Compose v2 is in place it only checks and exits.
# Everything is installed in one go *before* any lab host starts: lab hosts run on an overlay of this
# machine's own /, and changing the lower layer of a mounted overlay is undefined (a running host would
# not see new files). So: run this first, then `inv lab.up`.
#
# Python packages are not installed here (the Makefile does that).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

# Compose v2 comes from Debian trixie's docker-compose package (bookworm only has Compose v1, and
# Debian has no docker-compose-plugin). Pinned so every machine gets the same binary.
COMPOSE_VERSION=${TINSNIP_COMPOSE_VERSION:-2.26.1-4}
COMPOSE_DEST=/usr/libexec/docker/cli-plugins

PACKAGES=(
    openssh-server openssh-client nfs-kernel-server docker.io rootlesskit slirp4netns uidmap
    dbus-user-session fuse-overlayfs fuse3 bindfs busybox-static systemd systemd-sysv dbus libpam-systemd
    iproute2 util-linux sudo git procps psmisc iptables python3 ca-certificates curl
    # the lab's registry, its TLS, the images built from Debian's packages, the NAS's Btrfs volume
    docker-registry openssl mmdebstrap umoci skopeo btrfs-progs e2fsprogs
)

say() { printf 'install-deps: %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
    say "must run as root (it installs system packages)" >&2
    exit 2
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
    say "needs a Debian-based system (apt-get, dpkg-query)" >&2
    exit 2
fi

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
    [ "${status:0:2}" = ii ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
    say "all ${#PACKAGES[@]} packages present"
else
    say "installing: ${missing[*]}"
    if ip netns list 2>/dev/null | grep -q '^tl[0-9]-'; then
        # A running lab host sees this machine's / through an overlay taken at its start.
        say "warning: a tinsnip lab is up; its hosts will not see these packages until lab.down + lab.up" >&2
    fi
    apt-get update -qq
    # One install for everything: it is much faster than several, and it happens before any lab
    # host starts. policy-rc.d (if present) keeps apt from starting services here.
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
fi

# Debian ships the rootless scripts in docker.io's contrib dir; the upstream setup tool expects to
# sit beside dockerd-rootless.sh on PATH (the docker-ce-rootless-extras layout).
for s in dockerd-rootless.sh dockerd-rootless-setuptool.sh; do
    if [ ! -e "/usr/bin/$s" ]; then
        ln -sf "/usr/share/docker.io/contrib/$s" "/usr/bin/$s"
    fi
done

# Compose v2: fetch the .deb with a private apt state dir and unpack it with dpkg -x. Nothing from
# trixie enters dpkg's database and the system's apt sources stay untouched.
have_compose() {
    [ -x "$COMPOSE_DEST/docker-compose" ] &&
        "$COMPOSE_DEST/docker-compose" version 2>/dev/null | grep -q "${COMPOSE_VERSION%%-*}"
}
if have_compose; then
    say "Compose v2 $COMPOSE_VERSION present"
else
    say "fetching Compose v2 $COMPOSE_VERSION from Debian trixie"
    T=$(mktemp -d)
    trap 'rm -rf "$T"' EXIT
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    mkdir -p "$T/lists/partial" "$T/cache/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" >"$T/sources.list"
    A=(-o Dir::Etc::SourceList="$T/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o Dir::State::Lists="$T/lists" -o Dir::Cache="$T/cache" -o APT::Sandbox::User=root)
    apt-get "${A[@]}" -qq update
    (cd "$T" && apt-get "${A[@]}" -qq download "docker-compose=$COMPOSE_VERSION")
    dpkg -x "$T"/docker-compose_*.deb "$T/x"
    install -D -m755 "$T/x/usr/libexec/docker/cli-plugins/docker-compose" "$COMPOSE_DEST/docker-compose"
    "$COMPOSE_DEST/docker-compose" version
fi

say "done"
