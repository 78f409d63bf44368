#!/usr/bin/env bash
# test-setup-interfaces.sh - tests for scripts/setup-interfaces.sh that need
# no hardware, no root and never touch the real network: the script is run
# against a fake sysfs tree, and `ip`, `modprobe` and `dpdk-devbind.py` are
# replaced by fakes placed first on PATH. The fakes log every call that would
# change something, so the test also proves --dry-run executes nothing.
#
# Usage: scripts/tests/test-setup-interfaces.sh [-v]
#   -v  show the output of every invocation
# Exit: 0 if all checks pass, 1 otherwise.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT="$HERE/../setup-interfaces.sh"
VERBOSE=0
case ${1:-} in
    -v) VERBOSE=1 ;;
    -h | --help) sed -n '2,10s/^# \{0,1\}//p' "$0"; exit 0 ;;
    "") ;;
    *) echo "unknown argument: $1" >&2; exit 1 ;;
esac

TMP=$(mktemp -d "${TMPDIR:-/tmp}/test-setup-interfaces.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

PASS=0
FAIL=0

# ---------------------------------------------------------------- fixtures --
FAKE_SYS="$TMP/sys"
FAKE_BIN="$TMP/bin"
CALLS="$TMP/calls.log"    # every mutating call a fake receives
STATE="$TMP/state"
mkdir -p "$FAKE_BIN" "$STATE" \
    "$FAKE_SYS/bus/pci/drivers/ixgbe" \
    "$FAKE_SYS/bus/pci/devices/0000:03:00.0/net/ens3f0" \
    "$FAKE_SYS/bus/pci/devices/0000:03:00.1/net/ens3f1" \
    "$FAKE_SYS/class/net" \
    "$FAKE_SYS/kernel/mm/hugepages/hugepages-2048kB"
# Same relative link the kernel uses: devices/ADDR/driver -> drivers/NAME.
ln -s ../../../bus/pci/drivers/ixgbe "$FAKE_SYS/bus/pci/devices/0000:03:00.0/driver"
ln -s ../../bus/pci/devices/0000:03:00.0/net/ens3f0 "$FAKE_SYS/class/net/ens3f0"
ln -s ../../bus/pci/devices/0000:03:00.1/net/ens3f1 "$FAKE_SYS/class/net/ens3f1"
echo 0 >"$FAKE_SYS/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
: >"$CALLS"

# Fake mount (below) and HUGEPAGE_MNT inside $TMP keep even a broken
# --dry-run from mounting anything on the real machine.
# Fake ip: answers route queries with a (documentation-range, never used)
# default route via ens3f0; logs anything else instead of doing it.
cat >"$FAKE_BIN/ip" <<EOF
#!/usr/bin/env bash
if [[ "\$*" == *"route show default"* ]]; then
    [[ "\$1" == -6 ]] && exit 0
    echo "default via 192.0.2.1 dev ens3f0 proto static"
    exit 0
fi
echo "ip \$*" >>"$CALLS"
EOF
# Alternative fake for the IP_CMD override: default route via ens3f1.
cat >"$FAKE_BIN/ip-alt" <<'EOF'
#!/usr/bin/env bash
[[ "$*" == *"route show default"* && "$1" == -4 ]] && echo "default via 192.0.2.1 dev ens3f1"
exit 0
EOF
for cmd in modprobe dpdk-devbind.py mount; do
    cat >"$FAKE_BIN/$cmd" <<EOF
#!/usr/bin/env bash
echo "$cmd \$*" >>"$CALLS"
EOF
done
chmod +x "$FAKE_BIN"/*

# ---------------------------------------------------------------- helpers --
OUT=""
RC=0
# sut ARGS...: run the script under test in the fake environment.
sut() {
    set +e
    OUT=$(env PATH="$FAKE_BIN:$PATH" SYSFS="$FAKE_SYS" STATE_DIR="$STATE" \
        HUGEPAGE_MNT="$TMP/hugepages" "$@" 2>&1)
    RC=$?
    set -e
    if ((VERBOSE)); then
        printf '$ %s\n%s\n[rc=%s]\n' "$*" "$OUT" "$RC"
    fi
}
run_sut() { sut "$SCRIPT" "$@"; }

pass() { PASS=$((PASS + 1)); }
fail() { FAIL=$((FAIL + 1)); printf 'FAIL [%s]: %s\n' "$CASE" "$*"; }

expect_rc() {
    if [[ $RC == "$1" ]]; then pass; else fail "exit code $RC, expected $1; output:"$'\n'"$OUT"; fi
}
expect_line() {   # exact line present in output
    if grep -qxF -- "$1" <<<"$OUT"; then pass; else fail "missing line '$1'; output:"$'\n'"$OUT"; fi
}
expect_text() {   # substring present in output
    if grep -qF -- "$1" <<<"$OUT"; then pass; else fail "missing text '$1'; output:"$'\n'"$OUT"; fi
}
expect_no_text() {
    if grep -qF -- "$1" <<<"$OUT"; then fail "unexpected text '$1'; output:"$'\n'"$OUT"; else pass; fi
}
expect_no_calls() {   # dry-run / refusal must not have executed anything
    if [[ -s $CALLS ]]; then
        fail "commands were executed:"$'\n'"$(cat "$CALLS")"
    else
        pass
    fi
    : >"$CALLS"
}
expect_calls() {   # exact list of executed mutating commands, in order
    local want
    want=$(printf '%s\n' "$@")
    if [[ $(cat "$CALLS") == "$want" ]]; then
        pass
    else
        fail "executed commands differ; want:"$'\n'"$want"$'\n'"got:"$'\n'"$(cat "$CALLS")"
    fi
    : >"$CALLS"
}

# ------------------------------------------------------------------ cases --
CASE="a: dry-run bind of a free port"
run_sut --dry-run bind 0000:03:00.1
expect_rc 0
expect_line "+ modprobe vfio-pci"
expect_line "+ ip link set ens3f1 down"
expect_line "+ dpdk-devbind.py --bind=vfio-pci 0000:03:00.1"
expect_no_calls

CASE="b: default-route port is refused"
run_sut --dry-run bind 03:00.0
expect_rc 2
expect_text "ens3f0"
expect_text "default route"
expect_text "192.0.2.1"
expect_no_text "+ "
expect_no_calls

CASE="b2: refusal happens before any change when mixed with a free port"
run_sut --dry-run bind 0000:03:00.1 0000:03:00.0
expect_rc 2
expect_no_text "+ modprobe"
expect_no_calls

CASE="c: non-existent PCI address"
run_sut --dry-run bind 0000:42:00.0
expect_rc 2
expect_text "0000:42:00.0"
expect_no_calls

CASE="d: malformed PCI address"
run_sut --dry-run bind 03:00
expect_rc 1
expect_text "03:00"
run_sut --dry-run bind 0000:03:00.8
expect_rc 1
run_sut --dry-run unbind zz:00.0 --driver ixgbe
expect_rc 1
expect_no_calls

CASE="e: dry-run hugepages"
run_sut --dry-run hugepages 512
expect_rc 0
expect_line "+ echo 512 > $FAKE_SYS/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
if [[ $(<"$FAKE_SYS/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages") == 0 ]]; then
    pass
else
    fail "dry-run wrote to nr_hugepages"
fi
expect_no_calls
run_sut --dry-run hugepages lots
expect_rc 1

CASE="e2: real (faked) hugepages writes sysfs and mounts"
run_sut hugepages 64
expect_rc 0
if [[ $(<"$FAKE_SYS/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages") == 64 ]]; then
    pass
else
    fail "nr_hugepages not written"
fi
expect_calls "mount -t hugetlbfs nodev $TMP/hugepages"

CASE="f: dry-run unbind with explicit driver"
run_sut --dry-run unbind 0000:03:00.1 --driver ixgbe
expect_rc 0
expect_line "+ dpdk-devbind.py --bind=ixgbe 0000:03:00.1"
expect_no_calls

CASE="g: unbind without recorded or given driver asks for --driver"
run_sut --dry-run unbind 0000:03:00.1
expect_rc 1
expect_text "--driver"

CASE="h: usage errors"
run_sut
expect_rc 1
run_sut frobnicate
expect_rc 1
run_sut --dry-run bind 0000:03:00.1 --driver ixgbe
expect_rc 1
run_sut --help
expect_rc 0
expect_text "Usage:"

CASE="i: IP_CMD/DEVBIND/MODPROBE overrides"
sut env IP_CMD="$FAKE_BIN/ip-alt" "$SCRIPT" --dry-run bind 0000:03:00.1
expect_rc 2
expect_text "ens3f1"
sut env IP_CMD="$FAKE_BIN/ip-alt" DEVBIND=/opt/x/devbind MODPROBE=/opt/x/modprobe \
    "$SCRIPT" --dry-run bind 0000:03:00.0
expect_rc 0
expect_line "+ /opt/x/modprobe vfio-pci"
expect_line "+ $FAKE_BIN/ip-alt link set ens3f0 down"
expect_line "+ /opt/x/devbind --bind=vfio-pci 0000:03:00.0"
expect_no_calls

CASE="j: real (faked) bind --force records the driver, unbind restores it"
run_sut --force bind 0000:03:00.0
expect_rc 0
expect_text "warning"
expect_calls "modprobe vfio-pci" "ip link set ens3f0 down" \
    "dpdk-devbind.py --bind=vfio-pci --force 0000:03:00.0"
if [[ -f $STATE/0000:03:00.0.driver && $(<"$STATE/0000:03:00.0.driver") == ixgbe ]]; then
    pass
else
    fail "driver not recorded in $STATE/0000:03:00.0.driver"
fi
run_sut unbind 03:00.0
expect_rc 0
expect_calls "dpdk-devbind.py --bind=ixgbe 0000:03:00.0"
if [[ -e $STATE/0000:03:00.0.driver ]]; then fail "state file not removed"; else pass; fi

CASE="k: a VLAN on top of the port carrying the default route also refuses"
mkdir -p "$FAKE_SYS/class/net/ens3f1.100"
ln -s ../ens3f1.100 "$FAKE_SYS/class/net/ens3f1/upper_ens3f1.100"
cat >"$FAKE_BIN/ip-vlan" <<'EOF'
#!/usr/bin/env bash
[[ "$*" == *"route show default"* && "$1" == -6 ]] && echo "default via fe80::1 dev ens3f1.100 metric 1024"
exit 0
EOF
chmod +x "$FAKE_BIN/ip-vlan"
sut env IP_CMD="$FAKE_BIN/ip-vlan" "$SCRIPT" --dry-run bind 0000:03:00.1
expect_rc 2
expect_text "ens3f1.100"
expect_no_calls

CASE="l: status reads the fake sysfs"
run_sut status
expect_rc 0
expect_text "2048kB"
expect_text "vfio-pci: not loaded"
expect_calls "dpdk-devbind.py --status-dev net"
mkdir -p "$FAKE_SYS/module/vfio_pci"
run_sut status
expect_text "vfio-pci: loaded"
: >"$CALLS"

# ----------------------------------------------------------------- report --
printf '%d passed, %d failed\n' "$PASS" "$FAIL"
((FAIL == 0))
