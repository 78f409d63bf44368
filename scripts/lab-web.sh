#!/usr/bin/env bash
# lab-web.sh start|stop - a demo web server (nginx) in the lab's server namespace,
# so `make run` has something for curl to reach through the dataplane.
set -euo pipefail
P=${TG_LAB_PREFIX:-tg}
NET=${TG_LAB_NET:-198.18.0}
DIR=${TG_LAB_WEB_DIR:-/run/tlsgate-lab/web}

case "${1:-}" in
start)
    mkdir -p "$DIR/www" "$DIR/tmp"
    if [[ -f $DIR/nginx.pid ]] && kill -0 "$(cat "$DIR/nginx.pid")" 2>/dev/null; then
        echo "lab-web: nginx already running (pid $(cat "$DIR/nginx.pid"))"
        exit 0
    fi
    echo "<h1>tlsgate lab server ${NET}.2</h1>" >"$DIR/www/index.html"
    [[ -f $DIR/www/10M.bin ]] || head -c 10000000 /dev/urandom >"$DIR/www/10M.bin"
    cat >"$DIR/nginx.conf" <<CONF
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/error.log;
events { worker_connections 256; }
http {
  access_log $DIR/access.log;
  client_body_temp_path $DIR/tmp; proxy_temp_path $DIR/tmp; fastcgi_temp_path $DIR/tmp;
  uwsgi_temp_path $DIR/tmp; scgi_temp_path $DIR/tmp;
  server { listen ${NET}.2:80; root $DIR/www; }
}
CONF
    ip netns exec "${P}-server" nginx -c "$DIR/nginx.conf" -p "$DIR"
    echo "lab-web: nginx serving http://${NET}.2/ (and /10M.bin) in ${P}-server"
    ;;
stop)
    if [[ -f $DIR/nginx.pid ]]; then
        kill "$(cat "$DIR/nginx.pid")" 2>/dev/null || true
        rm -f "$DIR/nginx.pid"
        echo "lab-web: stopped"
    fi
    ;;
*)
    echo "usage: ${0##*/} start|stop" >&2
    exit 1
    ;;
esac
