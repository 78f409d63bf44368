#!/usr/bin/env bash
# bench-fastpath.sh — forwarding rate of the dataplane beside dpdk-testpmd.
#
# Same run, same input, one forwarding core each: both are fed the same pcap of
# valid 64-byte TCP frames by DPDK's net_pcap (infinite_rx=1: the file is loaded
# into mbufs once and replayed from memory) and transmit to a net_null port
# (no-rx=1). Prints Mpps of both and their ratio, then the dataplane's rate with
# 1 thousand and 1 million active flows.
#
# The machine's speed drifts (shared virtual machines: ±30% from minute to
# minute), so the two programs run in alternation, BENCH_ROUNDS times each, and
# the medians are compared.
#
# Env: BENCH_SECONDS (measured window per run, default 5), BENCH_WARMUP (default 2),
#      BENCH_ROUNDS (default 3), BENCH_FRAMES (frames in the pcap, default 1000000;
#      also the flow count of the "1M flows" pcap, one SYN per flow),
#      BENCH_DIR (keep the pcaps there).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${BENCH_SECONDS:-5}
WARM=${BENCH_WARMUP:-2}
ROUNDS=${BENCH_ROUNDS:-3}
FRAMES=${BENCH_FRAMES:-1000000}
if [[ -n ${BENCH_DIR:-} ]]; then
    DIR=$BENCH_DIR
    mkdir -p "$DIR"
else
    DIR=$(mktemp -d /tmp/tg-bench.XXXXXX)
    trap 'rm -rf "$DIR"' EXIT
fi
BIN=target/release
MBUFS=$((FRAMES + 65536))
# --no-huge memory: mbufs of 256 bytes data room + ~192 bytes of header each.
MEM=$(((MBUFS * 512) / 1048576 + 256))

command -v dpdk-testpmd >/dev/null || { echo "dpdk-testpmd missing: run scripts/install-deps.sh" >&2; exit 1; }
[[ -x $BIN/tlsgate-dataplane && -x $BIN/tlsgate-pcapgen && -x $BIN/tlsgate-hashbench ]] ||
    { echo "build first: cargo build --release -p tlsgate-dataplane --bins" >&2; exit 1; }

cores=$(nproc)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "machine: $cpu, $cores cores; $FRAMES-frame pcaps of 64-byte TCP frames; ${WARM}s warm-up, ${SECS}s measured, $ROUNDS rounds"

$BIN/tlsgate-pcapgen --flows 1000 --frames "$FRAMES" "$DIR/flows-1k.pcap" >/dev/null
$BIN/tlsgate-pcapgen --flows "$FRAMES" --frames "$FRAMES" "$DIR/flows-1m.pcap" >/dev/null

vdevs() { # pcap file, prefix
    echo "\"--vdev=net_pcap0,rx_pcap=$1,infinite_rx=1\", \"--vdev=net_null0,no-rx=1\""
}

dataplane() { # pcap, label -> prints Mpps
    local pcap=$1 cfg=$DIR/dp.toml
    cat >"$cfg" <<TOML
driver = "dpdk"
[dataplane]
stats_interval_s = 0
[flows]
max_per_worker = 2000000
[dpdk]
eal_args = ["-l", "0", "--no-huge", "-m", "$MEM", "--no-pci", "--no-telemetry", "--file-prefix=tg-bench-dp-$$", $(vdevs "$pcap")]
inside = "net_pcap0"
outside = "net_null0"
mbufs = $MBUFS
mbuf_data_room = 256
rx_desc = 1024
tx_desc = 1024
TOML
    TLSGATE_LOG=warn $BIN/tlsgate-dataplane -c "$cfg" --duration $((WARM + SECS)) --warmup "$WARM" --summary \
        2>"$DIR/dp.err" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.3f" % d["tx_mpps"])'
}

testpmd() { # pcap -> prints Mpps
    local pcap=$1
    { sleep 4; echo start; sleep "$WARM"; echo "show port stats 1"; sleep "$SECS"; echo "show port stats 1";
      echo stop; echo quit; } |
        dpdk-testpmd -l 0,1 --no-huge -m "$MEM" --no-pci --no-telemetry --file-prefix="tg-bench-pmd-$$" \
            --vdev="net_pcap0,rx_pcap=$pcap,infinite_rx=1" --vdev=net_null0,no-rx=1 -- \
            -i --forward-mode=macswap --nb-cores=1 --total-num-mbufs="$MBUFS" --mbuf-size=256 \
            --rxd=1024 --txd=1024 >"$DIR/pmd.out" 2>&1 || true
    # Tx-pps of the second report covers the measured window.
    grep -o 'Tx-pps: *[0-9]*' "$DIR/pmd.out" | tail -1 | awk '{printf "%.3f\n", $2/1e6}'
}

median() { python3 -c 'import statistics,sys; print("%.3f" % statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

pmds=() dps=() dps1m=()
for ((r = 1; r <= ROUNDS; r++)); do
    pmd=$(testpmd "$DIR/flows-1k.pcap")
    dp=$(dataplane "$DIR/flows-1k.pcap")
    dp1m=$(dataplane "$DIR/flows-1m.pcap")
    [[ -n $pmd && -n $dp && -n $dp1m ]] || { echo "a run failed; logs:"; tail -20 "$DIR"/pmd.out "$DIR"/dp.err; exit 1; }
    echo "round $r: testpmd $pmd, dataplane 1k flows $dp, 1M flows $dp1m Mpps"
    pmds+=("$pmd") dps+=("$dp") dps1m+=("$dp1m")
done
pmd=$(median "${pmds[@]}")
dp=$(median "${dps[@]}")
dp1m=$(median "${dps1m[@]}")
ratio=$(python3 -c "print('%.2f' % ($dp / $pmd))")
r1m=$(python3 -c "print('%.2f' % ($dp1m / $dp))")
echo "medians over $ROUNDS rounds:"
printf '%-44s %8s Mpps\n' "dpdk-testpmd macswap (1k flows)" "$pmd"
printf '%-44s %8s Mpps\n' "tlsgate-dataplane (1k flows)" "$dp"
printf '%-44s %8s   (goal >= 0.90)\n' "ratio dataplane / testpmd" "$ratio"
printf '%-44s %8s Mpps\n' "tlsgate-dataplane (1M flows)" "$dp1m"
printf '%-44s %8s   (goal >= 0.75)\n' "ratio 1M flows / 1k flows" "$r1m"
echo "flow hash, per frame (${cores} cores; $cpu):"
$BIN/tlsgate-hashbench --keys 1000
