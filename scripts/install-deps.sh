#!/usr/bin/env bash
# install-deps.sh - install the Debian packages tlsgate needs to build, run and
# be tested (DPDK, the network-namespace lab tools, test servers/clients).
#
# Idempotent: packages that are already installed are left alone, and
# `apt-get update` only runs (once) when something actually has to be
# installed, so the script is cheap to call from CI or other scripts.
set -euo pipefail

readonly PROG="${0##*/}"

# Why each package is here:
#   libdpdk-dev dpdk dpdk-dev pkg-config build-essential
#                       - build the dataplane against the system DPDK (found
#                         through pkg-config), dpdk-devbind.py, dpdk-testpmd
#   python3 pciutils kmod
#                       - dpdk-devbind.py is a python script that calls lspci
#                         and needs modprobe for vfio-pci
#   iproute2 ethtool iputils-ping procps
#                       - scripts/lab.sh and setup-interfaces.sh (ip, ethtool,
#                         ping, sysctl)
#   curl nginx openssl  - end-to-end tests: TLS client, origin server, certs
#   ca-certificates     - the system CA bundle the trust store includes by default
#   tcpdump tshark      - capture/inspect traffic in tests
#   prometheus          - provides promtool, used to lint the metrics output
#   hping3 python3-scapy
#                       - the attack tests: SYN floods, fragmented SYNs, odd TCP
#   softhsm2            - a PKCS#11 token for the decryption CA's key (tests; an
#                         appliance may use its HSM's own module instead)
#   python3-pip python3-cryptography
#                       - install and run ja4plus (below)
#   chromium libnss3-tools nghttp2-client
#                       - a real browser through the appliance (headless, with
#                         an NSS database made by certutil) and h2load (HTTP/2)
#   rsyslog rsyslog-relp
#                       - a syslog collector with a RELP input: events are
#                         delivered to it at least once in the tests
#   apache2-utils linux-perf
#                       - ab: new connections per second in `make bench-lab`;
#                         perf: where the relay's time goes (TG_BENCH_PERF=1)
readonly PACKAGES=(
    libdpdk-dev dpdk dpdk-dev pkg-config build-essential
    iproute2 ethtool iputils-ping curl nginx openssl ca-certificates
    tcpdump tshark prometheus python3 pciutils kmod procps systemd util-linux
    hping3 python3-scapy softhsm2 python3-pip python3-cryptography
    chromium libnss3-tools nghttp2-client rsyslog rsyslog-relp apache2-utils linux-perf
)

# Python tools from PyPI, pinned, into a directory of their own (never the
# system's site-packages):
#   ja4plus             - an independent JA4 implementation; the JA4 tests
#                         cross-check tlsgate's fingerprints against it
readonly PY_DIR=/opt/tlsgate-test/python
readonly PY_TOOLS=(ja4plus==1.4.0)

usage() {
    cat <<EOF
Usage: $PROG [--check] [-h|--help]

Install the Debian packages needed to build and test tlsgate:
  ${PACKAGES[*]}

Only missing packages are installed; 'apt-get update' runs at most once and
only if something is missing. Must run as root to install; as a normal user
(or with --check) it only reports what is missing.

Options:
  --check     only report missing packages, never install (exit 1 if any)
  -h, --help  show this help

Exit codes:
  0  all packages present and DPDK verified (libdpdk via pkg-config,
     dpdk-testpmd on PATH)
  1  usage error, or packages missing and not installed (not root / --check)
  2  environment error (no dpkg/apt) or post-install verification failed
EOF
}

log() { printf '%s: %s\n' "$PROG" "$*"; }
die() { local rc=$1; shift; printf '%s: error: %s\n' "$PROG" "$*" >&2; exit "$rc"; }

# A package counts as installed only in state "install ok installed"; e.g.
# "deinstall ok config-files" (removed, config kept) must be reinstalled.
is_installed() {
    local status
    status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || return 1
    [[ $status == "install ok installed" ]]
}

verify() {
    # The build finds DPDK through pkg-config, and the tests use testpmd as a
    # reference forwarder, so check both rather than trusting dpkg alone.
    pkg-config --exists libdpdk ||
        die 2 "pkg-config cannot find libdpdk (is libdpdk-dev installed and PKG_CONFIG_PATH sane?)"
    local testpmd
    testpmd=$(command -v dpdk-testpmd) || die 2 "dpdk-testpmd not found on PATH (package dpdk-dev)"
    log "verified: libdpdk $(pkg-config --modversion libdpdk) via pkg-config, dpdk-testpmd at $testpmd"
}

# Installs PY_TOOLS into PY_DIR unless each is there at its pinned version.
install_python_tools() {
    local tool name version missing=()
    for tool in "${PY_TOOLS[@]}"; do
        name=${tool%%==*} version=${tool##*==}
        [[ -d $PY_DIR/$name-$version.dist-info ]] || missing+=("$tool")
    done
    ((${#missing[@]} == 0)) && return 0
    log "pip: installing ${missing[*]} into $PY_DIR"
    /usr/bin/python3 -m pip install -q --no-deps --no-compile --target "$PY_DIR" "${missing[@]}" ||
        die 2 "pip could not install ${missing[*]}"
}

main() {
    local check_only=0
    while (($#)); do
        case $1 in
            --check) check_only=1 ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; die 1 "unknown argument: $1" ;;
        esac
        shift
    done

    command -v dpkg-query >/dev/null || die 2 "dpkg-query not found: this script supports Debian/Ubuntu only"

    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        is_installed "$pkg" || missing+=("$pkg")
    done

    if ((${#missing[@]} == 0)); then
        log "all ${#PACKAGES[@]} packages already installed"
        ((check_only || EUID != 0)) || install_python_tools
        verify
        exit 0
    fi

    if ((check_only)); then
        log "missing packages: ${missing[*]}"
        exit 1
    fi
    if ((EUID != 0)); then
        # Do not try sudo implicitly: callers (CI, provisioning) decide how
        # to get root; we just say exactly what is needed.
        printf 'run as root: missing packages %s\n' "${missing[*]}" >&2
        exit 1
    fi

    command -v apt-get >/dev/null || die 2 "apt-get not found"

    # tshark's postinst asks whether non-root users may capture packets; with
    # DEBIAN_FRONTEND=noninteractive it would take the default anyway, but
    # preseeding makes the answer explicit (no setuid dumpcap) and stable.
    local p
    for p in "${missing[@]}"; do
        if [[ $p == tshark ]]; then
            log "preseeding debconf: wireshark-common/install-setuid=false"
            echo 'wireshark-common wireshark-common/install-setuid boolean false' |
                debconf-set-selections
            break
        fi
    done

    log "apt-get update"
    apt-get update -q

    log "installing: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"

    install_python_tools
    verify
}

main "$@"
