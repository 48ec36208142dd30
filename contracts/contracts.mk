# Contracts: Solidity sources -> pinned solc-js -> artifacts -> abigen --v2 bindings.
# Included by the top-level Makefile. Artifacts and bindings are checked in, so `go build`
# needs neither node nor abigen; run `make contracts` after editing contracts/src/*.sol and
# `make contracts-check` in CI to prove the checked-in files match the sources.

GO             ?= go
ABIGEN         := bin/abigen
ABIGEN_VERSION := v1.17.10
CONTRACT_NAMES := TestUSDC SettlementBatcher TestWallet X402Lens
ANVIL_BIN      := node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil

.PHONY: contracts contracts-check anvil

contracts: $(ABIGEN)
	@test -d node_modules/solc || npm ci --no-audit --no-fund
	node contracts/build.mjs
	@set -e; for c in $(CONTRACT_NAMES); do \
	  pkg=$$(echo $$c | tr 'A-Z' 'a-z'); \
	  mkdir -p contracts/bindings/$$pkg; \
	  $(ABIGEN) --v2 --abi contracts/artifacts/$$c.abi --bin contracts/artifacts/$$c.bin \
	    --pkg $$pkg --type $$c --out contracts/bindings/$$pkg/$$pkg.go; \
	  echo "abigen: contracts/bindings/$$pkg/$$pkg.go"; \
	done

# Recompiles in memory and regenerates bindings into a temporary directory; fails on any drift.
contracts-check: $(ABIGEN)
	@test -d node_modules/solc || npm ci --no-audit --no-fund
	node contracts/build.mjs --check
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; for c in $(CONTRACT_NAMES); do \
	  pkg=$$(echo $$c | tr 'A-Z' 'a-z'); \
	  $(ABIGEN) --v2 --abi contracts/artifacts/$$c.abi --bin contracts/artifacts/$$c.bin \
	    --pkg $$pkg --type $$c --out $$tmp/$$pkg.go; \
	  cmp -s $$tmp/$$pkg.go contracts/bindings/$$pkg/$$pkg.go || { echo "bindings out of date: $$pkg (run make contracts)"; exit 1; }; \
	done; echo "contracts: bindings up to date"

$(ABIGEN):
	GOBIN=$(CURDIR)/bin $(GO) install github.com/ethereum/go-ethereum/cmd/abigen@$(ABIGEN_VERSION)

# The anvil binary (npm @foundry-rs/anvil, pinned in package-lock.json) for cross-process tests.
anvil:
	@test -x $(ANVIL_BIN) || npm ci --no-audit --no-fund
	@$(ANVIL_BIN) --version | head -1
