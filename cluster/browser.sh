#!/usr/bin/env bash
# A headless browser, for the test that opens a run's report.html: Debian's chromium and its driver.
# Usage: cluster/browser.sh install   install Debian's chromium and chromium-driver unless both are there
#        cluster/browser.sh paths     print the browser's and the driver's paths
# Selenium is pointed at these two explicitly (tests/test_report.py): nothing downloads a browser.
set -euo pipefail
source "$(dirname "$0")/apt.sh"
browser="${CHROMIUM:-/usr/bin/chromium}"
driver="${CHROMEDRIVER:-/usr/bin/chromedriver}"

present() { [[ -x "$browser" && -x "$driver" ]]; }

install() {
  if present; then return 0; fi
  need_root "chromium ($browser) or chromedriver ($driver) is missing" chromium chromium-driver
  apt_install chromium chromium-driver
  if ! present; then
    echo "error: apt-get installed chromium but $browser or $driver is not there" >&2
    exit 1
  fi
}

case "${1:-}" in
  install) install ;;
  paths)
    if ! present; then echo "error: no chromium at $browser or chromedriver at $driver; run: $0 install" >&2; exit 1; fi
    echo "$browser"
    echo "$driver" ;;
  *) echo "usage: $0 install|paths" >&2; exit 2 ;;
esac
