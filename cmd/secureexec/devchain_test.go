package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"testing"

	"github.com/ethereum/go-ethereum/common"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/chain/chaintest"
)

// anvil's well-known test key #0 (never used on a real network).
const anvilKey0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"

func TestDevchainDeployToAnvil(t *testing.T) {
	url, client := chaintest.StartAnvil(t, 31337)
	var out bytes.Buffer
	cmd := rootCmd()
	cmd.SetArgs([]string{"devchain", "deploy", "--rpc", url, "--key", anvilKey0})
	cmd.SetOut(&out)
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	var got struct {
		ChainID  uint64 `json:"chainId"`
		Token    string `json:"token"`
		Batcher  string `json:"batcher"`
		Deployer string `json:"deployer"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("output %q: %v", out.String(), err)
	}
	// The first contract of key #0 lands at the address the x402 test vectors assume.
	if got.ChainID != 31337 || got.Token != "0x5FbDB2315678afecb367f032d93F642f64180aa3" || got.Deployer != "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266" {
		t.Fatalf("deployed %+v", got)
	}
	for _, a := range []string{got.Token, got.Batcher} {
		code, err := client.CodeAt(context.Background(), common.HexToAddress(a), nil)
		if err != nil || len(code) == 0 {
			t.Fatalf("no code at %s (%v)", a, err)
		}
	}
	// mint puts test USDC where a payer needs it.
	payer := "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC" // anvil #2
	m := rootCmd()
	m.SetArgs([]string{"devchain", "mint", "--rpc", url, "--key", anvilKey0, "--token", got.Token, "--to", payer, "--amount", "2.5"})
	m.SetOut(io.Discard)
	if err := m.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	if bal, err := chain.TokenBalance(context.Background(), client, common.HexToAddress(got.Token), common.HexToAddress(payer)); err != nil || bal.Int64() != 2_500_000 {
		t.Fatalf("minted balance %v (%v), want 2500000", bal, err)
	}

	bad := rootCmd()
	bad.SetArgs([]string{"devchain", "deploy", "--rpc", url})
	if err := bad.ExecuteContext(context.Background()); err == nil {
		t.Fatal("deploy without a key must fail")
	}
}
