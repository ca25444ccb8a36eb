#!/usr/bin/env bash
# Installs what `ymera chaos` needs for its partition fault: nft (Debian `nftables`),
# unshare (util-linux) and ip (iproute2). The suite re-runs itself inside a network
# namespace of its own (`unshare --net`) and writes its firewall rules there, on that
# namespace's private loopback — never on the host's. Idempotent; no service is started
# (the nftables package ships a systemd unit, which stays disabled).
set -euo pipefail
missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -eq 0 ]; then
    echo "chaos-netns  ok         nft, unshare, ip"
    exit 0
fi
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else
        echo "chaos-netns: need root (or passwordless sudo) to install ${missing[*]}" >&2
        return 1
    fi
}
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if as_root apt-get -o DPkg::Lock::Timeout=600 update -qq >"$log" 2>&1 &&
    as_root apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
    echo "chaos-netns  installed  ${missing[*]}"
    rm -f "$log"
else
    tail -n 5 "$log" | sed 's/^/    apt: /' >&2
    rm -f "$log"
    echo "chaos-netns  FAILED     could not install ${missing[*]}"
    exit 1
fi
