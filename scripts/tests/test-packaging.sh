#!/usr/bin/env bash
# test-packaging.sh - `make install` into a staging directory, then checks the
# installed tree: binaries run, configurations pass --check-config, and the
# systemd units pass `systemd-analyze verify` (the dataplane Wants= and starts
# after the control plane, and is not bound to it).
set -euo pipefail
cd "$(dirname "$0")/../.."

fail=0
check() { local what=$1; shift; if "$@"; then echo "ok   - $what"; else echo "FAIL - $what"; fail=1; fi; }

stage=$(mktemp -d /tmp/tg-packaging.XXXXXX)
trap 'rm -rf "$stage"' EXIT

make -s install BUILD=debug DESTDIR="$stage" PREFIX=/usr/local >/dev/null

for b in tlsgate-dataplane tlsgate-control tlsgatectl tlsgate-console; do
    check "$b installed and runs" "$stage/usr/local/bin/$b" --version
done
check "setup-interfaces installed" test -x "$stage/usr/local/sbin/tlsgate-setup-interfaces"
check "default control.toml (0640)" test "$(stat -c %a "$stage/etc/tlsgate/control.toml")" = 640
check "default dataplane.toml" test -f "$stage/etc/tlsgate/dataplane.toml"
check "default console.toml (0640)" test "$(stat -c %a "$stage/etc/tlsgate/console.toml")" = 640
sed -e "s|/var/lib/tlsgate-console|$stage/var/lib/tlsgate-console|" -e 's|192.0.2.10:8443|127.0.0.1:0|' \
    "$stage/etc/tlsgate/console.toml" > "$stage/console-test.toml"
check "the example console configuration is valid (a management certificate made)" \
    "$stage/usr/local/bin/tlsgate-console" --config "$stage/console-test.toml" --check-config
check "the management key 0600" test "$(stat -c %a "$stage/var/lib/tlsgate-console/console.key")" = 600
check "docs installed" test -f "$stage/usr/local/share/doc/tlsgate/operations.md"
check "the example dataplane configuration is valid" \
    "$stage/usr/local/bin/tlsgate-dataplane" --config "$stage/etc/tlsgate/dataplane.toml" --check-config
# The control plane's defaults point at /var/lib/tlsgate: check them against a
# staged state directory instead.
sed -e "s|/var/lib/tlsgate|$stage/var/lib/tlsgate|" -e "s|/var/log/tlsgate|$stage/var/log/tlsgate|" \
    -e "s|/run/tlsgate|$stage/run/tlsgate|g" -e 's|^# device_id = .*|device_id = "packaging-test"|' \
    "$stage/etc/tlsgate/control.toml" > "$stage/control-test.toml"
check "the example control configuration is valid" \
    "$stage/usr/local/bin/tlsgate-control" --config "$stage/control-test.toml" --check-config

# A second install keeps edited configurations.
echo "# edited" >> "$stage/etc/tlsgate/control.toml"
make -s install BUILD=debug DESTDIR="$stage" PREFIX=/usr/local >/dev/null
check "a reinstall keeps an edited configuration" grep -q '^# edited' "$stage/etc/tlsgate/control.toml"

units="$stage/etc/systemd/system"
check "dataplane Wants= the control plane" grep -q '^Wants=tlsgate-control.service' "$units/tlsgate-dataplane.service"
check "dataplane starts After= the control plane" grep -q '^After=tlsgate-control.service' "$units/tlsgate-dataplane.service"
check "the console runs as its own user" grep -qx 'User=tlsgate-console' "$units/tlsgate-console.service"
for u in tlsgate-control tlsgate-dataplane; do
    check "$u.service sets UMask=0027" grep -qx 'UMask=0027' "$units/$u.service"
done
check "state directory 0700 after --check-config" test "$(stat -c %a "$stage/var/lib/tlsgate")" = 700
check "state.json 0600" test "$(stat -c %a "$stage/var/lib/tlsgate/state.json")" = 600
check "dataplane not bound to the control plane" bash -c "! grep -qE '^(BindsTo|Requires|PartOf)=' '$units/tlsgate-dataplane.service'"
if command -v systemd-analyze >/dev/null; then
    # The staged units with their paths pointing into the stage (the checker wants
    # executables that exist); the host provides the standard targets.
    mkdir -p "$stage/verify"
    for u in "$units"/tlsgate-*.service; do
        sed -e "s|/usr/local/bin|$stage/usr/local/bin|g" -e "s|/etc/tlsgate|$stage/etc/tlsgate|g" "$u" \
            > "$stage/verify/$(basename "$u")"
    done
    out=$(cd "$stage/verify" && systemd-analyze verify tlsgate-control.service tlsgate-dataplane.service tlsgate-console.service 2>&1) \
        && rc=0 || rc=$?
    check "systemd-analyze verify tlsgate-control.service tlsgate-dataplane.service tlsgate-console.service" \
        test "$rc" -eq 0 -a -z "$out" || printf '%s\n' "$out"
else
    echo "skip - systemd-analyze not installed"
fi
exit $fail
