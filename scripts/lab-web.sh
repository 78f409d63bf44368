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
    echo "<h1>tlsgate lab server ${NET}.2</h1>" >"$DIR/www/index.html"
    [[ -f $DIR/www/10M.bin ]] || head -c 10000000 /dev/urandom >"$DIR/www/10M.bin"
    # The origin's own PKI: a lab CA (which the appliance trusts) and a certificate
    # for server.tg.test (and the server's address) that nginx serves on 443.
    if [[ ! -f $DIR/server.pem ]]; then
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
            -keyout "$DIR/origin-ca.key" -out "$DIR/origin-ca.pem" -subj "/CN=tlsgate lab origin CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout "$DIR/server.key" -out "$DIR/server.csr" -subj "/CN=server.tg.test" 2>/dev/null
        printf 'subjectAltName=DNS:server.tg.test,IP:%s.2\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' \
            "$NET" >"$DIR/server.ext"
        openssl x509 -req -in "$DIR/server.csr" -CA "$DIR/origin-ca.pem" -CAkey "$DIR/origin-ca.key" \
            -CAcreateserial -days 825 -extfile "$DIR/server.ext" -out "$DIR/server.pem" 2>/dev/null
    fi
    cat >"$DIR/nginx.conf" <<CONF
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/error.log;
events { worker_connections 256; }
http {
  access_log $DIR/access.log;
  client_body_temp_path $DIR/tmp; proxy_temp_path $DIR/tmp; fastcgi_temp_path $DIR/tmp;
  uwsgi_temp_path $DIR/tmp; scgi_temp_path $DIR/tmp;
  server {
    listen ${NET}.2:80;
    listen ${NET}.2:443 ssl http2;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate $DIR/server.pem;
    ssl_certificate_key $DIR/server.key;
    root $DIR/www;
  }
}
CONF
    if [[ -f $DIR/nginx.pid ]] && kill -0 "$(cat "$DIR/nginx.pid")" 2>/dev/null; then
        # Already running: reload the (re)written configuration.
        kill -HUP "$(cat "$DIR/nginx.pid")"
    else
        ip netns exec "${P}-server" nginx -c "$DIR/nginx.conf" -p "$DIR"
    fi
    echo "lab-web: nginx serving http://${NET}.2/ and https://server.tg.test/ (and /10M.bin) in ${P}-server"
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
