#!/usr/bin/env bash
# Rebuilds ../editor.js (the playground's CodeMirror 6 editor, one minified file) from editor.mjs.
# Needs Node.js and npm (packages from the public npm registry, versions pinned by package-lock.json).
# Not part of `make test`: the built file is committed, so the service never needs npm at run time.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
echo "built $(cd .. && pwd)/editor.js ($(wc -c < ../editor.js) bytes)"
