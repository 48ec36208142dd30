package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/spf13/cobra"

	"github.com/secureexec/secureexec/client"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/x402"
)

// Environment variables `call` reads its credentials from. Keys never come from flags: a flag
// ends up in shell history and in every process listing.
const (
	envPayerKey    = "SECUREEXEC_PAYER_KEY"
	envInternalKey = "INTERNAL_API_KEY"
)

// callCmd is `secureexec call`: one tool call through the Go SDK, paid with x402 when the
// gateway asks for it.
func callCmd(getenv func(string) string) *cobra.Command {
	var (
		server, tool, args, agentID, maxPayment, callContext string
		real, simulate, insecureHTTP                         bool
		timeoutS                                             float64
		allowAssets                                          []string
	)
	cmd := &cobra.Command{
		Use:   "call",
		Short: "Call a tool on a gateway, paying with x402 if it asks",
		Long: "call posts one tool call to a gateway (POST /exec/tool, or /exec/simulate with --simulate) and\n" +
			"prints the result JSON. When the gateway answers 402 it pays once with x402 (an EIP-3009\n" +
			"USDC authorization, at most --max-payment) and prints the settlement: transaction, network,\n" +
			"payer, and whether it is settled or still pending. When the answer to the paid call is lost\n" +
			"and the gateway takes x402 payment identifiers, it sends the same payment once more (never a\n" +
			"new one). It exits non-zero, with the reason, when the client or the gateway refuses the\n" +
			"payment or the call; a failed paid call also prints what it paid to stderr.\n\n" +
			"Credentials come from the environment only, never from flags, so that they stay out of shell\n" +
			"history and process listings:\n" +
			"  " + envPayerKey + "  hex secp256k1 private key that signs x402 payments\n" +
			"  " + envInternalKey + "      the gateway's internal key (X-Internal-Key); internal calls never pay\n" +
			"Set at most one of them.\n\n" +
			"Only USDC on Base and Base Sepolia is paid by default; allow another token (a dev chain's) with\n" +
			"--allow-asset eip155:<chain id>/<token address>.",
		Example: "  SECUREEXEC_PAYER_KEY=... secureexec call --tool json_parse --args '{\"data\":{\"k\":\"v\"}}' --max-payment 0.05",
		Args:    cobra.NoArgs,
		// A refusal prints its reason, not the usage text.
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if real && simulate {
				return errors.New("--real and --simulate exclude each other")
			}
			maxAtomic, err := payments.ParseAtomic(maxPayment, payments.USDCDecimals)
			if err != nil {
				return fmt.Errorf("--max-payment: %w", err)
			}
			if a := strings.TrimSpace(args); !json.Valid([]byte(a)) || !strings.HasPrefix(a, "{") {
				return errors.New("--args must be a JSON object")
			}
			if callContext != "" && !json.Valid([]byte(callContext)) {
				return errors.New("--context must be JSON")
			}
			if timeoutS < 0 {
				return errors.New("--timeout-s must not be negative")
			}
			opts := []client.Option{
				client.WithMaxPayment(maxAtomic),
				client.WithLogger(slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))),
				// The HTTP deadline must outlast the tool's own timeout.
				client.WithTimeout(max(client.DefaultTimeout, time.Duration(timeoutS*float64(time.Second))+30*time.Second)),
			}
			if insecureHTTP {
				opts = append(opts, client.WithInsecureHTTP())
			}
			for _, s := range allowAssets {
				n, err := parseAllowedAsset(s)
				if err != nil {
					return fmt.Errorf("--allow-asset %q: %w", s, err)
				}
				opts = append(opts, client.WithAllowedAssets(n))
			}
			cred, err := credentialOption(getenv)
			if err != nil {
				return err
			}
			if cred != nil {
				opts = append(opts, cred)
			}
			c, err := client.New(server, opts...)
			if err != nil {
				return err
			}
			defer c.CloseIdleConnections()

			call := client.Call{AgentID: agentID, Tool: tool, Args: json.RawMessage(args), TimeoutS: timeoutS}
			if callContext != "" {
				call.Context = json.RawMessage(callContext)
			}
			if real {
				f := false
				call.DryRun = &f
			}
			exec := c.Exec
			if simulate {
				exec = c.Simulate
			}
			res, err := exec(cmd.Context(), call)
			var inFlight *client.PaymentInFlightError
			if errors.As(err, &inFlight) && inFlight.Payment.PaymentID != "" && cmd.Context().Err() == nil {
				// The signed payment dies with this process, and calling again would pay again:
				// send the same one once more, which the gateway answers with the answer it kept
				// under the payment identifier.
				fmt.Fprintf(cmd.ErrOrStderr(), "%v\nsending the same payment again (payment id %s)\n", err, inFlight.Payment.PaymentID)
				res, err = c.Resend(cmd.Context(), err)
			}
			if err != nil {
				printPaidFailure(cmd.ErrOrStderr(), err)
				return err
			}
			return printResult(cmd.OutOrStdout(), res)
		},
	}
	f := cmd.Flags()
	f.StringVar(&server, "server", localServer(), "gateway base URL (default: this machine, at PORT)")
	f.StringVar(&tool, "tool", "", "tool name, e.g. json_parse (required)")
	f.StringVar(&args, "args", "{}", "the tool's args, a JSON object")
	f.BoolVar(&real, "real", false, "run the tool for real (dryRun false); the default is a dry run")
	f.BoolVar(&simulate, "simulate", false, "POST /exec/simulate (free: a request for payment there is refused) instead of /exec/tool")
	f.StringVar(&agentID, "agent-id", "", "the caller's agent id")
	f.Float64Var(&timeoutS, "timeout-s", 0, "tool timeout in seconds (0: the gateway's default)")
	f.StringVar(&maxPayment, "max-payment", "1", "refuse to pay more than this many USDC for the call (decimal, e.g. 0.05)")
	f.StringVar(&callContext, "context", "", "optional JSON context recorded with the call")
	f.StringArrayVar(&allowAssets, "allow-asset", nil, "also pay in this token: eip155:<chain id>/<address> (repeatable)")
	f.BoolVar(&insecureHTTP, "insecure-http", false, "pay a gateway on another machine over plain http:// (anyone on the path could redirect the payment)")
	_ = cmd.MarkFlagRequired("tool")
	return cmd
}

// credentialOption reads the payer key or the internal key from the environment.
func credentialOption(getenv func(string) string) (client.Option, error) {
	payer, internal := strings.TrimSpace(getenv(envPayerKey)), getenv(envInternalKey)
	switch {
	case payer != "" && internal != "":
		return nil, fmt.Errorf("both %s and %s are set: unset one (internal calls never pay)", envPayerKey, envInternalKey)
	case internal != "":
		return client.WithInternalKey(internal), nil
	case payer != "":
		key, err := crypto.HexToECDSA(strings.TrimPrefix(strings.TrimPrefix(payer, "0x"), "0X"))
		if err != nil {
			// The parser's message may quote the key: say only which variable is wrong.
			return nil, fmt.Errorf("%s is not a hex secp256k1 private key", envPayerKey)
		}
		return client.WithX402Signer(key), nil
	}
	return nil, nil
}

// parseAllowedAsset reads "eip155:<chain id>/<address>" (CAIP-19's "erc20:" prefix allowed).
func parseAllowedAsset(s string) (x402.Network, error) {
	network, addr, ok := strings.Cut(s, "/")
	if !ok {
		return x402.Network{}, errors.New("want eip155:<chain id>/<token address>")
	}
	id, err := x402.ParseCAIP2(network)
	if err != nil {
		return x402.Network{}, err
	}
	addr = strings.TrimPrefix(addr, "erc20:")
	if len(addr) != 42 || !strings.HasPrefix(addr, "0x") || !common.IsHexAddress(addr) {
		return x402.Network{}, fmt.Errorf("%q is not a 0x-prefixed 20-byte address", addr)
	}
	return x402.CustomNetwork(id, common.HexToAddress(addr), "", ""), nil
}

// printResult writes the result JSON, then what was paid and how it settled.
func printResult(w io.Writer, res *client.Result) error {
	var out bytes.Buffer
	raw := bytes.TrimSpace(res.Raw)
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		out.Reset()
		out.Write(raw)
	}
	out.WriteByte('\n')
	writePayment(&out, res.Payment, res.Settlement)
	_, err := w.Write(out.Bytes())
	return err
}

// printPaidFailure tells what a failed call paid, when it paid: the payment was sent and may
// have been kept, so calling again would sign and pay again.
func printPaidFailure(w io.Writer, err error) {
	var (
		p  *client.Payment
		s  *client.Settlement
		fe *client.PaymentInFlightError
		pe *client.PaymentRefusedError
		ae *client.APIError
	)
	switch {
	case errors.As(err, &fe):
		p = fe.Payment
	case errors.As(err, &pe) && pe.Paid:
		p, s = pe.Payment, pe.Settlement
	case errors.As(err, &ae):
		p, s = ae.Payment, ae.Settlement
	}
	if p == nil {
		return
	}
	var out bytes.Buffer
	writePayment(&out, p, s)
	_, _ = w.Write(out.Bytes())
}

// writePayment writes what was paid and how it settled; nothing when nothing was paid.
func writePayment(out *bytes.Buffer, p *client.Payment, s *client.Settlement) {
	if p == nil {
		return
	}
	fmt.Fprintf(out, "payment: %s USDC (%d atomic) on %s, token %s, payer %s, payTo %s\n",
		payments.FormatAtomic(p.Amount, payments.USDCDecimals), p.Amount, p.Network, p.Asset.Hex(), p.Payer.Hex(), p.PayTo.Hex())
	switch {
	case s == nil:
		out.WriteString("settlement: not reported by the gateway\n")
	case s.Status == client.SettlementPending:
		fmt.Fprintf(out, "settlement: pending (submitted, not final yet), tx %s, network %s, payer %s\n", callField(s.Transaction), s.Network, s.Payer)
	case s.Status == client.SettlementSettled:
		fmt.Fprintf(out, "settlement: settled, tx %s, network %s, payer %s\n", s.Transaction, s.Network, s.Payer)
	default:
		fmt.Fprintf(out, "settlement: %s (%s), tx %s, network %s, payer %s\n", s.Status, callField(s.ErrorReason), callField(s.Transaction), s.Network, s.Payer)
	}
}

// callField prints an empty field of the settlement as "none".
func callField(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
