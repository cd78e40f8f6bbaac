#!/usr/bin/env bash
# Set up babelcast in ./.venv on a fresh machine. `--test` adds the test extra (NeMo as the oracle).
# torch is installed first, pinned, so that nothing pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="[eval]"
[ "${1:-}" = "--test" ] && extra="[test]"  # the test extra includes eval's packages
# System tools for `babelcast data synth` (and its tests): espeak-ng and sox make the audio, Debian's
# fortune packages hold the sentences (one package per language).
sys_packages="espeak-ng sox fortunes fortunes-de fortunes-es fortunes-it fortunes-ru fortunes-pl fortunes-cs
              fortunes-br fortunes-bg fortunes-zh"
missing=""
for p in $sys_packages; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
          && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; } \
          || echo "warning: could not install$missing; babelcast data synth needs them" >&2
    else
        echo "note: for babelcast data synth, install:$missing (e.g. sudo apt-get install -y$missing)" >&2
    fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".${extra}"
# The live-caption page's end-to-end test drives Debian's headless Chromium.
if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "warning: could not install chromium; the web page test will fail in CI" >&2
fi
