#!/usr/bin/env bash
# Installs Debian's Chromium for the browser-player test (tests/test_play.py drives it with
# Playwright). As root it must succeed (CI); elsewhere it tries sudo and otherwise warns: the
# browser test then skips with a message saying so.
set -uo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ]; then
    apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
    command -v chromium >/dev/null 2>&1 || { echo "could not install chromium with apt-get" >&2; exit 1; }
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get install -y -q chromium >/dev/null || echo "chromium not installed: the browser test will skip" >&2
else
    echo "chromium not installed (needs root: apt-get install chromium): the browser test will skip" >&2
fi
exit 0
