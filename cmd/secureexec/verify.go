package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/secureexec/secureexec/proof"
)

// jobDocument is the part of GET /exec/jobs/{jobId} (or a saved copy of it) that
// verification needs.
type jobDocument struct {
	JobID     string          `json:"jobId"`
	ProofHash string          `json:"proofHash"`
	Record    json.RawMessage `json:"record"`
}

func verifyCmd() *cobra.Command {
	var (
		server string
		file   string
	)
	cmd := &cobra.Command{
		Use:   "verify [jobId]",
		Short: "Recompute a call's proof hash from its record and compare",
		Long: "verify fetches GET /exec/jobs/{jobId} from a gateway (or reads a saved copy with --file),\n" +
			"recomputes SHA-256 over the RFC 8785 canonical JSON of the record, and compares it with the\n" +
			"proofHash. It exits 0 on a match and 1 on a mismatch or any error.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var raw []byte
			var err error
			switch {
			case file != "" && len(args) == 0:
				raw, err = os.ReadFile(file)
			case file == "" && len(args) == 1:
				raw, err = fetchJob(cmd.Context(), server, args[0])
			default:
				return errors.New("give either a jobId or --file, not both")
			}
			if err != nil {
				return err
			}
			var doc jobDocument
			if err := json.Unmarshal(raw, &doc); err != nil {
				return fmt.Errorf("not a job document: %w", err)
			}
			if len(doc.Record) == 0 || doc.ProofHash == "" {
				return errors.New("the document has no record or no proofHash")
			}
			if err := proof.Verify(doc.Record, doc.ProofHash); err != nil {
				return fmt.Errorf("job %s: %w", doc.JobID, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: job %s record hashes to %s\n", doc.JobID, strings.ToLower(doc.ProofHash))
			return nil
		},
	}
	cmd.Flags().StringVar(&server, "server", "http://127.0.0.1:5091", "gateway base URL")
	cmd.Flags().StringVar(&file, "file", "", "verify a saved job document instead of fetching one")
	return cmd
}

const maxJobDocument = 4 << 20

func fetchJob(ctx context.Context, server, jobID string) ([]byte, error) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("--server %q: want an http(s) URL", server)
	}
	u = u.JoinPath("exec", "jobs", jobID)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJobDocument+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", u, err)
	}
	if len(body) > maxJobDocument {
		return nil, fmt.Errorf("%s: job document larger than %d bytes", u, maxJobDocument)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}
