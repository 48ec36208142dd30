package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/secureexec/secureexec/proof"
	"github.com/secureexec/secureexec/store"
)

// A job document is what GET /exec/jobs/{jobId} answers (store.Entry), or a saved copy of it.
// Its proof hash vouches for the record only; verify also holds the document's own fields,
// and the job asked for, to the record, so that a valid record of another call (or a forged
// field beside a true record) does not pass as this job's.

// recordFacts are the fields of a record that the document repeats.
type recordFacts struct {
	SchemaVersion string `json:"schemaVersion"`
	JobID         string `json:"jobId"`
	Timestamp     string `json:"timestamp"`
	AgentID       string `json:"agentId"`
	Tool          struct {
		Name string `json:"name"`
	} `json:"tool"`
	DryRun bool   `json:"dryRun"`
	Status string `json:"status"`
	IAM    struct {
		Approved bool `json:"approved"`
	} `json:"iam"`
	Payment struct {
		Protocol string `json:"protocol"`
	} `json:"payment"`
}

// verifyJobDocument checks a job document: the record hashes to the proofHash, the record is
// the job's (wantJob, when given, and the document's jobId) and every field the document
// repeats says what the record says. It returns the job id and its proof hash. The document is decoded strictly
// (names matched exactly, a repeated name refused), so that what verify checks is what any
// other JSON reader of the document would read.
func verifyJobDocument(raw []byte, wantJob string) (jobID, proofHash string, err error) {
	var doc store.Entry
	if err := jsonv2.Unmarshal(raw, &doc); err != nil {
		return "", "", fmt.Errorf("not a job document: %w", err)
	}
	if len(doc.Record) == 0 || doc.ProofHash == "" {
		return "", "", errors.New("the document has no record or no proofHash")
	}
	if err := proof.Verify(doc.Record, doc.ProofHash); err != nil {
		return "", "", fmt.Errorf("job %q: %w", doc.JobID, err)
	}
	var rec recordFacts
	if err := jsonv2.Unmarshal(doc.Record, &rec); err != nil {
		return "", "", fmt.Errorf("job %q: the record is not a call record: %w", doc.JobID, err)
	}
	if !sameJob(rec.JobID, doc.JobID) {
		return "", "", fmt.Errorf("the document is job %q, its record is job %q", doc.JobID, rec.JobID)
	}
	if wantJob != "" && !sameJob(rec.JobID, wantJob) {
		return "", "", fmt.Errorf("asked for job %q, the record is job %q", wantJob, rec.JobID)
	}
	recTime, err := time.Parse(time.RFC3339, rec.Timestamp)
	if err != nil {
		return "", "", fmt.Errorf("job %s: the record's timestamp %q: %w", rec.JobID, rec.Timestamp, err)
	}
	for _, f := range []struct {
		name        string
		doc, record any
	}{
		{"callerAgentId", doc.CallerAgentID, rec.AgentID},
		{"toolName", doc.ToolName, rec.Tool.Name},
		{"dryRun", doc.DryRun, rec.DryRun},
		{"status", doc.Status, rec.Status},
		{"iamApproved", doc.IAMApproved, rec.IAM.Approved},
		{"paymentProtocol", doc.PaymentProtocol, rec.Payment.Protocol},
		{"schemaVersion", doc.SchemaVersion, rec.SchemaVersion},
		// The record shows the time to the millisecond; the column keeps more.
		{"timestamp", doc.Timestamp.Truncate(time.Millisecond).UTC(), recTime.UTC()},
	} {
		if f.doc != f.record {
			return "", "", fmt.Errorf("job %s: the document's %s is %s, the record's is %s", rec.JobID, f.name, quoted(f.doc), quoted(f.record))
		}
	}
	return rec.JobID, doc.ProofHash, nil
}

// quoted shows a value from the document for the terminal: strings quoted, so that control
// characters and escape sequences in them are shown, not obeyed.
func quoted(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(v)
}

// sameJob compares job ids as UUIDs (a user may type one in capitals).
func sameJob(a, b string) bool {
	ua, errA := uuid.Parse(a)
	ub, errB := uuid.Parse(b)
	return errA == nil && errB == nil && ua == ub
}

func verifyCmd() *cobra.Command {
	var (
		server   string
		file     string
		maxBytes int64
		timeout  time.Duration
		expect   string
	)
	cmd := &cobra.Command{
		Use:   "verify [jobId]",
		Short: "Recompute a call's proof hash from its record and compare",
		Long: "verify fetches GET /exec/jobs/{jobId} from a gateway (or reads a saved copy with --file),\n" +
			"recomputes SHA-256 over the RFC 8785 canonical JSON of the record, and compares it with the\n" +
			"proofHash. It also checks that the record is the job asked for and that the document's own\n" +
			"fields (jobId, status, toolName, ...) say what the record says. A document that agrees with\n" +
			"itself proves only that: --expect-hash compares it with the proofHash (or X-Proof-Hash) the call\n" +
			"returned, which anyone could otherwise forge a document for. It exits 0 when all agree and\n" +
			"1 on any mismatch or error.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var raw []byte
			var err error
			switch {
			case maxBytes <= 0:
				return fmt.Errorf("--max-bytes %d: want a positive number of bytes", maxBytes)
			case timeout <= 0:
				return fmt.Errorf("--timeout %s: want a positive duration", timeout)
			case file != "" && len(args) == 0:
				raw, err = readJobFile(file, maxBytes)
			case file == "" && len(args) == 1 && args[0] != "":
				raw, err = fetchJobUpTo(cmd.Context(), server, args[0], maxBytes, timeout)
			case file != "" && len(args) > 0:
				return errors.New("give either a jobId or --file, not both")
			default:
				return errors.New("give the jobId to verify, or --file with a saved job document")
			}
			if err != nil {
				return err
			}
			var want string
			if len(args) == 1 {
				want = args[0]
			}
			job, hash, err := verifyJobDocument(raw, want)
			if err != nil {
				return err
			}
			if expect != "" {
				if !strings.EqualFold(hash, expect) {
					return fmt.Errorf("job %s: %w: its proof hash is %s, expected %s", job, proof.ErrMismatch, hash, quoted(expect))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "ok: job %s: its record hashes to the expected proof hash, and the document agrees with it\n", job)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: job %s: its record hashes to its proof hash, and the document agrees with it\n", job)
			return nil
		},
	}
	cmd.Flags().StringVar(&server, "server", localServer(), "gateway base URL (default: this machine, at PORT)")
	cmd.Flags().StringVar(&file, "file", "", "verify a saved job document instead of fetching one")
	cmd.Flags().Int64Var(&maxBytes, "max-bytes", defaultMaxJobDocument, "refuse a job document larger than this many bytes")
	cmd.Flags().DurationVar(&timeout, "timeout", defaultFetchTimeout, "give up on a fetch, body included, after this long")
	cmd.Flags().StringVar(&expect, "expect-hash", "", "the proofHash the call returned: the record must hash to it")
	return cmd
}

// defaultMaxJobDocument covers what a gateway with the default 1 MiB body limit serves: a
// record holds up to about 1 MiB of args and 1 MiB of output, which GET /exec/jobs/{jobId}
// may answer six times larger (encoding/json writes '<' as \u003c) or, from Postgres, with
// every number spelled out in full (5e-324 as 326 digits, about 47 times larger).
const defaultMaxJobDocument = 128 << 20

// defaultFetchTimeout bounds a fetch, body included: a server that never answers, or answers
// a byte at a time, must not hold verify.
const defaultFetchTimeout = 10 * time.Second

// pastLimit is how much to read to learn that a document is larger than limit bytes: one
// more, without overflowing when limit is the largest int64 (--max-bytes at its maximum).
func pastLimit(limit int64) int64 { return min(limit, math.MaxInt64-1) + 1 }

// readJobFile reads a saved job document of at most limit bytes: the path may name a pipe or
// a device as well as a file.
func readJobFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, pastLimit(limit)))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(raw)) > limit {
		return nil, fmt.Errorf("%s: job document larger than %d bytes (see --max-bytes)", path, limit)
	}
	return raw, nil
}

// fetchJob fetches a job document with the default limits.
func fetchJob(ctx context.Context, server, jobID string) ([]byte, error) {
	return fetchJobUpTo(ctx, server, jobID, defaultMaxJobDocument, defaultFetchTimeout)
}

// fetchJobUpTo fetches GET /exec/jobs/{jobId}, refusing an answer larger than limit bytes or
// slower than timeout.
func fetchJobUpTo(ctx context.Context, server, jobID string, limit int64, timeout time.Duration) ([]byte, error) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("--server %q: want an http(s) URL", server)
	}
	u = u.JoinPath("exec", "jobs", jobID)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fetchError(ctx, u, timeout, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, pastLimit(limit)))
	if err != nil {
		return nil, fetchError(ctx, u, timeout, err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%s: job document larger than %d bytes (see --max-bytes)", u, limit)
	}
	if resp.StatusCode != http.StatusOK {
		// The body is the server's to choose: show the start of it, quoted.
		excerpt := strings.TrimSpace(string(body[:min(len(body), 512)]))
		return nil, fmt.Errorf("%s answered %d %s: %q", u, resp.StatusCode, http.StatusText(resp.StatusCode), excerpt)
	}
	return body, nil
}

// fetchError names the timeout when it is why a fetch failed.
func fetchError(ctx context.Context, u *url.URL, timeout time.Duration, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%s: no complete answer within %s (see --timeout)", u, timeout)
	}
	return fmt.Errorf("fetching %s: %w", u, err)
}

// localServer is the gateway `serve` runs on this machine with the same environment: 127.0.0.1
// at PORT (5091 unless set), so that verify and call reach it without --server.
func localServer() string {
	port := os.Getenv("PORT")
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		port = "5091"
	}
	return "http://127.0.0.1:" + port
}
