#!/usr/bin/env bash
# Installs what the browser-client tests (crates/server/tests/browser.rs) need on a fresh
# machine, and nothing that is already there:
#   - Debian's chromium, when /usr/bin/chromium is absent (apt-get; needs root);
#   - playwright-core, with `npm ci` in crates/server/web/tests (the versions in its
#     package-lock.json), when node_modules is missing or older than the lock file.
# Node.js itself is expected on the machine (node and npm, version 20 or later).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ ! -x /usr/bin/chromium ]; then
    echo "browser-deps: installing chromium (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi

tests=crates/server/web/tests
if [ ! -f "$tests/node_modules/playwright-core/package.json" ] \
    || [ "$tests/package-lock.json" -nt "$tests/node_modules/.package-lock.json" ]; then
    echo "browser-deps: npm ci in $tests"
    (cd "$tests" && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "browser-deps: node $(node --version), $(/usr/bin/chromium --version 2>/dev/null || echo 'chromium ?')," \
    "playwright-core $(node -p "require('./$tests/node_modules/playwright-core/package.json').version")"
