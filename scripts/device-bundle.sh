#!/usr/bin/env bash
# device-bundle.sh — `make bench-scale` for a bare, offline machine (the 16-core
# device machine, when one is lent): the binaries it runs, stripped, and the DPDK
# runtime they load, in one folder under 64 MiB that a run carries.
#
#   scripts/device-bundle.sh            # builds, then fills target/device-bundle/
#   target/device-bundle/run.sh         # there: the fast path and intercept scaling
#
# Copy the folder to the other machine anywhere but under /tmp (DPDK refuses
# PMDs from a world-writable directory) and run run.sh as root; it needs bash
# and python3 there, not cargo or DPDK.
#
# The bundle holds tlsgate-dataplane, tlsgate-pcapgen, the intercept bench
# (`cargo bench --bench intercept --no-run`), the shared libraries they link
# (DPDK's librte_*, libpcap, …, from `ldd`) and the PMDs the bench uses
# (net_pcap, net_null, net_ring) and the mempool driver (mempool_ring), which
# run.sh hands the EAL with `-d`: a machine
# without DPDK installed has no PMD directory of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-target/device-bundle}
cargo build --release -p tlsgate-dataplane --bins
bench=$(cargo bench -p tlsgate-tests --bench intercept --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "intercept" and m.get("executable"):
        print(m["executable"])' | tail -1)
[[ -x $bench ]] || { echo "device-bundle: the intercept bench did not build" >&2; exit 1; }

pmds=$(pkg-config --variable=pmdsdir libdpdk 2>/dev/null || true)
[[ -d $pmds ]] || pmds=$(ls -d /usr/lib/*/dpdk/pmds-* | head -1)

rm -rf "$OUT"
mkdir -p "$OUT/bin" "$OUT/lib" "$OUT/pmds" "$OUT/scripts"
for b in target/release/tlsgate-dataplane target/release/tlsgate-pcapgen "$bench"; do
    strip -o "$OUT/bin/$(basename "$b" | sed 's/-[0-9a-f]\{16\}$//')" "$b"
done
for p in net_pcap net_null net_ring mempool_ring; do
    cp -L "$pmds/librte_$p.so" "$OUT/pmds/"
done
# Every shared library the binaries and PMDs need, but the C library's own
# (the machine has those, and mixing them breaks the loader).
for f in "$OUT"/bin/* "$OUT"/pmds/*; do
    ldd "$f" | awk '/=> \//{print $3}'
done | sort -u | grep -Ev '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*)\.so' |
    while read -r lib; do cp -L "$lib" "$OUT/lib/"; done
cp scripts/bench-scale.sh "$OUT/scripts/"

cat >"$OUT/run.sh" <<'RUN'
#!/usr/bin/env bash
# The scaling benchmarks from this bundle (see scripts/device-bundle.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH=$here/lib
eal=()
for p in "$here"/pmds/*.so*; do eal+=("\"-d\", \"$p\""); done
export BENCH_EAL_EXTRA=$(IFS=,; echo "${eal[*]}")
export BENCH_BIN=$here/bin INTERCEPT_BIN=$here/bin/intercept
cd "$here" && exec scripts/bench-scale.sh
RUN
chmod +x "$OUT/run.sh"
du -sh "$OUT"
size=$(du -sb "$OUT" | cut -f1)
((size < 64 << 20)) || { echo "device-bundle: $OUT is over 64 MiB" >&2; exit 1; }
