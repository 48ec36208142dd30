package chain

import (
	"context"
	"errors"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// RPCCaller is the one JSON-RPC method RPCReceipts needs; *rpc.Client has it.
type RPCCaller interface {
	CallContext(ctx context.Context, result any, method string, args ...any) error
}

// RPCReceipts reads receipts over JSON-RPC as ethclient does, only faster for receipts with
// many logs. A settled batch of a hundred payments carries three hundred logs, and each log
// repeats the receipt's block and transaction fields: ethclient decodes all of them with
// encoding/json, and reading receipts cost the gateway more CPU than verifying the payments'
// signatures.
// Here the log fields that only repeat the receipt's are taken from the receipt, and the rest
// is decoded with go-json-experiment's decoder. The receipt returned is the one ethclient
// returns, field for field (TestRPCReceiptsMatchEthclient).
type RPCReceipts struct{ RPC RPCCaller }

// TransactionReceipt returns the receipt of hash, or ethereum.NotFound while it is not mined.
func (r RPCReceipts) TransactionReceipt(ctx context.Context, hash common.Hash) (*types.Receipt, error) {
	var raw jsontext.Value
	if err := r.RPC.CallContext(ctx, &raw, "eth_getTransactionReceipt", hash); err != nil {
		return nil, err
	}
	if len(raw) == 0 || string(raw) == "null" {
		return nil, ethereum.NotFound
	}
	return decodeReceipt(raw)
}

// rpcReceipt is the JSON form of a receipt, as gencodec writes it for types.Receipt.
type rpcReceipt struct {
	Type              *hexutil.Uint64 `json:"type"`
	PostState         *hexutil.Bytes  `json:"root"`
	Status            *hexutil.Uint64 `json:"status"`
	CumulativeGasUsed *hexutil.Uint64 `json:"cumulativeGasUsed"`
	Bloom             *types.Bloom    `json:"logsBloom"`
	Logs              []rpcLog        `json:"logs"`
	TxHash            *common.Hash    `json:"transactionHash"`
	ContractAddress   *common.Address `json:"contractAddress"`
	GasUsed           *hexutil.Uint64 `json:"gasUsed"`
	EffectiveGasPrice *hexutil.Big    `json:"effectiveGasPrice"`
	BlobGasUsed       *hexutil.Uint64 `json:"blobGasUsed"`
	BlobGasPrice      *hexutil.Big    `json:"blobGasPrice"`
	BlockHash         *common.Hash    `json:"blockHash"`
	BlockNumber       *hexutil.Big    `json:"blockNumber"`
	TransactionIndex  *hexutil.Uint   `json:"transactionIndex"`
}

// rpcLog holds what a log says beyond its receipt's block and transaction fields.
type rpcLog struct {
	Address        *common.Address `json:"address"`
	Topics         []common.Hash   `json:"topics"`
	Data           *hexutil.Bytes  `json:"data"`
	BlockTimestamp *hexutil.Uint64 `json:"blockTimestamp"`
	Index          *hexutil.Uint   `json:"logIndex"`
	Removed        *bool           `json:"removed"`
}

// decodeReceipt decodes a receipt in its JSON-RPC form, with the required fields types.Receipt
// requires. Names match exactly, as nodes write them; a repeated name is refused.
func decodeReceipt(raw []byte) (*types.Receipt, error) {
	var dec rpcReceipt
	if err := json.Unmarshal(raw, &dec); err != nil {
		return nil, fmt.Errorf("chain: decode receipt: %w", err)
	}
	missing := func(field string) error { return fmt.Errorf("chain: decode receipt: missing %s", field) }
	switch {
	case dec.CumulativeGasUsed == nil:
		return nil, missing("cumulativeGasUsed")
	case dec.Bloom == nil:
		return nil, missing("logsBloom")
	case dec.Logs == nil:
		return nil, missing("logs")
	case dec.TxHash == nil:
		return nil, missing("transactionHash")
	case dec.GasUsed == nil:
		return nil, missing("gasUsed")
	}
	r := &types.Receipt{
		CumulativeGasUsed: uint64(*dec.CumulativeGasUsed),
		Bloom:             *dec.Bloom,
		TxHash:            *dec.TxHash,
		GasUsed:           uint64(*dec.GasUsed),
		EffectiveGasPrice: (*big.Int)(dec.EffectiveGasPrice),
		BlobGasPrice:      (*big.Int)(dec.BlobGasPrice),
		BlockNumber:       (*big.Int)(dec.BlockNumber),
	}
	if dec.Type != nil {
		r.Type = uint8(*dec.Type)
	}
	if dec.PostState != nil {
		r.PostState = *dec.PostState
	}
	if dec.Status != nil {
		r.Status = uint64(*dec.Status)
	}
	if dec.ContractAddress != nil {
		r.ContractAddress = *dec.ContractAddress
	}
	if dec.BlobGasUsed != nil {
		r.BlobGasUsed = uint64(*dec.BlobGasUsed)
	}
	if dec.BlockHash != nil {
		r.BlockHash = *dec.BlockHash
	}
	if dec.TransactionIndex != nil {
		r.TransactionIndex = uint(*dec.TransactionIndex)
	}

	var blockNumber uint64
	if r.BlockNumber != nil {
		if !r.BlockNumber.IsUint64() {
			return nil, errors.New("chain: decode receipt: blockNumber out of range")
		}
		blockNumber = r.BlockNumber.Uint64()
	}
	logs := make([]types.Log, len(dec.Logs))
	r.Logs = make([]*types.Log, len(dec.Logs))
	for i, d := range dec.Logs {
		switch {
		case d.Address == nil:
			return nil, missing("a log's address")
		case d.Topics == nil:
			return nil, missing("a log's topics")
		case d.Data == nil:
			return nil, missing("a log's data")
		}
		l := &logs[i]
		*l = types.Log{
			Address: *d.Address, Topics: d.Topics, Data: *d.Data,
			BlockNumber: blockNumber, TxHash: r.TxHash, TxIndex: r.TransactionIndex, BlockHash: r.BlockHash,
		}
		if d.BlockTimestamp != nil {
			l.BlockTimestamp = uint64(*d.BlockTimestamp)
		}
		if d.Index != nil {
			l.Index = uint(*d.Index)
		}
		if d.Removed != nil {
			l.Removed = *d.Removed
		}
		r.Logs[i] = l
	}
	return r, nil
}
