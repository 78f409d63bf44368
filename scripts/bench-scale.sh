#!/usr/bin/env bash
# bench-scale.sh — how the fast path and the intercept path scale with workers.
#
# Fast path: tlsgate-dataplane with W workers (W lcores, queue w of each port on
# lcore w), steering = "hardware": the input port is DPDK net_pcap with one
# rx_pcap per queue (infinite_rx: replayed from memory), each file with 1,000
# flows of its own, as a NIC's RSS would spread them; output net_null (W queues).
# Prints Mpps per W and the factor against W = 1.
#
# Intercept: `cargo bench --bench intercept` part `scale` runs W workers at once,
# one per thread, each with its own simulated client and server; full TLS
# handshakes (every name new). Prints connections per worker-second summed over
# the workers and the factor against W = 1.
#
# On a machine with fewer cores than 2 x W (a worker and, for intercept, its
# simulated hosts), the lcores share CPUs (EAL --lcores w@(w mod cores)) and the
# figures say only that the harness works; the goal (>= 7x at 8 workers) needs a
# machine with the cores.
#
# Env: SCALE_WORKERS (default "1 2 4 8"), BENCH_SECONDS (default 5), BENCH_WARMUP
#      (default 2), BENCH_FRAMES (frames per queue's pcap, default 250000),
#      SCALE_PARTS (default "fastpath intercept"), TG_BENCH_N (handshakes per
#      worker, default 200), BENCH_DIR (keep the pcaps there), BENCH_BIN (the
#      dataplane's binaries, default target/release), INTERCEPT_BIN (the built
#      intercept bench, where there is no cargo), BENCH_EAL_EXTRA (more EAL
#      arguments, TOML strings joined by commas: scripts/device-bundle.sh's PMDs).
set -euo pipefail
cd "$(dirname "$0")/.."

WORKERS=${SCALE_WORKERS:-1 2 4 8}
SECS=${BENCH_SECONDS:-5}
WARM=${BENCH_WARMUP:-2}
FRAMES=${BENCH_FRAMES:-250000}
PARTS=${SCALE_PARTS:-fastpath intercept}
BIN=${BENCH_BIN:-target/release}
if [[ -n ${BENCH_DIR:-} ]]; then
    DIR=$BENCH_DIR
    mkdir -p "$DIR"
else
    DIR=$(mktemp -d /tmp/tg-scale.XXXXXX)
    trap 'rm -rf "$DIR"' EXIT
fi

cores=$(nproc)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "machine: $cpu, $cores cores; workers: $WORKERS"

factor() { python3 -c "print('%.2f' % ($1 / $2))"; }

if [[ " $PARTS " == *" fastpath "* ]]; then
    [[ -x $BIN/tlsgate-dataplane && -x $BIN/tlsgate-pcapgen ]] ||
        { echo "build first: cargo build --release -p tlsgate-dataplane --bins" >&2; exit 1; }
    max=0
    for w in $WORKERS; do ((w > max)) && max=$w; done
    for ((q = 0; q < max; q++)); do
        [[ -s $DIR/q$q.pcap ]] ||
            $BIN/tlsgate-pcapgen --flows 1000 --first $((q * 1000)) --frames "$FRAMES" "$DIR/q$q.pcap" >/dev/null
    done
    echo "fast path: per queue a ${FRAMES}-frame pcap of 64-byte TCP frames over 1,000 flows of its own; ${WARM}s warm-up, ${SECS}s measured"
    printf '%-10s %12s %10s\n' workers Mpps factor
    base=
    for w in $WORKERS; do
        lcores=
        vdev="net_pcap0"
        for ((q = 0; q < w; q++)); do
            lcores+="${lcores:+,}$q@$((q % cores))"
            vdev+=",rx_pcap=$DIR/q$q.pcap"
        done
        vdev+=",infinite_rx=1"
        mbufs=$((w * (FRAMES + 8192) + 65536))
        mem=$(((mbufs * 512) / 1048576 + 256))
        cat >"$DIR/dp.toml" <<TOML
driver = "dpdk"
[dataplane]
stats_interval_s = 0
steering = "hardware"
[flows]
max_per_worker = 100000
[dpdk]
eal_args = ["--lcores", "$lcores", "--no-huge", "-m", "$mem", "--no-pci", "--no-telemetry", "--file-prefix=tg-scale-$$", "--vdev=$vdev", "--vdev=net_null0,no-rx=1"${BENCH_EAL_EXTRA:+, $BENCH_EAL_EXTRA}]
inside = "net_pcap0"
outside = "net_null0"
mbufs = $mbufs
mbuf_data_room = 256
rx_desc = 1024
tx_desc = 1024
TOML
        mpps=$(TLSGATE_LOG=warn $BIN/tlsgate-dataplane -c "$DIR/dp.toml" --duration $((WARM + SECS)) \
            --warmup "$WARM" --summary 2>"$DIR/dp.err" |
            python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.3f" % d["tx_mpps"])') ||
            { echo "the dataplane failed with $w workers:"; tail -20 "$DIR/dp.err"; exit 1; }
        base=${base:-$mpps}
        printf '%-10s %12s %9sx\n' "$w" "$mpps" "$(factor "$mpps" "$base")"
    done
    echo "  (goal: >= 7x at 8 workers, on a machine with 8 free cores)"
fi

if [[ " $PARTS " == *" intercept "* ]]; then
    # INTERCEPT_BIN: a built bench binary (a machine without cargo, e.g. the
    # device machine): `cargo bench -p tlsgate-tests --bench intercept --no-run`.
    if [[ -n ${INTERCEPT_BIN:-} ]]; then
        run=("$INTERCEPT_BIN" --bench)
    else
        run=(cargo bench -q -p tlsgate-tests --bench intercept)
    fi
    TG_BENCH=scale TG_BENCH_WORKERS="${WORKERS// /,}" TG_BENCH_N=${TG_BENCH_N:-200} "${run[@]}" 2>&1 | grep -v '^$'
fi
