# Vivarium — see README.md.
SWIFT       ?= swift
STATE_DIR   ?= /var/lib/vivarium
APT_PACKAGES = crun busybox-static tar gzip gcc libc6-dev libsqlite3-dev iproute2 procps util-linux curl sqlite3

.PHONY: run test build debug bench deps format lint clean

## Install the Debian packages Vivarium needs (only the missing ones).
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

## The static init of every sandbox, built beside each vivarium binary.
.build/%/vivarium-init: init/vivarium-init.c
	@mkdir -p $(dir $@)
	gcc -static -O2 -Wall -Wextra -Werror -o $@ $<

## Release binary at .build/release/vivarium.
build: deps
	$(SWIFT) build -c release
	@$(MAKE) --no-print-directory .build/release/vivarium-init

debug: deps
	$(SWIFT) build
	@$(MAKE) --no-print-directory .build/debug/vivarium-init

## Build and run the daemon on embedded defaults (SQLite in $(STATE_DIR), socket /run/vivarium/vivarium.sock).
run: build
	@echo "Starting vivarium. In another shell:"
	@echo "  .build/release/vivarium create demo"
	@echo "  .build/release/vivarium exec demo -- uname -a"
	@echo "  .build/release/vivarium ls; .build/release/vivarium rm -f demo"
	.build/release/vivarium serve --state-dir $(STATE_DIR)

## Unit and integration tests (integration tests need root and crun; set VIVARIUM_REQUIRE_INTEGRATION=1
## to fail instead of skip when they are missing).
test: debug
	$(SWIFT) test --no-parallel

## Latency benchmark against raw crun, measured in the same run.
bench: build
	VIVARIUM_BUILD_DIR=$(CURDIR)/.build/release .build/release/vivarium-bench

format:
	$(SWIFT) format format -i -r Sources Tests Package.swift

lint:
	$(SWIFT) format lint --strict -r Sources Tests Package.swift

clean:
	rm -rf .build
