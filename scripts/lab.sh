#!/usr/bin/env bash
# lab.sh - network-namespace lab for running the tlsgate dataplane without
# NICs. The appliance sits "in the wire" between a client and a server
#
#   [ns P-client]                 [root namespace]                [ns P-server]
#   P-c0 NET.1/24 <--veth--> P-cli | tlsgate (af_packet) | P-srv <--veth--> P-s0 NET.2/24
#
# P-cli (inside port) and P-srv (outside port) stay in the root namespace
# without addresses; DPDK drives them with net_af_packet. Nothing bridges
# them, so client and server only reach each other while the dataplane runs.
set -euo pipefail

readonly PROG="${0##*/}"
readonly EX_OK=0 EX_USAGE=1 EX_FAILED=2 EX_DOWN=3 EX_PARTIAL=4

P=${TG_LAB_PREFIX:-tg}
NET=${TG_LAB_NET:-198.18.0}
IPV6=${TG_LAB_IPV6:-0}

usage() {
    cat <<EOF
Usage: $PROG up|down|status
       $PROG -h|--help

Network-namespace lab for the tlsgate dataplane (needs root):

  ns ${P}-client: ${P}-c0 ${NET}.1/24 <-veth-> ${P}-cli  (root ns, appliance inside port)
  ns ${P}-server: ${P}-s0 ${NET}.2/24 <-veth-> ${P}-srv  (root ns, appliance outside port)

Commands:
  up      create the lab; safe to repeat (repairs a partial lab)
  down    remove the lab; safe to repeat
  status  first line 'up', 'down' or 'partial', then details

Environment:
  TG_LAB_PREFIX  name prefix, 1-8 chars [A-Za-z0-9_-] (default tg); lets
                 tests run their own lab next to others
  TG_LAB_NET     first three octets of the lab /24 (default 198.18.0);
                 client is .1, server is .2
  TG_LAB_IPV6    1 keeps IPv6 on the namespace ends (default 0: disabled to
                 avoid router-solicitation/DAD noise); the appliance ports in
                 the root namespace never get IPv6

Exit codes:
  0  ok (status: lab is up)
  1  usage error (bad command or environment value)
  2  failure (not root, missing tool, conflicting interface, command failed)
  3  status: lab is down
  4  status: lab is partial
EOF
}

log() { printf '%s: %s\n' "$PROG" "$*"; }
die() { local rc=$1; shift; printf '%s: error: %s\n' "$PROG" "$*" >&2; exit "$rc"; }
usage_error() { printf '%s: error: %s\n' "$PROG" "$*" >&2; printf "Try '%s --help'.\n" "$PROG" >&2; exit "$EX_USAGE"; }

validate_env() {
    # Linux interface names are at most 15 chars; the longest we build is
    # "${P}-cli"/"${P}-srv" (prefix + 4), so cap the prefix at 8 to leave room.
    [[ $P =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,7}$ ]] ||
        usage_error "TG_LAB_PREFIX '$P' must be 1-8 characters of [A-Za-z0-9_-], starting alphanumeric"
    local octet='(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])'
    [[ $NET =~ ^$octet\.$octet\.$octet$ ]] ||
        usage_error "TG_LAB_NET '$NET' must be three dotted octets, e.g. 198.18.0"
    [[ $IPV6 == 0 || $IPV6 == 1 ]] || usage_error "TG_LAB_IPV6 must be 0 or 1, got '$IPV6'"
}

set_names() {
    NS_CLI="${P}-client"
    NS_SRV="${P}-server"
    IF_C0="${P}-c0"   # client end, in NS_CLI
    IF_CLI="${P}-cli" # appliance inside port, root ns
    IF_S0="${P}-s0"   # server end, in NS_SRV
    IF_SRV="${P}-srv" # appliance outside port, root ns
    ADDR_CLI="${NET}.1/24"
    ADDR_SRV="${NET}.2/24"
}

require_root() {
    ((EUID == 0)) || die "$EX_FAILED" "must run as root (network namespaces and links)"
    local t
    for t in ip ethtool sysctl; do
        command -v "$t" >/dev/null || die "$EX_FAILED" "'$t' not found; run scripts/install-deps.sh"
    done
}

# Run a command, turning a failure into a clear message and exit 2.
run() { "$@" || die "$EX_FAILED" "command failed (exit $?): $*"; }

# (awk, not grep -q: an early-exiting grep could SIGPIPE the writer and
# pipefail would then turn a match into a failure.)
ns_exists() { ip netns list | awk -v n="$1" '$1 == n { f = 1 } END { exit !f }'; }
link_in_root() { ip link show dev "$1" >/dev/null 2>&1; }
link_in_ns() { ns_exists "$1" && ip -n "$1" link show dev "$2" >/dev/null 2>&1; }
# link_is_up NS|"" IF: administratively up (flag UP).
link_is_up() {
    local -a n=()
    local out
    if [[ -n $1 ]]; then n=(-n "$1"); fi
    out=$(ip "${n[@]}" -o link show dev "$2" 2>/dev/null) || return 1
    [[ $out =~ [\<,]UP[,\>] ]]
}

# is_veth IF: IF (root namespace) is a veth, i.e. plausibly ours.
is_veth() {
    local details
    details=$(ip -d -o link show dev "$1" 2>/dev/null) || return 1
    [[ $details == *" veth "* ]]
}

# has_addr NS IF ADDR/LEN: IF in NS carries that IPv4 address.
has_addr() {
    ip -n "$1" -4 -o addr show dev "$2" 2>/dev/null |
        awk -v a="$3" '$4 == a { f = 1 } END { exit !f }'
}

ensure_ns() {
    if ns_exists "$1"; then
        log "namespace $1 exists"
    else
        run ip netns add "$1"
        log "created namespace $1"
    fi
}

# ensure_pair ROOT_IF NS_IF NS: a veth pair with ROOT_IF in the root namespace
# and its peer NS_IF in NS, repairing whatever a crashed or interrupted run
# may have left behind.
ensure_pair() {
    local root_if=$1 ns_if=$2 ns=$3
    if link_in_root "$root_if"; then
        is_veth "$root_if" ||
            die "$EX_FAILED" "$root_if exists but is not a veth; remove it or pick another TG_LAB_PREFIX"
        if link_in_root "$ns_if"; then
            # Interrupted between creation and move: finish the move.
            run ip link set dev "$ns_if" netns "$ns"
            log "moved $ns_if into $ns"
        fi
        # Make sure the ns end really is ROOT_IF's peer (not a stale
        # leftover with the same name): compare veth peer_ifindex.
        local peer idx
        peer=$(ethtool -S "$root_if" 2>/dev/null | awk '$1 == "peer_ifindex:" {print $2}')
        idx=$(ip -n "$ns" -o link show dev "$ns_if" 2>/dev/null | awk -F': ' '{print $1}')
        if [[ -n $peer && $peer == "$idx" ]]; then
            log "veth $root_if <-> $ns/$ns_if exists"
            return 0
        fi
        log "veth $root_if has no peer $ns_if in $ns; recreating"
        run ip link del dev "$root_if"
    fi
    # A same-named leftover would make the creation below fail.
    if link_in_ns "$ns" "$ns_if"; then run ip -n "$ns" link del dev "$ns_if"; fi
    if link_in_root "$ns_if"; then run ip link del dev "$ns_if"; fi
    # Create the peer directly inside the namespace: one atomic step, so no
    # namespace-side interface is ever visible in the root namespace.
    run ip link add "$root_if" type veth peer name "$ns_if" netns "$ns"
    log "created veth $root_if <-> $ns/$ns_if"
}

# set_ipv4 NS IF ADDR: make ADDR the only IPv4 address of IF (idempotent and
# without a window where the address is missing, unlike flush + add).
set_ipv4() {
    local ns=$1 ifc=$2 want=$3 a
    while read -r a; do
        if [[ -n $a && $a != "$want" ]]; then run ip -n "$ns" addr del "$a" dev "$ifc"; fi
    done < <(ip -n "$ns" -4 -o addr show dev "$ifc" | awk '{print $4}')
    run ip -n "$ns" addr replace "$want" dev "$ifc"
}

# sysctl_if NS|"" IF PROTO.KEY VALUE: net.PROTO.conf.IF.KEY=VALUE, skipped when the
# protocol is absent (e.g. kernel booted with ipv6.disable=1).
sysctl_if() {
    local ns=$1 ifc=$2 key=$3 value=$4
    local -a ex=()
    if [[ -n $ns ]]; then ex=(ip netns exec "$ns"); fi
    local proto=${key%%.*} name=${key#*.}
    "${ex[@]}" test -d "/proc/sys/net/$proto/conf/$ifc" || return 0
    run "${ex[@]}" sysctl -qw "net.$proto.conf.$ifc.$name=$value"
}

# Namespace end: a normal host stack. Checksum/segmentation offloads are
# turned off because af_packet hands the dataplane packets exactly as the
# sender's veth left them: with offloads on that means TCP checksums not
# filled in yet and 64 KiB "super-packets", which a real wire never carries
# and which the dataplane would forward (or reject) as-is.
setup_ns_end() {
    local ns=$1 ifc=$2 addr=$3
    local v6off=$((IPV6 == 1 ? 0 : 1))
    run ip -n "$ns" link set dev lo up
    # Before the link goes up, so no router solicitation/DAD is ever sent.
    sysctl_if "$ns" "$ifc" ipv6.disable_ipv6 "$v6off"
    run ip -n "$ns" link set dev "$ifc" mtu 1500
    run ip netns exec "$ns" ethtool -K "$ifc" tx off tso off gso off gro off >/dev/null
    set_ipv4 "$ns" "$ifc" "$addr"
    run ip -n "$ns" link set dev "$ifc" up
}

# Root end = appliance port: it must be a silent wire. No addresses, no
# IPv6 (no RS/DAD/MLD), no ARP replies; all offloads off so frames read by
# af_packet are real wire frames; promiscuous so frames addressed to the
# far side are delivered to the dataplane.
setup_root_end() {
    local ifc=$1 f
    sysctl_if "" "$ifc" ipv6.disable_ipv6 1
    sysctl_if "" "$ifc" ipv4.arp_ignore 8
    run ip -4 addr flush dev "$ifc"
    run ip link set dev "$ifc" mtu 1500
    # One feature per call: ethtool rejects the whole request if any one
    # feature is fixed on this kernel/driver. rxvlan/txvlan keep VLAN tags in
    # the frame instead of in skb metadata.
    for f in gro lro tso gso tx rx rxvlan txvlan; do
        ethtool -K "$ifc" "$f" off >/dev/null 2>&1 || true
    done
    run ip link set dev "$ifc" promisc on
    run ip link set dev "$ifc" up
}

cmd_up() {
    ensure_ns "$NS_CLI"
    ensure_ns "$NS_SRV"
    ensure_pair "$IF_CLI" "$IF_C0" "$NS_CLI"
    ensure_pair "$IF_SRV" "$IF_S0" "$NS_SRV"
    setup_root_end "$IF_CLI"
    setup_root_end "$IF_SRV"
    setup_ns_end "$NS_CLI" "$IF_C0" "$ADDR_CLI"
    setup_ns_end "$NS_SRV" "$IF_S0" "$ADDR_SRV"
    log "lab '$P' is up"
    cat <<EOF

  $NS_CLI: $IF_C0 $ADDR_CLI <-> $IF_CLI | tlsgate | $IF_SRV <-> $NS_SRV: $IF_S0 $ADDR_SRV

  DPDK ports (inside, outside):
    --vdev=net_af_packet0,iface=$IF_CLI --vdev=net_af_packet1,iface=$IF_SRV
  Try it (works only while the dataplane forwards; the ports are not bridged):
    ip netns exec $NS_CLI ping ${NET}.2
EOF
}

cmd_down() {
    local ns pids ifc
    # Deleting a root end deletes its peer at once; a namespace may outlive
    # 'ip netns del' (and keep its veth) while processes still run in it.
    for ifc in "$IF_CLI" "$IF_SRV" "$IF_C0" "$IF_S0"; do
        link_in_root "$ifc" || continue
        if is_veth "$ifc"; then
            run ip link del dev "$ifc"
            log "deleted link $ifc"
        else
            # Same name, but not something 'up' creates: not ours to delete.
            log "warning: $ifc is not a veth; left alone"
        fi
    done
    for ns in "$NS_CLI" "$NS_SRV"; do
        ns_exists "$ns" || continue
        pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
        if [[ -n $pids ]]; then
            log "warning: processes still running in $ns (pids: ${pids% }); the namespace lives on until they exit"
        fi
        run ip netns del "$ns"
        log "deleted namespace $ns"
    done
    log "lab '$P' is down"
}

cmd_status() {
    local have=0 total=0 state
    local -a lines=()
    check() { # check DESCRIPTION COMMAND...: count a present component
        total=$((total + 1))
        if "${@:2}"; then
            have=$((have + 1))
            lines+=("  ok       $1")
        else
            lines+=("  missing  $1")
        fi
    }
    check "namespace $NS_CLI" ns_exists "$NS_CLI"
    check "namespace $NS_SRV" ns_exists "$NS_SRV"
    check "$IF_CLI up (root ns)" link_is_up "" "$IF_CLI"
    check "$IF_SRV up (root ns)" link_is_up "" "$IF_SRV"
    check "$IF_C0 up in $NS_CLI" link_is_up "$NS_CLI" "$IF_C0"
    check "$IF_S0 up in $NS_SRV" link_is_up "$NS_SRV" "$IF_S0"
    check "$IF_C0 has $ADDR_CLI" has_addr "$NS_CLI" "$IF_C0" "$ADDR_CLI"
    check "$IF_S0 has $ADDR_SRV" has_addr "$NS_SRV" "$IF_S0" "$ADDR_SRV"

    if ((have == total)); then
        state=up
    elif ((have == 0)) && ! link_in_root "$IF_CLI" && ! link_in_root "$IF_SRV" &&
        ! link_in_root "$IF_C0" && ! link_in_root "$IF_S0"; then
        state=down
    else
        state=partial
    fi
    echo "$state"
    printf '%s\n' "${lines[@]}"

    local ifc ns
    echo "root namespace links:"
    for ifc in "$IF_CLI" "$IF_SRV" "$IF_C0" "$IF_S0"; do
        if link_in_root "$ifc"; then ip -br link show dev "$ifc" | sed 's/^/  /'; fi
    done
    for ns in "$NS_CLI" "$NS_SRV"; do
        ns_exists "$ns" || continue
        echo "namespace $ns:"
        ip -n "$ns" -br link show | sed 's/^/  /'
        ip -n "$ns" -br -4 addr show scope global | sed 's/^/  ipv4: /'
    done

    case $state in
        up) return "$EX_OK" ;;
        down) return "$EX_DOWN" ;;
        *) return "$EX_PARTIAL" ;;
    esac
}

main() {
    (($# == 1)) || { usage >&2; exit "$EX_USAGE"; }
    case $1 in
        -h | --help) usage; exit "$EX_OK" ;;
        up | down | status) ;;
        *) usage_error "unknown command: $1" ;;
    esac
    validate_env
    set_names
    require_root
    "cmd_$1"
}

main "$@"
