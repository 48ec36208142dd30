package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/spf13/cobra"

	"github.com/secureexec/secureexec/chain"
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
			key, err := crypto.HexToECDSA(strings.TrimPrefix(keyHex, "0x"))
			if err != nil {
				return fmt.Errorf("--key: %w", err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			client, err := ethclient.DialContext(ctx, rpc)
			if err != nil {
				return fmt.Errorf("--rpc %s: %w", rpc, err)
			}
			defer client.Close()
			chainID, err := client.ChainID(ctx)
			if err != nil {
				return fmt.Errorf("--rpc %s: chain id: %w", rpc, err)
			}
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
	cmd.AddCommand(deploy)
	return cmd
}
