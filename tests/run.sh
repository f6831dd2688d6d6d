#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: installs what it needs first (Kamailio from Debian's
# packages when it is missing, a virtual environment .venv with mss and its test tools), then pytest.
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k iif -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v kamailio >/dev/null 2>&1 && [ ! -x /usr/sbin/kamailio ]; then
    echo "installing kamailio (the PSS of the end-to-end tests)" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q kamailio >/dev/null
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
export PATH="$PATH:/usr/sbin:/sbin"
exec .venv/bin/python -m pytest "$@"
