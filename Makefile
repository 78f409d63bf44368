# tlsgate — the two commands: `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all deps build build-release run lab-up lab-down test lint unit-tests lab-tests script-tests \
        bench bench-fastpath bench-intercept fuzz clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace --bins

build-release: deps
	$(CARGO) build --release -p tlsgate-dataplane

## The appliance on the lab, in the foreground (Ctrl-C stops it; `make lab-down` removes the lab).
LAB_STATE := /var/lib/tlsgate-lab

run: build-release lab-up
	@scripts/lab-web.sh start
	@mkdir -p $(LAB_STATE)
	@[ -f $(LAB_STATE)/decryption-ca.pem ] || target/release/tlsgate-dataplane gen-ca \
		--cert $(LAB_STATE)/decryption-ca.pem --key $(LAB_STATE)/decryption-ca.key
	@echo
	@echo "tlsgate-dataplane is starting on the lab (inside tg-cli, outside tg-srv). Try, in another shell:"
	@echo "  ip netns exec tg-client ping -c 3 198.18.0.2"
	@echo "  ip netns exec tg-client curl http://198.18.0.2/"
	@echo "  ip netns exec tg-client curl -o /dev/null http://198.18.0.2/10M.bin"
	@echo "  ip netns exec tg-client curl -v --cacert $(LAB_STATE)/decryption-ca.pem \\"
	@echo "      --resolve server.tg.test:443:198.18.0.2 https://server.tg.test/    # decrypted: issuer is the decryption CA"
	@echo "  target/release/tlsgate-dataplane status     # counters of the running dataplane (--json: raw)"
	@echo
	target/release/tlsgate-dataplane --config config/lab.toml

lab-up: deps
	@scripts/lab.sh up

lab-down:
	-@scripts/lab-web.sh stop
	@scripts/lab.sh down

## Everything CI checks: formatting, lints, unit + in-process + lab tests (root), script tests.
test: deps lint build unit-tests script-tests fuzz
	@echo "make test: all checks passed"

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit-tests: build
	$(CARGO) test --workspace

script-tests:
	scripts/tests/test-setup-interfaces.sh

bench: bench-fastpath bench-intercept

## Forwarding rate: dataplane vs dpdk-testpmd macswap on the same pcap (one core each).
bench-fastpath: deps
	$(CARGO) build --release -p tlsgate-dataplane --bins
	scripts/bench-fastpath.sh

clean:
	$(CARGO) clean

## Intercept path: worker CPU per intercepted TLS connection vs the crypto ceiling, goodput, memory.
bench-intercept: deps
	$(CARGO) bench -p tlsgate-tests --bench intercept

## Fuzz targets (fuzz/, cargo-fuzz): frame parser, ClientHello reader, policy loader,
## FUZZ_SECONDS each. cargo-fuzz wants nightly flags; RUSTC_BOOTSTRAP=1 lets the
## machine's stable toolchain accept them.
FUZZ_SECONDS ?= 20
FUZZ_TARGETS := frame_parser client_hello policy_loader
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	set -o pipefail; cd fuzz && for t in $(FUZZ_TARGETS); do \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) 2>&1 | tail -3 || exit 1; \
	done
