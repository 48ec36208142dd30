package chain

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/secureexec/secureexec/contracts/bindings/settlementbatcher"
	"github.com/secureexec/secureexec/contracts/bindings/testusdc"
)

// DefaultDeployTimeout bounds Deploy when the caller's context has no deadline.
const DefaultDeployTimeout = 60 * time.Second

// Addresses locates the project's contracts on one chain.
type Addresses struct {
	ChainID  uint64
	Token    common.Address // TestUSDC (EIP-3009, "USD Coin" / "2", 6 decimals)
	Batcher  common.Address // SettlementBatcher, operator = Deployer
	Deployer common.Address // owner of both; minter of the token and operator of the batcher
}

type addressesJSON struct {
	ChainID  uint64 `json:"chainId"`
	Token    string `json:"token"`
	Batcher  string `json:"batcher"`
	Deployer string `json:"deployer"`
}

// MarshalJSON writes the addresses checksummed.
func (a Addresses) MarshalJSON() ([]byte, error) {
	return json.Marshal(addressesJSON{ChainID: a.ChainID, Token: a.Token.Hex(), Batcher: a.Batcher.Hex(), Deployer: a.Deployer.Hex()})
}

// UnmarshalJSON reads addresses in any case, rejecting malformed ones.
func (a *Addresses) UnmarshalJSON(b []byte) error {
	var j addressesJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	for _, f := range []struct{ name, value string }{{"token", j.Token}, {"batcher", j.Batcher}, {"deployer", j.Deployer}} {
		if !common.IsHexAddress(f.value) {
			return fmt.Errorf("chain: addresses: %s %q is not an address", f.name, f.value)
		}
	}
	*a = Addresses{ChainID: j.ChainID, Token: common.HexToAddress(j.Token), Batcher: common.HexToAddress(j.Batcher), Deployer: common.HexToAddress(j.Deployer)}
	return nil
}

// Deploy deploys TestUSDC and SettlementBatcher from key to any chain reachable through
// backend (anvil, geth --dev, the simulated chain with auto-mining), with the key's address as
// token owner (minter) and batcher operator. Receipts are polled every 10 ms; ctx bounds the
// whole deployment (DefaultDeployTimeout when it has no deadline).
func Deploy(ctx context.Context, backend Backend, key *ecdsa.PrivateKey, chainID *big.Int) (Addresses, error) {
	ctx, cancel := withDefaultTimeout(ctx, DefaultDeployTimeout)
	defer cancel()
	s, err := NewSender(backend, key, chainID, SenderOptions{})
	if err != nil {
		return Addresses{}, err
	}
	tokenTx, batcherTx, err := sendDeployment(ctx, s)
	if err != nil {
		return Addresses{}, err
	}
	return deploymentAddresses(ctx, s, chainID, tokenTx, batcherTx)
}

// sendDeployment submits both creations back to back (consecutive nonces) without waiting.
func sendDeployment(ctx context.Context, s *Sender) (tokenTx, batcherTx common.Hash, err error) {
	tokenTx, err = s.send(ctx, nil, common.FromHex(testusdc.TestUSDCMetaData.Bin), 0, nil)
	if err != nil {
		return common.Hash{}, common.Hash{}, fmt.Errorf("chain: deploy TestUSDC: %w", err)
	}
	batcherInit := append(common.FromHex(settlementbatcher.SettlementBatcherMetaData.Bin),
		settlementbatcher.NewSettlementBatcher().PackConstructor(s.Address())...)
	batcherTx, err = s.send(ctx, nil, batcherInit, 0, nil)
	if err != nil {
		return common.Hash{}, common.Hash{}, fmt.Errorf("chain: deploy SettlementBatcher: %w", err)
	}
	return tokenTx, batcherTx, nil
}

// deploymentAddresses waits for both creation receipts and reads the contract addresses.
func deploymentAddresses(ctx context.Context, s *Sender, chainID *big.Int, tokenTx, batcherTx common.Hash) (Addresses, error) {
	token, err := createdAddress(ctx, s, tokenTx, "TestUSDC")
	if err != nil {
		return Addresses{}, err
	}
	batcher, err := createdAddress(ctx, s, batcherTx, "SettlementBatcher")
	if err != nil {
		return Addresses{}, err
	}
	return Addresses{ChainID: chainID.Uint64(), Token: token, Batcher: batcher, Deployer: s.Address()}, nil
}

func createdAddress(ctx context.Context, s *Sender, hash common.Hash, name string) (common.Address, error) {
	r, err := s.WaitReceipt(ctx, hash, DefaultPollEvery)
	if err != nil {
		return common.Address{}, fmt.Errorf("chain: deploy %s: %w", name, err)
	}
	if r.Status != types.ReceiptStatusSuccessful || r.ContractAddress == (common.Address{}) {
		return common.Address{}, fmt.Errorf("chain: deploy %s (tx %s): %w", name, hash.Hex(), ErrTxReverted)
	}
	return r.ContractAddress, nil
}

// Authorization is one signed EIP-3009 TransferWithAuthorization, ready to be relayed.
type Authorization struct {
	From        common.Address
	To          common.Address
	Value       *big.Int
	ValidAfter  *big.Int
	ValidBefore *big.Int
	Nonce       common.Hash
	// Signature is 65 bytes r‖s‖v (v 27/28) for an account, or whatever the ERC-1271 wallet
	// at From accepts.
	Signature []byte
}

// PackTransferWithAuthorization encodes token.transferWithAuthorization(…, bytes signature)
// (selector 0xcf092995), the overload that serves both accounts and ERC-1271 wallets.
func PackTransferWithAuthorization(a Authorization) ([]byte, error) {
	return testusdc.NewTestUSDC().TryPackTransferWithAuthorization(a.From, a.To, a.Value, a.ValidAfter, a.ValidBefore, a.Nonce, a.Signature)
}

// BatchItemGas is SettlementBatcher's ITEM_GAS: the gas it forwards to the token per item.
const BatchItemGas = 300_000

// BatchItemReserve is the gas SettlementBatcher demands to be left before it starts an item
// (ITEM_GAS + ITEM_GAS/63 + ITEM_OVERHEAD): with less, the whole batch reverts ("out of gas")
// rather than starve one item into a failure that would look like a bad authorization.
const BatchItemReserve = BatchItemGas + BatchItemGas/63 + 30_000

// PackSettleBatch encodes batcher.settleBatch(token, auths).
func PackSettleBatch(token common.Address, auths []Authorization) ([]byte, error) {
	items := make([]settlementbatcher.SettlementBatcherAuthorization, len(auths))
	for i, a := range auths {
		items[i] = settlementbatcher.SettlementBatcherAuthorization{
			From: a.From, To: a.To, Value: a.Value, ValidAfter: a.ValidAfter, ValidBefore: a.ValidBefore,
			Nonce: a.Nonce, Signature: a.Signature,
		}
	}
	return settlementbatcher.NewSettlementBatcher().TryPackSettleBatch(token, items)
}

// PackMint encodes token.mint(to, value) (owner only).
func PackMint(to common.Address, value *big.Int) []byte {
	return testusdc.NewTestUSDC().PackMint(to, value)
}

// Caller is what the read helpers need; every ethclient-compatible client has it.
type Caller interface {
	CallContract(ctx context.Context, call ethereum.CallMsg, blockNumber *big.Int) ([]byte, error)
}

// TokenBalance reads token.balanceOf(holder) at the latest block.
func TokenBalance(ctx context.Context, c Caller, token, holder common.Address) (*big.Int, error) {
	t := testusdc.NewTestUSDC()
	out, err := c.CallContract(ctx, ethereum.CallMsg{To: &token, Data: t.PackBalanceOf(holder)}, nil)
	if err != nil {
		return nil, fmt.Errorf("chain: balanceOf %s: %w", holder.Hex(), err)
	}
	return t.UnpackBalanceOf(out)
}

// AuthorizationState reads token.authorizationState(authorizer, nonce): true once the nonce
// was used or canceled on-chain.
func AuthorizationState(ctx context.Context, c Caller, token, authorizer common.Address, nonce common.Hash) (bool, error) {
	t := testusdc.NewTestUSDC()
	out, err := c.CallContract(ctx, ethereum.CallMsg{To: &token, Data: t.PackAuthorizationState(authorizer, nonce)}, nil)
	if err != nil {
		return false, fmt.Errorf("chain: authorizationState %s: %w", authorizer.Hex(), err)
	}
	if len(out) == 0 {
		return false, errors.New("chain: authorizationState: empty result (no contract at token address?)")
	}
	return t.UnpackAuthorizationState(out)
}
