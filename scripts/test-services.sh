#!/usr/bin/env bash
# Installs what the tests run against: Debian's redis-server and postgresql (each test starts
# its own server on a free port and stops it) and chromium (headless, for the page tests).
# Needs root and Debian's package lists; does nothing when all are present.
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v chromium >/dev/null || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "installing ${missing[*]} (Debian packages)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian packages may start system servers; the tests use their own.
if command -v systemctl >/dev/null; then
    for unit in redis-server postgresql; do
        if systemctl is-active --quiet "$unit" 2>/dev/null; then systemctl stop "$unit" || true; fi
    done
fi
if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h | awk '$4 == "online" {print $1, $2}' | while read -r version cluster; do
        pg_ctlcluster "$version" "$cluster" stop || true
    done
fi
