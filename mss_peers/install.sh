# Shared by the README's two commands (sourced, not run): what the demo and the tests need on a fresh
# machine. install_kamailio: Kamailio from Debian's packages when it is missing. install_venv EXTRA:
# a virtual environment .venv with mss and the named extra (demo or test).

install_kamailio() {
    if ! command -v kamailio >/dev/null 2>&1 && [ ! -x /usr/sbin/kamailio ]; then
        echo "installing kamailio (the provider's SIP server of the demo and the end-to-end tests)" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q kamailio >/dev/null
    fi
    export PATH="$PATH:/usr/sbin:/sbin"
}

install_venv() {
    local python=${PYTHON:-python3}
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e ".[$1]"
}
