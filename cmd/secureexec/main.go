// Command secureexec is the SecureExec gateway: sandboxed, paid tool execution for
// autonomous agents. `secureexec` alone serves on the embedded default.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "secureexec:", err)
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	var configFile string
	root := &cobra.Command{
		Use:           "secureexec",
		Short:         "Sandboxed tool execution for autonomous agents, paid per call",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&configFile, "config", "", "JSON file of settings (keys are the environment variable names)")
	load := func() (Config, error) { return loadConfig(os.LookupEnv, configFile) }
	serve := serveCmd(load)
	root.RunE = serve.RunE // `secureexec` alone serves
	root.AddCommand(serve, migrateCmd(load), verifyCmd(), configCmd(), devchainCmd(), callCmd(os.Getenv))
	return root
}

func configCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "config",
		Short: "List every setting with its default",
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, s := range settings {
				fmt.Fprintf(cmd.OutOrStdout(), "%-22s %-22q %s\n", s.name, s.def, s.help)
			}
			return nil
		},
	}
}
