#!/usr/bin/env bash
# setup-interfaces.sh - prepare a tlsgate appliance for DPDK: hugepages and
# binding NIC ports to vfio-pci (and back to their kernel driver).
#
# Binding the wrong port to vfio-pci takes it away from the kernel, so a
# management port disappears together with the SSH session using it. The
# script therefore refuses to bind a port that carries (directly or through a
# VLAN/bond/bridge on top of it) the default route unless --force is given.
#
# Everything external is overridable so the script can be tested without
# hardware: SYSFS (fake sysfs tree), IP_CMD, DEVBIND, MODPROBE, MOUNT,
# HUGEPAGE_MNT, STATE_DIR.
set -euo pipefail

readonly PROG="${0##*/}"

SYSFS=${SYSFS:-/sys}
IP_CMD=${IP_CMD:-ip}
DEVBIND=${DEVBIND:-dpdk-devbind.py}
MODPROBE=${MODPROBE:-modprobe}
STATE_DIR=${STATE_DIR:-/var/lib/tlsgate/setup-interfaces}
HUGEPAGE_MNT=${HUGEPAGE_MNT:-/dev/hugepages}
MOUNT=${MOUNT:-mount}

readonly EX_OK=0 EX_USAGE=1 EX_REFUSED=2 EX_FAILED=3

DRY_RUN=0
FORCE=0
DRIVER=""

usage() {
    cat <<EOF
Usage: $PROG [--dry-run] [--force] COMMAND [ARGS...]

Prepare this machine for the tlsgate DPDK dataplane.

Commands:
  status                 show hugepages, whether vfio-pci is loaded, and
                         '$DEVBIND --status-dev net'
  hugepages N            reserve N 2 MiB hugepages and mount hugetlbfs at
                         $HUGEPAGE_MNT if it is not mounted
  bind PCI_ADDR...       load vfio-pci, set each port's kernel interface
                         down and bind it to vfio-pci; the kernel driver in
                         use is remembered for 'unbind'
  unbind PCI_ADDR... [--driver DRIVER]
                         give the ports back to DRIVER (default: the driver
                         recorded by 'bind')

PCI_ADDR is DDDD:BB:DD.F (e.g. 0000:03:00.0) or BB:DD.F (0000: is assumed).

Options:
  --dry-run      print each change as '+ command' (and sysfs writes as
                 '+ echo VALUE > FILE') instead of doing it; read-only checks
                 (sysfs lookups, default-route refusal) still run
  --force        bind even a port that carries the default route (also
                 passed to $DEVBIND as --force)
  --driver NAME  kernel driver for 'unbind'
  -h, --help     show this help

Environment:
  SYSFS      sysfs root (default /sys); tests point it at a fake tree
  IP_CMD     'ip' command (default ip), used to read default routes and to
             set links down
  DEVBIND    dpdk-devbind command (default dpdk-devbind.py)
  MODPROBE   modprobe command (default modprobe)
  MOUNT      mount command (default mount)
  HUGEPAGE_MNT  hugetlbfs mount point (default /dev/hugepages)
  STATE_DIR  where bind records original drivers
             (default /var/lib/tlsgate/setup-interfaces)

Exit codes:
  0  success
  1  usage error (bad command, option, PCI address or count)
  2  refused (port carries the default route, or PCI address not present)
  3  a command or sysfs write failed
EOF
}

err() { printf '%s: error: %s\n' "$PROG" "$*" >&2; }
die() { local rc=$1; shift; err "$*"; exit "$rc"; }
usage_error() { err "$*"; printf "Try '%s --help'.\n" "$PROG" >&2; exit "$EX_USAGE"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
info() { printf '%s: %s\n' "$PROG" "$*"; }

# run CMD...: the single place where changes happen, so --dry-run cannot miss
# one. A failing command maps to exit 3 so it cannot be mistaken for a refusal.
run() {
    printf '+ %s\n' "$*"
    ((DRY_RUN)) && return 0
    "$@" || die "$EX_FAILED" "command failed (exit $?): $*"
}

# write_file VALUE FILE: sysfs writes go through here for the same reason.
write_file() {
    local value=$1 file=$2
    printf '+ echo %s > %s\n' "$value" "$file"
    ((DRY_RUN)) && return 0
    printf '%s\n' "$value" >"$file" || die "$EX_FAILED" "could not write $value to $file"
}

# normalise_pci ADDR: print the canonical lowercase DDDD:BB:DD.F form or fail.
normalise_pci() {
    local addr=${1,,}
    if [[ $addr =~ ^[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$ ]]; then
        addr="0000:$addr"
    fi
    [[ $addr =~ ^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$ ]] || return 1
    printf '%s\n' "$addr"
}

# pci_dev ADDR: sysfs directory of an existing PCI device, or refuse.
pci_dev() {
    local dev="$SYSFS/bus/pci/devices/$1"
    [[ -e $dev ]] || die "$EX_REFUSED" "PCI device $1 does not exist ($dev not found)"
    printf '%s\n' "$dev"
}

# pci_ifaces ADDR: kernel network interfaces of the device (none when the
# device is already bound to vfio-pci or has no net driver).
pci_ifaces() {
    local d
    for d in "$SYSFS/bus/pci/devices/$1/net/"*; do
        [[ -e $d ]] && printf '%s\n' "${d##*/}"
    done
    return 0
}

# current_driver ADDR: basename of the driver symlink, empty if unbound.
current_driver() {
    local link="$SYSFS/bus/pci/devices/$1/driver"
    if [[ -L $link ]]; then
        local target
        target=$(readlink "$link")
        printf '%s\n' "${target##*/}"
    fi
}

# stacked_ifaces IFACE: IFACE plus everything stacked on it (VLANs, bonds,
# bridges, macvlans...). A default route via ens3f0.100 dies with ens3f0.
stacked_ifaces() {
    local -a todo=("$1") seen=()
    local i u s dup
    while ((${#todo[@]})); do
        i=${todo[0]}
        todo=("${todo[@]:1}")
        dup=0
        for s in "${seen[@]}"; do [[ $s == "$i" ]] && dup=1; done
        ((dup)) && continue
        seen+=("$i")
        printf '%s\n' "$i"
        for u in "$SYSFS/class/net/$i/upper_"*; do
            [[ -e $u || -L $u ]] && todo+=("${u##*/upper_}")
        done
    done
}

# default_routes_via IFACE: print the default routes (IPv4 and IPv6) that
# use IFACE, matched as the exact word after "dev" so that ens3f0 does not
# match ens3f0.100. Multipath "nexthop ... dev X" lines are covered too.
default_routes_via() {
    local iface=$1 fam
    for fam in -4 -6; do
        # A host without IPv6 makes 'ip -6' fail; that just means no route.
        { "$IP_CMD" "$fam" route show default 2>/dev/null || true; } |
            awk -v ifc="$iface" -v fam="$fam" '
                /^[^ \t]/ { head = $0 }
                { for (i = 1; i < NF; i++) if ($i == "dev" && $(i + 1) == ifc) { print "ip " fam ": " head; next } }'
    done
}

cmd_status() {
    (($# == 0)) || usage_error "status takes no arguments"
    local d name nr free
    echo "Hugepages:"
    local found=0
    for d in "$SYSFS/kernel/mm/hugepages/hugepages-"*; do
        [[ -d $d ]] || continue
        found=1
        name=${d##*/hugepages-}
        nr=$(<"$d/nr_hugepages")
        free=$(cat "$d/free_hugepages" 2>/dev/null || echo "?")
        printf '  %-10s total %-6s free %s\n' "$name" "$nr" "$free"
    done
    ((found)) || echo "  (no hugepage support in $SYSFS/kernel/mm/hugepages)"
    if grep -qs " $HUGEPAGE_MNT hugetlbfs " /proc/mounts; then
        echo "  hugetlbfs mounted at $HUGEPAGE_MNT"
    else
        echo "  hugetlbfs NOT mounted at $HUGEPAGE_MNT"
    fi

    # /sys/module/vfio_pci exists whether it is a module or built in.
    if [[ -d $SYSFS/module/vfio_pci ]]; then
        echo "vfio-pci: loaded"
    else
        echo "vfio-pci: not loaded"
    fi

    echo "Network devices:"
    if command -v "$DEVBIND" >/dev/null; then
        "$DEVBIND" --status-dev net 2>&1 | grep -v 'Unable to load libkmod' || true
    else
        echo "  ($DEVBIND not found; run scripts/install-deps.sh)"
    fi
}

cmd_hugepages() {
    (($# == 1)) || usage_error "hugepages takes exactly one argument: the number of 2 MiB pages"
    local n=$1
    [[ $n =~ ^[0-9]+$ ]] || usage_error "hugepage count must be a non-negative integer, got '$n'"
    n=$((10#$n))
    local dir="$SYSFS/kernel/mm/hugepages/hugepages-2048kB"
    [[ -d $dir ]] || die "$EX_FAILED" "kernel has no 2 MiB hugepage support ($dir missing)"

    write_file "$n" "$dir/nr_hugepages"
    if ((!DRY_RUN)); then
        # The kernel silently reserves fewer pages when memory is fragmented;
        # say so now rather than have EAL fail later with a vaguer message.
        local got
        got=$(<"$dir/nr_hugepages")
        ((got == n)) || warn "asked for $n hugepages, kernel reserved $got"
    fi

    if grep -qs " $HUGEPAGE_MNT hugetlbfs " /proc/mounts; then
        info "hugetlbfs already mounted at $HUGEPAGE_MNT"
    else
        run mkdir -p "$HUGEPAGE_MNT"
        run "$MOUNT" -t hugetlbfs nodev "$HUGEPAGE_MNT"
    fi
}

# parse_addrs ARGS...: normalise every address up front so a typo in the
# third address does not leave the first two half-done.
parse_addrs() {
    local a n
    ADDRS=()
    (($# > 0)) || usage_error "no PCI address given"
    for a in "$@"; do
        n=$(normalise_pci "$a") || usage_error "malformed PCI address '$a' (expected DDDD:BB:DD.F or BB:DD.F)"
        ADDRS+=("$n")
    done
}

cmd_bind() {
    parse_addrs "$@"

    # All checks first, all changes after: refusing the third port must not
    # leave the first two already bound.
    local addr iface stacked routes via line
    local -a todo=()
    for addr in "${ADDRS[@]}"; do
        pci_dev "$addr" >/dev/null
        while read -r iface; do
            while read -r stacked; do
                routes=$(default_routes_via "$stacked")
                [[ -n $routes ]] || continue
                via=""
                [[ $stacked == "$iface" ]] || via=" (through $stacked, stacked on it)"
                if ((FORCE)); then
                    warn "$addr: interface $iface carries the default route$via; binding anyway (--force)"
                else
                    err "refusing to bind $addr: interface $iface carries the default route$via;" \
                        "binding it would cut this machine off. Use --force to override."
                    while IFS= read -r line; do printf '  %s\n' "$line" >&2; done <<<"$routes"
                    exit "$EX_REFUSED"
                fi
            done < <(stacked_ifaces "$iface")
        done < <(pci_ifaces "$addr")
        todo+=("$addr")
    done

    run "$MODPROBE" vfio-pci

    local drv
    local -a devbind_force=()
    ((FORCE)) && devbind_force=(--force)
    for addr in "${todo[@]}"; do
        drv=$(current_driver "$addr")
        if [[ $drv == vfio-pci ]]; then
            info "$addr already bound to vfio-pci"
            continue
        fi
        # Remember the kernel driver so unbind can restore it without the
        # operator having to know it was e.g. ixgbe or i40e.
        if [[ -n $drv ]]; then
            run mkdir -p "$STATE_DIR"
            write_file "$drv" "$STATE_DIR/$addr.driver"
        fi
        # Down first: the kernel then drops the port's routes and stops
        # using it before the driver is pulled from under it.
        while read -r iface; do
            run "$IP_CMD" link set "$iface" down
        done < <(pci_ifaces "$addr")
        run "$DEVBIND" --bind=vfio-pci "${devbind_force[@]}" "$addr"
    done
}

cmd_unbind() {
    parse_addrs "$@"
    local addr drv state
    local -a plan=()
    for addr in "${ADDRS[@]}"; do
        pci_dev "$addr" >/dev/null
        drv=$DRIVER
        state="$STATE_DIR/$addr.driver"
        if [[ -z $drv && -r $state ]]; then
            drv=$(<"$state")
        fi
        [[ -n $drv ]] || usage_error "no driver recorded for $addr (in $state); pass --driver KERNEL_DRIVER"
        [[ $drv =~ ^[A-Za-z0-9_.-]+$ ]] || usage_error "invalid driver name '$drv'"
        plan+=("$addr=$drv")
    done
    local p
    for p in "${plan[@]}"; do
        addr=${p%%=*}
        drv=${p#*=}
        run "$DEVBIND" --bind="$drv" "$addr"
        if [[ -e $STATE_DIR/$addr.driver ]]; then
            run rm -f "$STATE_DIR/$addr.driver"
        fi
    done
}

main() {
    local cmd=""
    local -a args=()
    # Options may appear anywhere (e.g. 'unbind ADDR --driver ixgbe').
    while (($#)); do
        case $1 in
            --dry-run) DRY_RUN=1 ;;
            --force) FORCE=1 ;;
            --driver)
                (($# >= 2)) || usage_error "--driver needs an argument"
                DRIVER=$2
                shift
                ;;
            --driver=*) DRIVER=${1#--driver=} ;;
            -h | --help) usage; exit "$EX_OK" ;;
            --) shift; args+=("$@"); break ;;
            -*) usage_error "unknown option: $1" ;;
            *)
                if [[ -z $cmd ]]; then cmd=$1; else args+=("$1"); fi
                ;;
        esac
        shift
    done
    if [[ -n $DRIVER && $cmd != unbind ]]; then
        usage_error "--driver is only valid with unbind"
    fi

    case $cmd in
        status) cmd_status "${args[@]}" ;;
        hugepages) cmd_hugepages "${args[@]}" ;;
        bind) cmd_bind "${args[@]}" ;;
        unbind) cmd_unbind "${args[@]}" ;;
        "") usage >&2; exit "$EX_USAGE" ;;
        *) usage_error "unknown command: $cmd" ;;
    esac
}

main "$@"
