#!/usr/bin/env bash
# Make promtool available as DIR/promtool (default .venv/bin) for the alerting rules' test
# (tests/test_prometheus_rules.py), unless DIR/promtool already works.
#
# A promtool on PATH is linked. Otherwise it comes from the Debian/Ubuntu package `prometheus` (which ships
# /usr/bin/promtool): the package is downloaded with `apt-get download` and only promtool is unpacked, so nothing
# is installed system-wide, no root is needed and no Prometheus server is started. Stale package lists are
# refreshed with `apt-get update` (as root, or with sudo) and the download is tried once more.
set -euo pipefail

dest=$(mkdir -p "${1:-.venv/bin}" && cd "${1:-.venv/bin}" && pwd)
if "$dest/promtool" --version >/dev/null 2>&1; then
    exit 0
fi
if found=$(command -v promtool); then
    ln -sf "$found" "$dest/promtool"
    exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    echo "promtool.sh: no promtool on PATH and no apt-get/dpkg-deb to fetch it: install Prometheus's promtool" >&2
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
if ! apt-get download prometheus >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    apt-get download prometheus >/dev/null
fi
dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x ./usr/bin/promtool
install -m 0755 usr/bin/promtool "$dest/promtool"
"$dest/promtool" --version 2>&1 | head -1
