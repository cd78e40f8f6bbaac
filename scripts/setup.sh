#!/usr/bin/env bash
# Set up babelcast in ./.venv on a fresh machine: everything `transcribe`, `serve`, `stream` and `eval`
# need. `--test` adds the test extra (NeMo as the oracle) and Chromium for the caption-page test.
# torch is installed first, pinned, so that nothing pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
test_run=false
[ "${1:-}" = "--test" ] && test_run=true
extra="[eval,server,grpc]"
$test_run && extra="[test]"  # the test extra includes eval's, server's and grpc's packages
step() { echo "setup: $*" >&2; }

# System packages, each with its reason: espeak-ng and sox make `babelcast data synth`'s audio, Debian's
# fortune packages hold its sentences (one per language); chromium drives the caption-page test, festival
# and one of its voices the test of data synth --festival, flite that of --flite.
sys_packages="espeak-ng sox fortunes fortunes-de fortunes-es fortunes-it fortunes-ru fortunes-pl fortunes-cs
              fortunes-br fortunes-bg fortunes-zh"
$test_run && sys_packages="$sys_packages chromium festival festvox-kallpc16k flite"
missing=""
for p in $sys_packages; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -z "$missing" ]; then
    step "system packages: all present (espeak-ng, sox, fortunes-*$($test_run && echo ', chromium, festival, flite'))"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    step "apt-get install$missing (for babelcast data synth$($test_run && echo ' and the web page test'); ~1 min)"
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; } \
        || echo "setup: warning: could not install$missing; only babelcast data synth (and its tests) need them" >&2
else
    step "skipped (not root): for babelcast data synth, install:$missing (e.g. sudo apt-get install -y$missing)"
fi
if [ -x .venv/bin/python ]; then step "python venv: .venv (exists)"; else step "python venv: .venv"; python3 -m venv .venv; fi
step "pip: upgrade pip"
.venv/bin/python -m pip install -q --upgrade pip
step "pip: torch 2.13.0 (pinned; the longest step on a fresh machine)"
.venv/bin/python -m pip install -q "torch==2.13.0"
step "pip: babelcast${extra} in editable mode ($($test_run && echo 'NeMo 3.0.0, the server, eval and test packages' || echo 'the server, gRPC and eval packages'))"
.venv/bin/python -m pip install -q -e ".${extra}"
step "done: .venv/bin/babelcast $(.venv/bin/python -c 'import babelcast; print(babelcast.__version__)')"
