#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: installs what it needs first (Kamailio from Debian's
# packages when it is missing, a virtual environment .venv with mss and its test tools), then pytest.
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k iif -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
. mss_peers/install.sh
install_kamailio
install_postgresql
install_venv test
exec .venv/bin/python -m pytest "$@"
