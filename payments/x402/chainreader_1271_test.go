package x402

import (
	"context"
	"math/big"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient/simulated"
)

// A contract wallet whose isValidSignature fails inside the EVM (an endless loop running out
// of gas, an invalid opcode) has answered "no": the payment is refused as an invalid signature
// (402), not the chain reported away (503, for ever, to a payer with a broken wallet). The loop
// is bounded by the call's own gas, not the node's cap, so that such a wallet cannot make every
// verification cost the node a block's worth of computation.
func TestERC1271WalletThatFailsInTheEVM(t *testing.T) {
	loop := common.HexToAddress("0x00000000000000000000000000000000000c0de3")
	invalid := common.HexToAddress("0x00000000000000000000000000000000000c0de4")
	b := simulated.NewBackend(types.GenesisAlloc{
		loop:    {Code: []byte{0x5b, 0x60, 0x00, 0x56}, Balance: big.NewInt(0)}, // JUMPDEST; PUSH1 0; JUMP
		invalid: {Code: []byte{0xfe}, Balance: big.NewInt(0)},                   // INVALID
	})
	defer b.Close()
	r := NewRPCReader(b.Client(), 10*time.Second)
	for _, w := range []common.Address{loop, invalid} {
		ok, err := r.IsValidSignature1271(context.Background(), w, common.Hash{1}, make([]byte, 65))
		if ok || err != nil {
			t.Errorf("wallet %s: %v, %v; want a plain no", w.Hex(), ok, err)
		}
	}
	if erc1271Gas > 5_000_000 {
		t.Errorf("isValidSignature may burn %d gas of the node's per verification", erc1271Gas)
	}
}
