package x402

import (
	"sync"

	"github.com/secureexec/secureexec/chain"
)

// batchGas picks the gas limit of batch transactions. eth_estimateGas runs a batch about ten
// times on the node (a binary search over the limit), which made estimation most of what
// settling cost the node: a batch of 100 payments cost anvil ~100 ms of CPU. Once a batch has
// settled, the gas it used per payment is known; later batches get that much per payment and
// a quarter more, plus the reserve SettlementBatcher demands before each item. A batch that
// needs more all the same reverts as a whole (the batcher checks gasleft() before every item,
// never starving one), uses no authorization, and its payments go to a new batch, estimated
// afresh (Worker.awaitBatch). The limit is an upper bound: gas not used is not paid.
type batchGas struct {
	mu      sync.Mutex
	perItem uint64 // the most gas per payment a settled batch used; 0: ask the node
}

// batchGasBase covers the transaction itself (21,000) and the call into the batcher.
const batchGasBase = 100_000

// limit is the gas limit for a batch of n payments; 0 asks the node to estimate it.
func (g *batchGas) limit(n int) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.perItem == 0 || n <= 0 {
		return 0
	}
	return uint64(n)*g.perItem*5/4 + chain.BatchItemReserve + batchGasBase
}

// learn records what a mined, successful batch of n payments used.
func (g *batchGas) learn(used uint64, n int) {
	if n <= 0 || used == 0 {
		return
	}
	per := (used + uint64(n) - 1) / uint64(n)
	g.mu.Lock()
	g.perItem = max(g.perItem, per)
	g.mu.Unlock()
}

// forget makes the next batch ask the node again: one ran out of gas.
func (g *batchGas) forget() {
	g.mu.Lock()
	g.perItem = 0
	g.mu.Unlock()
}
