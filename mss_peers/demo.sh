#!/usr/bin/env bash
# The README's first command: one callback on this machine, on the bundled setup. Installs what the
# demo needs (Kamailio when missing, .venv with mss and the pjsua2 phones), then runs `mss demo`:
# Kamailio as the provider, two phones, mss and an AS; prints the timeline and the audio check.
# Extra arguments go to `mss demo`, e.g. `bash mss_peers/demo.sh --duration 8`.
set -euo pipefail
cd "$(dirname "$0")/.."
. mss_peers/install.sh
install_kamailio
install_venv demo
exec .venv/bin/mss demo "$@"
