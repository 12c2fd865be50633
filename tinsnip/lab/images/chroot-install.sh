#!/bin/bash
# chroot-install.sh BASE DEST PRE PKG...: a copy of the base root filesystem with Debian packages
# installed into it (apt inside a chroot, services never started), cleaned of apt's lists and caches.
set -euo pipefail
BASE=$1 D=$2 PRE=$3; shift 3
rm -rf "$D"; cp -a "$BASE" "$D"
printf '#!/bin/sh\nexit 101\n' >"$D/usr/sbin/policy-rc.d"; chmod 755 "$D/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$D/etc/resolv.conf"
unshare -m --propagation private bash -euo pipefail -c '
  D=$1 PRE=$2; shift 2
  mount -t proc proc "$D/proc"; mount --rbind /dev "$D/dev"
  chroot "$D" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
    bash -euo pipefail -c "$PRE; apt-get -qq update; apt-get -qq install -y --no-install-recommends $* >/dev/null; apt-get clean"
' _ "$D" "$PRE" "$@"
rm -rf "$D"/var/lib/apt/lists/* "$D"/var/cache/apt/*.bin "$D"/var/cache/debconf/*-old "$D"/var/lib/dpkg/*-old \
       "$D"/var/log/apt/* "$D"/var/log/dpkg.log "$D"/var/log/alternatives.log "$D"/tmp/*
rm -f "$D/usr/sbin/policy-rc.d"; : >"$D/etc/resolv.conf"; : >"$D/etc/hostname"
