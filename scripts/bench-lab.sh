#!/usr/bin/env bash
# bench-lab.sh - the decrypted relay through the af_packet lab, beside a Linux
# bridge in the same topology (make bench-lab; needs root).
#
#   [ns tgb-client] tgb-c0 <-veth-> tgb-cli | appliance | tgb-srv <-veth-> tgb-s0 [ns tgb-server]
#
# The appliance is either a Linux bridge (tgb-br: the baseline, no interception)
# or tlsgate (control plane + dataplane on DPDK net_af_packet, Decrypt-All).
# Offloads are off on every veth end (scripts/lab.sh), as for the dataplane.
# The appliance's processes are pinned to CPU $TG_BENCH_APP_CPU (default 0),
# curl/ab and nginx to $TG_BENCH_PEER_CPU (default 1). Each figure is
# the median of $TG_BENCH_ROUNDS rounds (default 5):
#   download   one HTTPS connection, 100 MiB (curl), MB/s (10^6 bytes)
#   ab         new connections per second, full TLS handshakes, HTTP/1.0 GET
#              of a small page (ab -n 400 -c 4)
#   resumed    new connections per second, TLS session resumption: 200
#              HTTP/1.1 connections from one curl, each closed by the server,
#              each resuming curl's session (checked: 200 connects, 200 OKs);
#              the time is the sum of curl's own per-transfer times (h2load
#              cannot resume a session; openssl s_time cannot send SNI)
#   CPU        the appliance's CPU time (all threads of both tlsgate
#              processes, /proc/PID/task/*/schedstat, ns) per MB downloaded
#              and per connection
# The bridge and tlsgate take turns round by round (the dataplane is started
# for each of its rounds, the bridge made for each of its), so the VM's drift
# falls on both alike; the download ratio is printed as the ratio of the
# medians and as the median of each round's own ratio. Before each measured
# round: one download left out, then $TG_BENCH_SETTLE_S seconds of quiet
# (default 5; a dataplane measured at once after its start is slower). Neither
# namespace keeps TCP metrics between connections. A default run takes about
# 2 minutes.
# TG_BENCH_APP_RPS=1 puts the receive work of the appliance's ports on the
# appliance's CPU (trial; see docs/performance.md). TG_BENCH_RPS=0 leaves the peers' TCP receive work where veth puts it (the
# sender's CPU: the appliance's, for what tlsgate sends).
# TG_BENCH_ONLY=tlsgate skips the bridge (trying settings), =bridge skips tlsgate; TG_BENCH_DATAPLANE
# appends lines to the dataplane's configuration; TG_BENCH_VDEV to the
# af_packet devices' arguments (e.g. ",qdisc_bypass=1"). TG_BENCH_PERF=1 adds a perf profile of the dataplane during one download,
# and one of the peers' CPU (curl, nginx, their kernels) during a download through each.
# Ratios are tlsgate / bridge. Goals (issue 12): download >= 0.95 x bridge;
# CPU per MB <= 3.7 ms (half of sslsplit's 7.5 ms/MB in the issue's run).
set -euo pipefail
cd "$(dirname "$0")/.."

readonly BIN=${BIN:-target/release}
readonly ROUNDS=${TG_BENCH_ROUNDS:-5} SETTLE_S=${TG_BENCH_SETTLE_S:-5}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "bench-lab: TG_BENCH_ROUNDS must be a whole number >= 1, not '$ROUNDS'" >&2; exit 2; }
[[ $SETTLE_S =~ ^[0-9]+$ ]] || { echo "bench-lab: TG_BENCH_SETTLE_S must be a whole number of seconds, not '$SETTLE_S'" >&2; exit 2; }
case ${TG_BENCH_ONLY:-} in
    "" | bridge | tlsgate) ;;
    *) echo "bench-lab: TG_BENCH_ONLY must be bridge or tlsgate, not '$TG_BENCH_ONLY'" >&2; exit 2 ;;
esac
readonly APP_CPU=${TG_BENCH_APP_CPU:-0} PEER_CPU=${TG_BENCH_PEER_CPU:-1}
export TG_LAB_PREFIX=tgb TG_LAB_NET=198.18.70
readonly P=$TG_LAB_PREFIX NET=$TG_LAB_NET
readonly RUN=/run/tlsgate-bench
export TG_LAB_WEB_DIR=$RUN/web
readonly WEB=$TG_LAB_WEB_DIR SOCK=$RUN/control.sock
CONTROL_PID= DATAPLANE_PID= PERF_PID=

((EUID == 0)) || { echo "bench-lab: needs root (network namespaces)" >&2; exit 2; }
perf_tool=
[[ ${TG_BENCH_PERF:-0} == 1 ]] && perf_tool=perf
for t in ab curl nginx taskset $perf_tool; do
    command -v "$t" >/dev/null || { echo "bench-lab: $t missing (scripts/install-deps.sh)" >&2; exit 2; }
done

ctl() { "$BIN/tlsgatectl" --socket "$SOCK" "$@"; }
in_client() { ip netns exec "$P-client" taskset -c "$PEER_CPU" "$@"; }
# curl in the client namespace, never waiting forever on an appliance that
# stopped forwarding.
in_curl() { in_client curl --connect-timeout 5 --max-time 120 "$@"; }

cleanup() {
    local -
    set +e
    # A second Ctrl-C must not cut the cleanup short.
    trap '' INT TERM HUP
    [[ -n $PERF_PID ]] && kill -INT "$PERF_PID" 2>/dev/null
    local pid
    for pid in $DATAPLANE_PID $CONTROL_PID; do
        kill "$pid" 2>/dev/null || continue
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    done
    # What an earlier run that was killed may have left running.
    pkill -f "$RUN/(control|dataplane).toml" 2>/dev/null
    scripts/lab-web.sh stop >/dev/null 2>&1
    ip link del "$P-br" 2>/dev/null
    scripts/lab.sh down >/dev/null 2>&1
    rm -rf "/etc/netns/$P-client" "$WEB/access.log"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

fail() {
    echo "bench-lab: $*" >&2
    for f in "$RUN/control.log" "$RUN/dataplane.log"; do
        [[ -s $f ]] || continue
        echo "--- $f: errors, then its last lines" >&2
        grep -E '^Error|ERROR|panicked' "$f" | head -5 >&2
        tail -15 "$f" >&2
    done
    exit 1
}

# CPU time (ns) of the given processes, all their threads.
cpu_ns() {
    local sum=0 pid t
    for pid in "$@"; do
        [[ -n $pid ]] || continue
        for t in /proc/"$pid"/task/*/schedstat; do
            sum=$((sum + $(cut -d' ' -f1 "$t" 2>/dev/null || echo 0)))
        done
    done
    echo "$sum"
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else printf "%.5g\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# peer_profile LABEL CA: where the peers' CPU goes during one download through
# LABEL (TG_BENCH_PERF=1): the whole CPU $PEER_CPU, by command and function.
peer_profile() {
    [[ ${TG_BENCH_PERF:-0} == 1 ]] || return 0
    local label=$1 ca=$2
    perf record -q -e cpu-clock -F 4000 -C "$PEER_CPU" -o "$RUN/perf-peer-$label.data" -- sleep 30 >/dev/null 2>&1 &
    PERF_PID=$!
    sleep 0.3
    in_curl -sS --fail -o /dev/null --cacert "$ca" https://server.tg.test/100M.bin
    kill -INT "$PERF_PID" 2>/dev/null; wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=
    perf report -i "$RUN/perf-peer-$label.data" --no-children --sort comm,dso,symbol --percent-limit 1 --stdio 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | sed -n '1,30p' >"$RUN/perf-peer-$label.txt" || true
    echo "bench-lab: CPU $PEER_CPU (client and origin) during one download through $label (perf; $RUN/perf-peer-$label.txt):"
    cat "$RUN/perf-peer-$label.txt"
}

# measure_round LABEL CA ROUND PID...: one round through LABEL (download, ab,
# resumed connections), the appliance's CPU from PID... (none for the bridge);
# appends to SAMPLES[LABEL.figure].
declare -A SAMPLES RESULT
measure_round() {
    local label=$1 ca=$2 round=$3 pids=("${@:4}")
    local url=https://server.tg.test t0 out t1 dl ab re
    t0=$(cpu_ns "${pids[@]}")
    out=$(in_curl -sS --fail -o /dev/null --cacert "$ca" -w '%{speed_download} %{size_download}' "$url/100M.bin") \
        || fail "$label: the download failed"
    t1=$(cpu_ns "${pids[@]}")
    local speed=${out% *} size=${out#* }
    [[ $size == 104857600 ]] || fail "$label: the download got $size bytes"
    dl=$(awk -v s="$speed" 'BEGIN {printf "%.1f", s / 1e6}')
    SAMPLES[$label.dl]+="$dl "
    SAMPLES[$label.dl_cpu]+="$(awk -v t=$((t1 - t0)) 'BEGIN {printf "%.2f", t / 1e6 / 104.8576}') "

    t0=$(cpu_ns "${pids[@]}")
    out=$(in_client ab -q -n 400 -c 4 "$url/index.html" 2>&1) || fail "$label: ab failed: $out"
    t1=$(cpu_ns "${pids[@]}")
    grep -q '^Complete requests: *400$' <<<"$out" && grep -q '^Failed requests: *0$' <<<"$out" \
        && ! grep -q '^Non-2xx' <<<"$out" || fail "$label: ab: $out"
    ab=$(awk '/^Requests per second/ {print $4}' <<<"$out")
    SAMPLES[$label.ab]+="$ab "
    SAMPLES[$label.ab_cpu]+="$(awk -v t=$((t1 - t0)) 'BEGIN {printf "%.3f", t / 1e6 / 400}') "

    # 200 HTTP/1.1 connections from one curl, each closed by nginx, the
    # next one resuming curl's cached TLS session.
    local urls=() conns secs
    for _ in $(seq 200); do urls+=(-o /dev/null "$url/index.html"); done
    t0=$(cpu_ns "${pids[@]}")
    out=$(in_curl -sS --http1.1 --fail-early --cacert "$ca" -H 'Connection: close' \
        -w '%{http_code} %{num_connects} %{time_total}\n' "${urls[@]}") || fail "$label: resumed connections failed"
    t1=$(cpu_ns "${pids[@]}")
    conns=$(awk '$1 == 200 {n += $2} END {print n + 0}' <<<"$out")
    [[ $conns == 200 ]] || fail "$label: 200 new connections expected, curl made $conns"
    secs=$(awk '{s += $3} END {print s}' <<<"$out")
    re=$(awk -v s="$secs" 'BEGIN {printf "%.1f", 200 / s}')
    SAMPLES[$label.re]+="$re "
    SAMPLES[$label.re_cpu]+="$(awk -v t=$((t1 - t0)) 'BEGIN {printf "%.3f", t / 1e6 / 200}') "
    printf '  round %d %-8s %7s MB/s, ab %8s conn/s, resumed %6s conn/s\n' "$round" "$label" "$dl" "$ab" "$re"
}

# The medians of LABEL's rounds into RESULT ('-' for a side not run).
medians() {
    local label=$1 k
    for k in dl dl_cpu ab ab_cpu re re_cpu; do
        # shellcheck disable=SC2086 # the samples are words
        if [[ -n ${SAMPLES[$label.$k]:-} ]]; then RESULT[$label.$k]=$(median ${SAMPLES[$label.$k]}); else RESULT[$label.$k]=-; fi
    done
}

echo "bench-lab: building the release binaries"
mkdir -p "$RUN"
${CARGO:-cargo} build --release -p tlsgate-dataplane -p tlsgate-control --bins >"$RUN/build.log" 2>&1 \
    || { tail -30 "$RUN/build.log" >&2; exit 1; }

cleanup
scripts/lab.sh up >/dev/null
# The peers' own TCP receive work on the peers' CPU, as if they were other
# machines: without this, veth runs it in softirq on whichever CPU sent the
# frame, the appliance's for everything tlsgate sends (RPS on the namespace
# ends; the same for the bridge run). TG_BENCH_RPS=0 leaves it where veth puts it.
if [[ ${TG_BENCH_RPS:-1} == 1 ]]; then
    mask=$(printf '%x' $((1 << PEER_CPU)))
    ip netns exec "$P-client" sh -c "echo $mask > /sys/class/net/$P-c0/queues/rx-0/rps_cpus"
    ip netns exec "$P-server" sh -c "echo $mask > /sys/class/net/$P-s0/queues/rx-0/rps_cpus"
fi
# TG_BENCH_APP_RPS=1 (a trial): the kernel's receive work on the appliance's two
# ports on the appliance's CPU too: the bridge's forwarding, and tlsgate's
# af_packet receive, which otherwise run on the sender's CPU (the peers').
if [[ ${TG_BENCH_APP_RPS:-0} == 1 ]]; then
    mask=$(printf '%x' $((1 << APP_CPU)))
    echo "$mask" >"/sys/class/net/$P-cli/queues/rx-0/rps_cpus"
    echo "$mask" >"/sys/class/net/$P-srv/queues/rx-0/rps_cpus"
fi
# Each connection starts afresh: no TCP metrics (RTT, ssthresh) carried from
# one connection to the next, so a round through one appliance does not set up
# the next round through the other.
for ns in "$P-client" "$P-server"; do ip netns exec "$ns" sysctl -qw net.ipv4.tcp_no_metrics_save=1; done
mkdir -p "/etc/netns/$P-client" "$RUN/events" "$RUN/log"
echo "$NET.2 server.tg.test" >"/etc/netns/$P-client/hosts"
scripts/lab-web.sh start >/dev/null
if [[ $(stat -c %s "$WEB/www/100M.bin" 2>/dev/null) != 104857600 ]]; then
    head -c 104857600 /dev/urandom >"$WEB/www/100M.bin.tmp" && mv "$WEB/www/100M.bin.tmp" "$WEB/www/100M.bin"
fi
# nginx's master and its worker on the peers' CPU.
master=$(cat "$WEB/nginx.pid")
for pid in "$master" $(pgrep -P "$master"); do taskset -a -p -c "$PEER_CPU" "$pid" >/dev/null; done

RUN_BRIDGE=1 RUN_TLSGATE=1
[[ ${TG_BENCH_ONLY:-} == tlsgate ]] && RUN_BRIDGE=0
[[ ${TG_BENCH_ONLY:-} == bridge ]] && RUN_TLSGATE=0

# --- the baseline: a Linux bridge between the two appliance ports -----------
bridge_up() {
    ip link add "$P-br" type bridge
    ip link set "$P-br" up
    ip link set "$P-cli" master "$P-br"
    ip link set "$P-srv" master "$P-br"
    for _ in $(seq 50); do
        ip netns exec "$P-client" ping -c1 -W1 "$NET.2" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    fail "no ping through the bridge within 10 s"
}
bridge_down() { ip link del "$P-br"; }

# --- tlsgate: control plane and dataplane on CPU $APP_CPU ------------------
# The control plane runs for the whole bench; the dataplane is started for each
# round (the bridge needs the two ports to itself between them).
control_start() {
    rm -rf "$RUN/state" "$RUN/events"/* "$RUN/log"/*
    cat >"$RUN/control.toml" <<TOML
[control]
state_dir = "$RUN/state"
socket = "$SOCK"
dataplane_socket = "$RUN/dataplane.sock"
events_dir = "$RUN/events"
log_dir = "$RUN/log"
metrics_listen = ""
TOML
    taskset -c "$APP_CPU" "$BIN/tlsgate-control" --config "$RUN/control.toml" >"$RUN/control.log" 2>&1 &
    CONTROL_PID=$!
    for _ in $(seq 100); do
        ctl status >/dev/null 2>&1 && break
        kill -0 "$CONTROL_PID" 2>/dev/null || fail "tlsgate-control exited"
        sleep 0.1
    done
    ctl ca generate >/dev/null
    ctl ca export >"$RUN/decryption-ca.pem"
    ctl trust add "$WEB/origin-ca.pem" --as ca --name "bench origin CA" >/dev/null
    ctl policy load config/lab-policy.json >/dev/null
    ctl policy commit >/dev/null
    sed -e "s/iface=tg-cli/iface=$P-cli${TG_BENCH_VDEV:-}/" -e "s/iface=tg-srv/iface=$P-srv${TG_BENCH_VDEV:-}/" \
        -e "s/--file-prefix=tlsgate-lab/--file-prefix=tlsgate-bench/" -e "s/\"-l\", \"0\"/\"-l\", \"$APP_CPU\"/" \
        -e "s|/run/tlsgate-lab/dataplane.sock|$RUN/dataplane.sock|" -e "s|/run/tlsgate-lab/events|$RUN/events|" \
        -e "s|/run/tlsgate/dataplane.sock|$RUN/dataplane-status.sock|" -e "s|/var/log/tlsgate-lab/captures|$RUN/captures|" \
        -e "s/^stats_interval_s = .*/stats_interval_s = 0/" config/lab.toml >"$RUN/dataplane.toml"
    # TG_BENCH_DATAPLANE: more dataplane settings to try (e.g. "[intercept]\nack_delay_ms = 2").
    printf '%b\n' "${TG_BENCH_DATAPLANE:-}" >>"$RUN/dataplane.toml"
}
dataplane_start() {
    taskset -c "$APP_CPU" "$BIN/tlsgate-dataplane" --config "$RUN/dataplane.toml" >>"$RUN/dataplane.log" 2>&1 &
    DATAPLANE_PID=$!
    for _ in $(seq 100); do
        kill -0 "$DATAPLANE_PID" 2>/dev/null || fail "tlsgate-dataplane exited"
        in_client curl -sS -o /dev/null --max-time 2 --cacert "$RUN/decryption-ca.pem" https://server.tg.test/ 2>/dev/null \
            && return 0
        sleep 0.2
    done
    fail "no decrypted connection through tlsgate within 20 s"
}
dataplane_stop() {
    kill "$DATAPLANE_PID" 2>/dev/null || fail "tlsgate-dataplane exited during the round"
    for _ in $(seq 50); do kill -0 "$DATAPLANE_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DATAPLANE_PID" 2>/dev/null || true
    wait "$DATAPLANE_PID" 2>/dev/null || true
    DATAPLANE_PID=
}

# After the bridge is made or the dataplane started: one download left out of
# the figures, then $TG_BENCH_SETTLE_S seconds (default 5) of quiet. Measured
# on this VM: a dataplane measured at once after a restart downloads 10-20 %
# slower at 20-40 % more CPU per MB than one given a few seconds, though
# neither guest CPU is busy meanwhile; an appliance in service has been running.
warm_up() {
    in_curl -sS --fail -o /dev/null --cacert "$1" https://server.tg.test/100M.bin || fail "warm-up download failed"
    sleep "$SETTLE_S"
}

bridge_round() {
    bridge_up
    warm_up "$WEB/origin-ca.pem"
    measure_round bridge "$WEB/origin-ca.pem" "$1"
    bridge_down
}
tlsgate_round() {
    dataplane_start
    warm_up "$RUN/decryption-ca.pem"
    measure_round tlsgate "$RUN/decryption-ca.pem" "$1" "$DATAPLANE_PID" "$CONTROL_PID"
    dataplane_stop
}

if ((RUN_TLSGATE)); then control_start; fi
: >"$RUN/dataplane.log"
# The two alternate round by round (the first of each pair alternates too):
# these VMs' speed drifts from minute to minute, and a ratio of two blocks of
# rounds taken minutes apart would measure the drift.
if ((RUN_BRIDGE && RUN_TLSGATE)); then
    echo "bench-lab: $ROUNDS round(s), bridge and tlsgate taking turns"
else
    echo "bench-lab: $ROUNDS round(s), ${TG_BENCH_ONLY} only"
fi
for round in $(seq "$ROUNDS"); do
    if ((round % 2)); then order="bridge tlsgate"; else order="tlsgate bridge"; fi
    for side in $order; do
        if [[ $side == bridge ]] && ((RUN_BRIDGE)); then bridge_round "$round"; fi
        if [[ $side == tlsgate ]] && ((RUN_TLSGATE)); then tlsgate_round "$round"; fi
    done
done
medians bridge
medians tlsgate
# The download ratio of each round's pair, and their median.
paired=-
if ((RUN_BRIDGE && RUN_TLSGATE)); then
    # shellcheck disable=SC2086 # the samples are words
    paired=$(median $(paste -d' ' <(tr ' ' '\n' <<<"${SAMPLES[tlsgate.dl]}") <(tr ' ' '\n' <<<"${SAMPLES[bridge.dl]}") \
        | awk 'NF == 2 && $2 > 0 {printf "%.3f\n", $1 / $2}'))
    paired=$(awk -v r="$paired" 'BEGIN {printf "%.2f", r}')
fi

if [[ ${TG_BENCH_PERF:-0} == 1 ]] && ((RUN_BRIDGE)); then
    bridge_up
    warm_up "$WEB/origin-ca.pem"
    peer_profile bridge "$WEB/origin-ca.pem"
    bridge_down
fi
if [[ ${TG_BENCH_PERF:-0} == 1 ]] && ((RUN_TLSGATE)); then
    dataplane_start
    warm_up "$RUN/decryption-ca.pem"
    peer_profile tlsgate "$RUN/decryption-ca.pem"
    # Where the dataplane's time goes during one 100 MiB download (cpu-clock
    # samples: these VMs have no hardware counters), split by function.
    perf record -q -e cpu-clock -F 4000 -o "$RUN/perf.data" -p "$DATAPLANE_PID" -- sleep 30 >/dev/null 2>&1 &
    PERF_PID=$!
    sleep 0.3
    in_curl -sS --fail -o /dev/null --cacert "$RUN/decryption-ca.pem" https://server.tg.test/100M.bin
    kill -INT "$PERF_PID" 2>/dev/null; wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=
    perf report -i "$RUN/perf.data" --no-children --sort dso,symbol --percent-limit 0.7 --stdio 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | sed -n '1,45p' >"$RUN/perf.txt" || true
    echo; echo "bench-lab: the dataplane during one download (perf, cpu-clock; $RUN/perf.txt):"
    cat "$RUN/perf.txt"
fi

# tlsgate / bridge, two decimals ('-' when either side was not run).
ratio() {
    [[ $1 == - || $2 == - ]] && { echo -; return; }
    awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else printf "-"}'
}
# Whether A >= B, judged on the unrounded figures (n/a when either is '-').
at_least() {
    [[ $1 == - || $2 == - ]] && { echo "n/a (not measured: TG_BENCH_ONLY=${TG_BENCH_ONLY:-})"; return; }
    if awk -v a="$1" -v b="$2" 'BEGIN {exit !(a >= b)}'; then echo met; else echo "not met"; fi
}
dl_goal=-
if [[ ${RESULT[bridge.dl]} != - && ${RESULT[tlsgate.dl]} != - ]]; then
    dl_goal=$(awk -v a="${RESULT[tlsgate.dl]}" -v b="${RESULT[bridge.dl]}" 'BEGIN {print a / b}')
fi
cpu_goal=-
[[ ${RESULT[tlsgate.dl_cpu]} != - ]] && cpu_goal=3.7
cat <<TXT

bench-lab: medians of $ROUNDS rounds; appliance on CPU $APP_CPU, client and origin on CPU $PEER_CPU
($(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); through tlsgate the
downloads and resumed connections were decrypted: curl trusted only the decryption CA)

                                   bridge     tlsgate    tlsgate/bridge
download, 1 connection, MB/s   $(printf '%10s  %10s  %10s' "${RESULT[bridge.dl]}" "${RESULT[tlsgate.dl]}" "$(ratio "${RESULT[tlsgate.dl]}" "${RESULT[bridge.dl]}")")
  (median of the rounds' own ratios)                     $(printf '%10s' "$paired")
new connections/s (ab, full)   $(printf '%10s  %10s  %10s' "${RESULT[bridge.ab]}" "${RESULT[tlsgate.ab]}" "$(ratio "${RESULT[tlsgate.ab]}" "${RESULT[bridge.ab]}")")
new connections/s (resumed)    $(printf '%10s  %10s  %10s' "${RESULT[bridge.re]}" "${RESULT[tlsgate.re]}" "$(ratio "${RESULT[tlsgate.re]}" "${RESULT[bridge.re]}")")
appliance CPU ms per MB        $(printf '%10s  %10s' "-" "${RESULT[tlsgate.dl_cpu]}")
appliance CPU ms per conn (ab) $(printf '%10s  %10s' "-" "${RESULT[tlsgate.ab_cpu]}")
appliance CPU ms per resumed   $(printf '%10s  %10s' "-" "${RESULT[tlsgate.re_cpu]}")

goal: download >= 0.95 x bridge: $(at_least "$dl_goal" 0.95)
goal: appliance CPU per MB <= 3.7 ms: $(at_least "$cpu_goal" "${RESULT[tlsgate.dl_cpu]}")
(the bridge forwards in the kernel, on the sending side's CPU: it has no process to measure)
TXT
