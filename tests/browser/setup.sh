#!/usr/bin/env bash
# Prepares the browser tests of the console (tests/console.rs runs
# tests/browser/console.mjs): Node.js with npm, Debian's Chromium at
# /usr/bin/chromium, and playwright-core pinned by package-lock.json,
# installed into tests/browser/node_modules (ignored by git).
#
# Running it again is quick: nothing is installed when all is there and
# the lock file has not changed since the last install.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
chromium="${CHROMIUM:-/usr/bin/chromium}"

log() { printf '[browser] %s\n' "$*" >&2; }
die() { printf '[browser] error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@" || die "need root to run: $*"
  else die "need root to run: $* (no sudo)"; fi
}

apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "cannot install $*: no apt-get (install them by hand)"
  log "installing Debian packages: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ -x "$chromium" ] || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}"
fi
[ -x "$chromium" ] || die "$chromium is missing after installing chromium"

stamp="$here/node_modules/.callflow-lock"
want="$(sha256sum "$here/package-lock.json" | cut -c1-64)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing playwright-core (npm ci)"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$want" > "$stamp"
fi
log "ready: $(node --version), $("$chromium" --version 2>/dev/null | head -n1), playwright-core $(node -p "require('$here/node_modules/playwright-core/package.json').version")"
