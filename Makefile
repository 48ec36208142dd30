# SecureExec. `make run` serves on the embedded default; `make test` runs every test
# against the live Postgres and Redis on 127.0.0.1 (started by .ci/run when they are down).

GO       ?= go
BIN      := bin/secureexec
PKGS     := ./...
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test?sslmode=disable

.PHONY: build run test test-short fuzz bench bench-load bench-x402 outage-drill lint services tools clean

include contracts/contracts.mk

build:
	$(GO) build -o $(BIN) ./cmd/secureexec

run: build
	./$(BIN) serve

# Every test, with the race detector, against the real Postgres and Redis (and anvil,
# installed from npm by `make anvil`, for the cross-process chain tests); then the tools'
# package again without it, where the tests that prove a tool stops at its deadline hold
# their tight bounds (under the race detector they are stretched: exec/timing_race_test.go).
test: anvil
	SECUREEXEC_TEST_DATABASE_URL='$(TEST_DATABASE_URL)' $(GO) test -race -count=1 $(PKGS)
	$(GO) test -count=1 ./exec

# Unit tests only, no services needed.
test-short:
	SECUREEXEC_SKIP_PG=1 $(GO) test -short -count=1 $(PKGS)

# Each fuzz target for a short, bounded run.
FUZZTIME ?= 10s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# Go benchmarks (see docs/PERFORMANCE.md).
bench:
	SECUREEXEC_TEST_DATABASE_URL='$(TEST_DATABASE_URL)' $(GO) test -run '^$$' -bench . -benchmem $(PKGS)

# The HTTP load benchmark of docs/PERFORMANCE.md: gateway + bare handler, same run.
bench-load: build
	bash scripts/bench-load.sh

# x402-paid calls against anvil with live Postgres and Redis (MODE=batch|sync, N, C).
bench-x402: build
	bash scripts/bench-x402.sh

# Postgres stopped for a minute under load; rows must equal answers afterwards.
outage-drill: build
	bash scripts/outage-drill.sh

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet $(PKGS)

services:
	bash .ci/services.sh

clean:
	rm -rf bin secureexec-data
