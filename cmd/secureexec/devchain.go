package main

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/spf13/cobra"

	"github.com/secureexec/secureexec/chain"
	"github.com/secureexec/secureexec/payments"
)

func devchainCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "devchain",
		Short: "Dev and test chains: deploy SecureExec's contracts to any EVM chain",
	}
	var rpc, keyHex string
	deploy := &cobra.Command{
		Use:   "deploy",
		Short: "Deploy the EIP-3009 test token and the settlement batcher; print their addresses as JSON",
		Long: "deploy sends two contract creations from --key to the chain at --rpc (anvil, geth --dev, ...)\n" +
			"and prints {chainId, token, batcher, deployer}. The deployer owns the token (it can mint)\n" +
			"and operates the batcher: use the same key as the gateway's SETTLEMENT_PRIVATE_KEY.\n" +
			"The key may also come from the environment as DEPLOYER_PRIVATE_KEY. Test chains only.",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if keyHex == "" {
				keyHex = os.Getenv("DEPLOYER_PRIVATE_KEY")
			}
			if rpc == "" || keyHex == "" {
				return errors.New("--rpc and --key (or DEPLOYER_PRIVATE_KEY) are required")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			key, client, chainID, err := dialWithKey(ctx, rpc, keyHex)
			if err != nil {
				return err
			}
			defer client.Close()
			addrs, err := chain.Deploy(ctx, client, key, chainID)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(addrs)
		},
	}
	deploy.Flags().StringVar(&rpc, "rpc", "", "JSON-RPC URL of the chain, e.g. http://127.0.0.1:8545")
	deploy.Flags().StringVar(&keyHex, "key", "", "hex private key of a funded deployer (or DEPLOYER_PRIVATE_KEY)")
	cmd.AddCommand(deploy, mintCmd())
	return cmd
}

// dialWithKey parses --key and connects to the chain at --rpc, which both devchain commands
// need before they send anything.
func dialWithKey(ctx context.Context, rpc, keyHex string) (*ecdsa.PrivateKey, *ethclient.Client, *big.Int, error) {
	key, err := crypto.HexToECDSA(strings.TrimPrefix(keyHex, "0x"))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--key: %w", err)
	}
	client, err := chain.Dial(ctx, rpc, chain.MaxRPCAnswerBytes)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--rpc %s: %w", rpc, err)
	}
	chainID, err := client.ChainID(ctx)
	if err != nil {
		client.Close()
		return nil, nil, nil, fmt.Errorf("--rpc %s: chain id: %w", rpc, err)
	}
	return key, client, chainID, nil
}

func mintCmd() *cobra.Command {
	var rpc, keyHex, token, amount string
	var to []string
	mint := &cobra.Command{
		Use:   "mint",
		Short: "Mint test USDC (the deployed TestUSDC) to addresses; the key must be the token's owner",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if keyHex == "" {
				keyHex = os.Getenv("DEPLOYER_PRIVATE_KEY")
			}
			if rpc == "" || keyHex == "" || !common.IsHexAddress(token) || len(to) == 0 {
				return errors.New("--rpc, --key (or DEPLOYER_PRIVATE_KEY), --token and at least one --to are required")
			}
			atomic, err := payments.ParseAtomic(amount, payments.USDCDecimals)
			if err != nil {
				return fmt.Errorf("--amount: %w", err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			key, client, chainID, err := dialWithKey(ctx, rpc, keyHex)
			if err != nil {
				return err
			}
			defer client.Close()
			sender, err := chain.NewSender(client, key, chainID, chain.SenderOptions{})
			if err != nil {
				return err
			}
			for _, a := range to {
				if !common.IsHexAddress(a) {
					return fmt.Errorf("--to %q is not an address", a)
				}
				h, err := sender.Send(ctx, common.HexToAddress(token), chain.PackMint(common.HexToAddress(a), new(big.Int).SetUint64(atomic)))
				if err != nil {
					return err
				}
				if r, err := sender.WaitReceipt(ctx, h, 10*time.Millisecond); err != nil || r.Status != 1 {
					return fmt.Errorf("mint to %s: tx %s failed: %v", a, h.Hex(), err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "minted %s USDC to %s (tx %s)\n", amount, common.HexToAddress(a).Hex(), h.Hex())
			}
			return nil
		},
	}
	mint.Flags().StringVar(&rpc, "rpc", "", "JSON-RPC URL of the chain")
	mint.Flags().StringVar(&keyHex, "key", "", "hex private key of the token's owner (or DEPLOYER_PRIVATE_KEY)")
	mint.Flags().StringVar(&token, "token", "", "the TestUSDC address (from devchain deploy)")
	mint.Flags().StringArrayVar(&to, "to", nil, "an address to mint to (repeat)")
	mint.Flags().StringVar(&amount, "amount", "1000", "USDC per address, as a decimal")
	return mint
}
