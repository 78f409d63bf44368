#!/usr/bin/env bash
# lab-appliance.sh - the appliance's two processes on the lab, as `make run` runs them.
#
#   run    start tlsgate-control (background, /var/log/tlsgate-lab/control.log),
#          configure it once (decryption CA, lab origin CA, the Decrypt-All policy),
#          then run tlsgate-dataplane in the foreground; Ctrl-C stops both
#   stop   stop the control plane (make lab-down)
#
# Files: /var/lib/tlsgate-lab (state, decryption CA, vendor key for lab licenses),
# /run/tlsgate-lab (operator and dataplane sockets, event rings), /var/log/tlsgate-lab (logs).
set -euo pipefail
cd "$(dirname "$0")/.."
# As the systemd units (UMask=0027): logs, rings and state never world-readable.
umask 027

readonly BIN=${BIN:-target/release}
readonly LIB=/var/lib/tlsgate-lab RUN=/run/tlsgate-lab LOG=/var/log/tlsgate-lab
readonly SOCK=$RUN/control.sock PID=$RUN/control.pid
ctl() { "$BIN/tlsgatectl" --socket "$SOCK" "$@"; }

start_control() {
    mkdir -p "$LIB" "$RUN/events" "$LOG"
    if [[ ! -f $LIB/vendor.key ]]; then
        # A lab vendor key: lab licenses are issued with it (tlsgate-vendor license issue).
        "$BIN/tlsgate-vendor" license keygen --out "$LIB/vendor.key" >"$LIB/vendor.pub.txt"
    fi
    local public
    public=$(sed -n 's/^vendor public key (control.vendor_key): //p' "$LIB/vendor.pub.txt")
    cat >"$LIB/control.toml" <<TOML
# Written by scripts/lab-appliance.sh for the lab.
[control]
state_dir = "$LIB/control"
socket = "$SOCK"
dataplane_socket = "$RUN/dataplane.sock"
events_dir = "$RUN/events"
log_dir = "$LOG"
metrics_listen = "127.0.0.1:9469"
vendor_key = "$public"
TOML
    stop_control
    "$BIN/tlsgate-control" --config "$LIB/control.toml" >>"$LOG/control.log" 2>&1 &
    echo $! >"$PID"
    for _ in $(seq 100); do
        ctl status >/dev/null 2>&1 && break
        sleep 0.1
    done
    ctl status >/dev/null || { tail -20 "$LOG/control.log"; echo "tlsgate-control did not start" >&2; exit 1; }
    # First run only: the decryption CA (the one `make run` always made), the lab
    # origin CA, the lab policy. Later runs keep what the operator changed.
    if ctl --json status | grep -q '"ca": null'; then
        ctl ca import "$LIB/decryption-ca.pem" "$LIB/decryption-ca.key" >/dev/null
        ctl trust add "$RUN/web/origin-ca.pem" --as ca --name "lab origin CA" >/dev/null
        ctl policy load config/lab-policy.json >/dev/null
        ctl policy commit >/dev/null
    fi
}

stop_control() {
    if [[ -f $PID ]]; then
        kill "$(cat "$PID")" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$(cat "$PID")" 2>/dev/null || break; sleep 0.1; done
        rm -f "$PID"
    fi
}

case ${1:-} in
    run)
        start_control
        trap stop_control EXIT
        cat <<TXT

tlsgate-control and tlsgate-dataplane run on the lab (inside tg-cli, outside tg-srv). Try, in another shell:
  ip netns exec tg-client curl -v --cacert $LIB/decryption-ca.pem \\
      --resolve server.tg.test:443:198.18.0.2 https://server.tg.test/    # decrypted: issuer is the decryption CA
  $BIN/tlsgatectl --socket $SOCK status          # dataplane connected, version, license, CA
  $BIN/tlsgatectl --socket $SOCK events list     # what happened to each TLS flow
  $BIN/tlsgatectl --socket $SOCK stats           # counters per worker and port
  curl -s 127.0.0.1:9469/metrics | grep tlsgate_  # Prometheus
  (export TLSGATE_SOCKET=$SOCK and the --socket options can go)
Logs: $LOG/tls_proxy.log, $LOG/events.jsonl, $LOG/control.log

TXT
        "$BIN/tlsgate-dataplane" --config config/lab.toml
        ;;
    stop) stop_control ;;
    *) sed -n '2,11s/^# \{0,1\}//p' "$0"; exit 1 ;;
esac
