# tlsgate — the two commands: `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all deps build build-release run lab-up lab-down test lint unit-tests lab-tests script-tests \
        bench bench-fastpath bench-intercept bench-lab bench-scale fuzz clean install

all: build

deps:
	@scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace --bins

build-release: deps
	$(CARGO) build --release -p tlsgate-dataplane -p tlsgate-control --bins

## Install binaries, systemd units, default configurations (kept if present) and docs.
## BUILD=debug installs the debug binaries (the packaging test does); DESTDIR stages.
PREFIX ?= /usr/local
BUILD ?= release
DESTDIR ?=
install: $(if $(filter release,$(BUILD)),build-release,build)
	install -d -m 0755 $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)/etc/systemd/system \
		$(DESTDIR)$(PREFIX)/share/doc/tlsgate
	install -d -m 0750 $(DESTDIR)/etc/tlsgate
	for b in tlsgate-dataplane tlsgate-control tlsgatectl tlsgate-console; do \
		install -m 0755 target/$(BUILD)/$$b $(DESTDIR)$(PREFIX)/bin/$$b || exit 1; done
	install -m 0755 scripts/setup-interfaces.sh $(DESTDIR)$(PREFIX)/sbin/tlsgate-setup-interfaces
	for u in packaging/systemd/*.service; do \
		sed 's|/usr/local|$(PREFIX)|g' $$u > $(DESTDIR)/etc/systemd/system/$$(basename $$u) || exit 1; done
	[ -e $(DESTDIR)/etc/tlsgate/control.toml ] || install -m 0640 config/control.example.toml $(DESTDIR)/etc/tlsgate/control.toml
	[ -e $(DESTDIR)/etc/tlsgate/dataplane.toml ] || install -m 0640 config/appliance.example.toml $(DESTDIR)/etc/tlsgate/dataplane.toml
	[ -e $(DESTDIR)/etc/tlsgate/console.toml ] || install -m 0640 config/console.example.toml $(DESTDIR)/etc/tlsgate/console.toml
	install -m 0644 docs/*.md README.md $(DESTDIR)$(PREFIX)/share/doc/tlsgate/
	install -d -m 0755 $(DESTDIR)$(PREFIX)/share/tlsgate/prometheus $(DESTDIR)$(PREFIX)/share/tlsgate/grafana
	install -m 0644 packaging/prometheus/tlsgate-alerts.yml $(DESTDIR)$(PREFIX)/share/tlsgate/prometheus/
	install -m 0644 packaging/grafana/tlsgate-coverage.json $(DESTDIR)$(PREFIX)/share/tlsgate/grafana/
	@echo "installed; then: edit /etc/tlsgate/*.toml, systemctl daemon-reload, systemctl enable --now tlsgate-control tlsgate-dataplane (and tlsgate-console: docs/operations.md 7b)"

## The appliance on the lab: tlsgate-control in the background, tlsgate-dataplane in the
## foreground (Ctrl-C stops both; `make lab-down` removes the lab).
LAB_STATE := /var/lib/tlsgate-lab

run: build-release lab-up
	@scripts/lab-web.sh start
	@mkdir -p $(LAB_STATE)
	@[ -f $(LAB_STATE)/decryption-ca.pem ] || target/release/tlsgate-dataplane gen-ca \
		--cert $(LAB_STATE)/decryption-ca.pem --key $(LAB_STATE)/decryption-ca.key
	scripts/lab-appliance.sh run

lab-up: deps
	@scripts/lab.sh up

lab-down:
	-@scripts/lab-appliance.sh stop
	-@scripts/lab-web.sh stop
	@scripts/lab.sh down

## Everything CI checks: formatting, lints, unit + in-process + lab tests (root), script tests.
# No incremental caches for the one-shot test build: they doubled target/'s size.
test: export CARGO_INCREMENTAL := 0
test: deps lint build unit-tests script-tests fuzz
	@echo "make test: all checks passed"

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit-tests: build
	$(CARGO) test --workspace

script-tests: build
	scripts/tests/test-setup-interfaces.sh
	scripts/tests/test-packaging.sh

bench: bench-fastpath bench-intercept

## Forwarding rate: dataplane vs dpdk-testpmd macswap on the same pcap (one core each).
bench-fastpath: deps
	$(CARGO) build --release -p tlsgate-dataplane --bins
	scripts/bench-fastpath.sh

## Scaling with 1, 2, 4 and 8 workers (SCALE_WORKERS): the fast path on net_pcap
## queues and the intercept path's full handshakes; the factor against one worker.
bench-scale: deps
	$(CARGO) build --release -p tlsgate-dataplane --bins
	scripts/bench-scale.sh

## The decrypted relay through the af_packet lab beside a Linux bridge (root; one
## CPU for the appliance, one for client and origin; medians of 5 rounds).
bench-lab: deps
	scripts/bench-lab.sh

clean:
	$(CARGO) clean

## Intercept path: worker CPU per intercepted TLS connection vs the crypto ceiling, goodput, memory.
bench-intercept: deps
	$(CARGO) bench -p tlsgate-tests --bench intercept
	$(CARGO) build -p tlsgate-control --bins
	$(CARGO) bench -p tlsgate-tests --bench signer

## Fuzz targets (fuzz/, cargo-fuzz): frame parser, ClientHello reader, policy loader,
## control-request decoder, license parser,
## FUZZ_SECONDS each. cargo-fuzz wants nightly flags; RUSTC_BOOTSTRAP=1 lets the
## machine's stable toolchain accept them.
FUZZ_SECONDS ?= 20
FUZZ_TARGETS := frame_parser client_hello policy_loader control_request license_parser
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	set -o pipefail; cd fuzz && for t in $(FUZZ_TARGETS); do \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) 2>&1 | tail -3 || exit 1; \
	done
