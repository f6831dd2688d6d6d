# Shared by the README's two commands (sourced, not run): what the demo and the tests need on a fresh
# machine. install_kamailio: Kamailio from Debian's packages when it is missing. install_venv EXTRA:
# a virtual environment .venv with mss and the named extra (demo or test), after install_bpf_toolchain:
# clang and libbpf-dev from Debian's packages when they are missing, so the build compiles the relay's
# kernel fast path (mss/bpf/; without them mss builds and relays in userspace).

install_kamailio() {
    if ! command -v kamailio >/dev/null 2>&1 && [ ! -x /usr/sbin/kamailio ]; then
        echo "installing kamailio (the provider's SIP server of the demo and the end-to-end tests)" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q kamailio >/dev/null
    fi
    export PATH="$PATH:/usr/sbin:/sbin"
    install_kamailio_tls
}

# Kamailio's tls.so (Debian kamailio-tls-modules) when it is missing: the TLS listener of the
# end-to-end test of SIP over TLS.
install_kamailio_tls() {
    if ! compgen -G "/usr/lib/*/kamailio/modules/tls.so" >/dev/null && [ ! -f /usr/lib/kamailio/modules/tls.so ] \
        && command -v apt-get >/dev/null 2>&1; then
        echo "installing kamailio-tls-modules (Kamailio's TLS listener in the end-to-end tests)" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        { $sudo apt-get update -qq \
            && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q kamailio-tls-modules >/dev/null; } \
            || echo "kamailio-tls-modules not installed: the SIP over TLS test fails" >&2
    fi
}

# PostgreSQL's server binaries (Debian postgresql) when they are missing: the tests start their own
# server in a temp directory (tests/pg.py), so the cluster the package makes is stopped and disabled.
install_postgresql() {
    if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && command -v apt-get >/dev/null 2>&1; then
        echo "installing postgresql (the shared journal's server in the tests)" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q postgresql >/dev/null
        { $sudo service postgresql stop && $sudo update-rc.d postgresql disable; } >/dev/null 2>&1 || true
    fi
}

install_bpf_toolchain() {
    if ! command -v clang >/dev/null 2>&1 || [ ! -f /usr/include/bpf/bpf_helpers.h ]; then
        if ! command -v apt-get >/dev/null 2>&1; then
            echo "no apt-get: the relay's kernel fast path is not built (clang, libbpf-dev missing)" >&2
            return 0
        fi
        echo "installing clang and libbpf-dev (the build of the relay's kernel fast path)" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q clang libbpf-dev >/dev/null
    fi
}

# G.729 ringback: bcg729's headers and library (Debian libbcg729-dev) when they are missing, so the
# build compiles mss/_g729.pyx (without them mss builds and plays no ringback on a G.729 leg).
install_bcg729() {
    if [ ! -f /usr/include/bcg729/encoder.h ]; then
        if ! command -v apt-get >/dev/null 2>&1; then
            echo "no apt-get: mss is built without G.729 ringback (libbcg729-dev missing)" >&2
            return 0
        fi
        echo "installing libbcg729-dev (the build of mss's G.729 ringback)" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q libbcg729-dev >/dev/null
    fi
}

# systemd-analyze (Debian systemd, without what it recommends) for the tests only: tests/test_sdnotify.py
# verifies packaging/systemd/mss.service with it, and skips that check when it is missing.
install_systemd_analyze() {
    if ! command -v systemd-analyze >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
        echo "installing systemd (systemd-analyze verifies mss's unit file in the tests)" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        { $sudo apt-get update -qq \
            && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends systemd >/dev/null; } \
            || echo "systemd not installed: the unit file check is skipped" >&2
    fi
}

install_venv() {
    [ "$1" != test ] || install_systemd_analyze
    install_bpf_toolchain
    install_bcg729
    local python=${PYTHON:-python3}
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e ".[$1]"
}
