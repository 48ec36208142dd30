package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/secureexec/secureexec/exec"
	"github.com/secureexec/secureexec/gateway"
	"github.com/secureexec/secureexec/identity"
	"github.com/secureexec/secureexec/internal/procs"
	"github.com/secureexec/secureexec/store"
)

func serveCmd(load func() (Config, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Serve the gateway (the default command)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			return serve(cmd.Context(), cfg)
		},
	}
}

func newLogger(cfg Config) (*slog.Logger, io.Closer, error) {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level))
	var out io.Writer = os.Stderr
	var closer io.Closer = io.NopCloser(nil)
	if cfg.LogFile != "" {
		f, err := os.OpenFile(cfg.LogFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
		if err != nil {
			return nil, nil, fmt.Errorf("LOG_FILE: %w", err)
		}
		out, closer = io.MultiWriter(os.Stderr, f), f
	}
	return slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: level})), closer, nil
}

// openAudit returns the audit backend: Postgres when DATABASE_URL is set (reachable and
// migrated at start, or serve refuses to start), otherwise the embedded file database in the
// data directory.
func openAudit(ctx context.Context, cfg Config, log *slog.Logger) (store.Backend, string, error) {
	if cfg.DatabaseURL == "" {
		path := filepath.Join(cfg.DataDir, "audit.db")
		b, err := store.OpenEmbedded(path)
		if err != nil {
			return nil, "", fmt.Errorf("embedded audit database %s: %w", path, err)
		}
		return b, "embedded:" + path, nil
	}
	pg, err := store.OpenPostgres(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, "", fmt.Errorf("DATABASE_URL: %w", err)
	}
	mctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	applied, err := store.Migrate(mctx, pg.Pool())
	if err != nil {
		// Postgres answered the ping: a migration that fails now (no right to create, a
		// schema that is missing, a failed statement) would fail every write the same way,
		// and spooling would only hide it until the spool filled the disk.
		pg.Close()
		return nil, "", fmt.Errorf("DATABASE_URL: migrations not applied: %w", err)
	}
	if len(applied) > 0 {
		log.Info("migrations applied", "migrations", applied)
	}
	return pg, "postgres", nil
}

func buildTools(cfg Config) []exec.Tool {
	return []exec.Tool{
		exec.NewHTTPGet(exec.HTTPGetConfig{AllowPrefixes: cfg.HTTPGetAllow, MaxBodyBytes: 512 << 10}), // base64 of 512 KiB fits the 1 MiB output cap
		exec.NewJSONParse(),
		exec.NewSchemaValidate(),
		exec.NewMathCompute(),
		exec.NewStringTransform(),
		exec.NewDataFilter(),
		exec.NewMockAPICall(),
		exec.NewHashGenerate(),
		exec.NewTimestampParse(),
		exec.NewRegexMatch(),
	}
}

func serve(ctx context.Context, cfg Config) error {
	log, logCloser, err := newLogger(cfg)
	if err != nil {
		return err
	}
	defer logCloser.Close()
	slog.SetDefault(log)
	uuid.EnableRandPool() // job ids at tens of thousands per second
	if os.Getenv("GOGC") == "" {
		// Requests allocate short-lived JSON; collecting at 4x the live heap instead of 2x
		// costs little memory and about a sixth of a simulated call's CPU (docs/PERFORMANCE.md).
		debug.SetGCPercent(400)
	}
	procs.Raise()

	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("SECUREEXEC_DATA_DIR: %w", err)
	}
	backend, where, err := openAudit(ctx, cfg, log)
	if err != nil {
		return err
	}
	writer, err := store.NewWriter(backend, store.WriterOptions{SpoolPath: filepath.Join(cfg.DataDir, "audit-spool"), Logger: log})
	if err != nil {
		backend.Close()
		return err
	}
	defer func() {
		// Drain: everything answered is written to the backend or the spool before exit.
		if err := writer.Close(); err != nil {
			log.Error("closing the audit writer", "err", err)
		}
		if err := backend.Close(); err != nil {
			log.Error("closing the audit backend", "err", err)
		}
	}()

	reg, err := exec.NewRegistry(buildTools(cfg)...)
	if err != nil {
		return err
	}
	runner := exec.NewRunner(reg, exec.Limits{
		MaxTimeout: cfg.ToolMaxTimeout, MaxConcurrent: cfg.ToolMaxConcurrent, MaxFreeConcurrent: cfg.ToolMaxFree,
		MaxOutputBytes: cfg.ToolMaxOutput,
	}, log)

	failMode := identity.FailOpen
	if cfg.EPFailMode == "closed" {
		failMode = identity.FailClosed
	}
	iam, err := identity.New(identity.Config{
		Policy: identity.PolicyConfig{DenyAgents: cfg.PolicyDenyAgents, AllowReal: cfg.PolicyAllowReal, RealAgents: cfg.PolicyRealAgents},
		EP:     identity.EPConfig{URL: cfg.EPGuardURL, Mode: failMode, Timeout: cfg.EPTimeout, Logger: log},
	})
	if err != nil {
		return err
	}
	defer iam.Close()

	var pool *pgxpool.Pool
	if pg, ok := backend.(*store.Postgres); ok {
		pool = pg.Pool()
	}
	pays, err := buildPayments(ctx, cfg, pool, log)
	if err != nil {
		return err
	}
	defer pays.Close()

	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gcfg := gateway.DefaultConfig
	gcfg.MaxBodyBytes = cfg.MaxBodyBytes
	gcfg.Payment.InternalAPIKey = cfg.InternalAPIKey
	gcfg.Payment.InternalAgentID = cfg.InternalAgentID
	gcfg.Payment.PayTo = pays.payTo
	if pays.network != "" {
		gcfg.Payment.Network = pays.network
	}
	if len(pays.rails) == 0 {
		log.Warn("no payment rail is on (X402_NETWORK=off and no STRIPE_SECRET_KEY): /exec/tool serves only internal callers, and its 402 offers no way to pay")
	}
	var authz gateway.Authorizer = iam
	if pays.flags != nil {
		// Payers whose MPP payment was refunded or disputed outside the gateway are denied.
		authz = gateway.DenyFlagged(iam, pays.flags, log)
	}
	srv, err := gateway.New(gcfg, gateway.Deps{
		Runner: runner, IAM: authz, Audit: writer, Rails: pays.rails, Payments: pays.reader, Idempotent: pays.idem,
		StripeWebhook: pays.webhook, Logger: log, Registry: promReg, Collectors: append([]prometheus.Collector{writer.Collector()}, pays.collectors...),
	})
	if err != nil {
		return err
	}
	defer srv.Close() // after the HTTP server's shutdown: stops storing held replay responses

	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	hs := newHTTPServer(cfg, srv.Handler(), log)
	log.Info("secureexec serving", "addr", "http://"+ln.Addr().String(), "audit", where,
		"ep", orNone(loggableURL(cfg.EPGuardURL)), "internal_key", cfg.InternalAPIKey != "", "tools", len(reg.List()))

	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing requests in flight, then draining the audit queue", "grace", cfg.shutdownGrace().String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownGrace())
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		_ = hs.Close()
		return fmt.Errorf("shutdown: requests still in flight after %s, cut: %w", cfg.shutdownGrace(), err)
	}
	return nil
}

// requestReadTimeout bounds reading a request, headers and body.
const requestReadTimeout = 30 * time.Second

// newHTTPServer is the gateway's http.Server. A response may be written as late as the longest
// call the settings allow after its request was read (WriteTimeout runs from the end of the
// headers): a call that ran, was sealed and maybe paid for must get its answer, not a cut
// connection.
func newHTTPServer(cfg Config, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       requestReadTimeout,
		WriteTimeout:      requestReadTimeout + cfg.longestCall(),
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// loggableURL is a configured URL as the log may show it: without credentials, query or
// fragment, where keys go (the path, which some providers also put a key in, stays: it names
// the endpoint).
func loggableURL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(not a URL)"
	}
	hidden := u.User != nil || u.RawQuery != "" || u.Fragment != ""
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	if hidden {
		return u.String() + " (credentials or query not shown)"
	}
	return u.String()
}

func orNone(s string) string {
	if s == "" {
		return "off"
	}
	return s
}

func migrateCmd(load func() (Config, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply the SQL migrations to DATABASE_URL",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			if cfg.DatabaseURL == "" {
				return errors.New("DATABASE_URL is not set (the embedded database needs no migrations)")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			pg, err := store.OpenPostgres(ctx, cfg.DatabaseURL)
			if err != nil {
				return err
			}
			defer pg.Close()
			applied, err := store.Migrate(ctx, pg.Pool())
			if err != nil {
				return err
			}
			if len(applied) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "migrations: up to date")
			}
			for _, m := range applied {
				fmt.Fprintln(cmd.OutOrStdout(), "migrations: applied", m)
			}
			return nil
		},
	}
}
