#!/usr/bin/env bash
# Installs what the browser tests (pytest -m browser) need on a Debian machine: Debian's chromium, and an emoji
# font so the status bar's icons render in screenshots; plus Node.js/npm for the TypeScript client's type-check
# (tests/clients). Idempotent: does nothing when all are there.
# Playwright drives this chromium (executable_path=/usr/bin/chromium); never run `playwright install`.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || need+=(fonts-noto-color-emoji)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need[@]}"
fi
command -v chromium
