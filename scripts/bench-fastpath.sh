#!/usr/bin/env bash
# bench-fastpath.sh — forwarding rate of the dataplane beside dpdk-testpmd.
#
# Same run, same input, one forwarding core each: both are fed the same pcap of
# valid 64-byte TCP frames by DPDK's net_pcap (infinite_rx=1: the file is loaded
# into mbufs once and replayed from memory) and transmit to a net_null port
# (no-rx=1). Prints Mpps of both and their ratio, then the dataplane's rate with
# 1 thousand and 1 million active flows.
#
# Env: BENCH_SECONDS (measured window, default 10), BENCH_WARMUP (default 3),
#      BENCH_FRAMES (frames in the pcap, default 1000000), BENCH_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${BENCH_SECONDS:-10}
WARM=${BENCH_WARMUP:-3}
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
[[ -x $BIN/tlsgate-dataplane && -x $BIN/tlsgate-pcapgen ]] ||
    { echo "build first: cargo build --release -p tlsgate-dataplane --bins" >&2; exit 1; }

cores=$(nproc)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "machine: $cpu, $cores cores; $FRAMES-frame pcaps, ${WARM}s warm-up, ${SECS}s measured"

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

pmd=$(testpmd "$DIR/flows-1k.pcap")
dp=$(dataplane "$DIR/flows-1k.pcap")
[[ -n $pmd && -n $dp ]] || { echo "a run failed; logs:"; tail -20 "$DIR"/pmd.out "$DIR"/dp.err; exit 1; }
ratio=$(python3 -c "print('%.2f' % ($dp / $pmd))")
printf '%-44s %8s Mpps\n' "dpdk-testpmd macswap (1k flows)" "$pmd"
printf '%-44s %8s Mpps\n' "tlsgate-dataplane (1k flows)" "$dp"
printf '%-44s %8s   (goal >= 0.90)\n' "ratio dataplane / testpmd" "$ratio"
dp1m=$(dataplane "$DIR/flows-1m.pcap")
r1m=$(python3 -c "print('%.2f' % ($dp1m / $dp))")
printf '%-44s %8s Mpps\n' "tlsgate-dataplane (1M flows)" "$dp1m"
printf '%-44s %8s   (goal >= 0.75)\n' "ratio 1M flows / 1k flows" "$r1m"
