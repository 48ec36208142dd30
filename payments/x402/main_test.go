package x402

import (
	"testing"

	"go.uber.org/goleak"
)

// The simulated chain of the reader tests runs goroutines; they must all be gone when it
// closes, except two that go-ethereum itself leaves behind: the process-wide transaction sender
// cache (started once, never stopped) and the memory-backed leveldb of the node's peer
// database (p2p/enode), which Backend.Close does not close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/ethereum/go-ethereum/core.(*txSenderCacher).cache"),
		goleak.IgnoreTopFunction("github.com/syndtr/goleveldb/leveldb.(*DB).mpoolDrain"),
	)
}
