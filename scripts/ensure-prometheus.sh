#!/usr/bin/env bash
# Makes sure Debian's `prometheus` package (the `prometheus` server and `promtool`) is installed, for the
# deploy tests (tests/*/test_deploy_*.py). Idempotent: does nothing when both binaries are on PATH.
#
# - Not root and missing: prints why and exits 0; those tests then skip and say so (they never pass
#   silently).
# - Root and missing: `apt-get install -y --no-install-recommends prometheus`, running `apt-get update`
#   first only when apt does not know the package (or the first install attempt fails on a stale list).
#   The package may start its own service on install; this script blocks that with a policy-rc.d that
#   denies service starts for the duration of the install, and stops the packaged service if it runs
#   anyway. The tests start their own prometheus on a free loopback port with a temp TSDB.
set -euo pipefail

have_tools() { command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; }

if have_tools; then
    exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
    echo "ensure-prometheus: promtool/prometheus not installed and not root; the deploy tests will be skipped" >&2
    echo "ensure-prometheus: install them with: sudo apt-get install --no-install-recommends prometheus" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-prometheus: no apt-get here; install promtool and prometheus by hand" >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
POLICY=/usr/sbin/policy-rc.d
created_policy=0
cleanup() {
    if [[ "$created_policy" == 1 ]]; then
        rm -f "$POLICY"
    fi
}
trap cleanup EXIT
if [[ ! -e "$POLICY" ]]; then
    # Exit status 101 = "action forbidden": invoke-rc.d / deb-systemd-invoke start no service.
    printf '#!/bin/sh\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    created_policy=1
fi

install() { apt-get install -y -q --no-install-recommends prometheus; }

if ! apt-cache show prometheus >/dev/null 2>&1; then
    apt-get update -q
fi
if ! install; then
    apt-get update -q
    install
fi

# Belt and braces: if the packaged service came up anyway (a host with a real init), stop it.
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    systemctl stop prometheus.service >/dev/null 2>&1 || true
    systemctl disable prometheus.service >/dev/null 2>&1 || true
elif [[ -x /etc/init.d/prometheus ]] && /etc/init.d/prometheus status >/dev/null 2>&1; then
    /etc/init.d/prometheus stop >/dev/null 2>&1 || true
fi

have_tools || { echo "ensure-prometheus: install finished but promtool/prometheus are not on PATH" >&2; exit 1; }
echo "ensure-prometheus: $(prometheus --version 2>&1 | head -n 1)"
