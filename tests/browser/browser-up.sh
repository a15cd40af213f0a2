#!/usr/bin/env bash
# A headless Chromium for tests/test_html_report.py: installed from the Debian archive when missing
# (root and apt-get needed), then its path printed. Exit 1 with the reason on stderr when it cannot be.
set -u
fail() { echo "browser-up.sh: $*" >&2; exit 1; }
find_browser() {
  for b in chromium-headless-shell /usr/lib/chromium/chromium-headless-shell chromium chromium-browser \
           google-chrome; do
    command -v "$b" 2>/dev/null && return 0
  done
  return 1
}
if find_browser; then exit 0; fi
[ "$(id -u)" = 0 ] || fail "no headless Chromium, and not root to install it (apt-get install chromium-headless-shell)"
command -v apt-get >/dev/null || fail "no headless Chromium and no apt-get to install it"
export DEBIAN_FRONTEND=noninteractive
timeout -k 10 180 apt-get update -qq >/tmp/browser-up.apt.log 2>&1 \
  || fail "apt-get update failed (package archive unreachable?), see /tmp/browser-up.apt.log"
timeout -k 10 600 apt-get install -y -qq --no-install-recommends chromium-headless-shell \
  >>/tmp/browser-up.apt.log 2>&1 \
  || fail "apt-get install chromium-headless-shell failed, see /tmp/browser-up.apt.log"
find_browser || fail "chromium-headless-shell installed but not found on PATH"
