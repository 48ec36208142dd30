package identity

import (
	"context"
	"log/slog"
	"strings"
)

// Resolver binds a caller to an ERC-8004 agent: given the self-asserted agent id and the payer
// address a payment rail proved, it returns the canonical agent id
// ("eip155:<chainId>:<registry>:<agentId>") or an error when the two do not belong together.
// The on-chain implementation arrives with the ERC-8004 issue (shared/protocols/erc8004.md §6).
type Resolver interface {
	Resolve(ctx context.Context, agentID, payer string) (string, error)
}

// ResolverFunc adapts a function to Resolver.
type ResolverFunc func(ctx context.Context, agentID, payer string) (string, error)

// Resolve calls f.
func (f ResolverFunc) Resolve(ctx context.Context, agentID, payer string) (string, error) {
	return f(ctx, agentID, payer)
}

// Config is the IAM stage's configuration, read once at the edge by cmd/secureexec.
type Config struct {
	Policy PolicyConfig
	EP     EPConfig // EP.URL == "" turns EP off: local policy alone decides
	// InternalSkipsEP lets authenticated internal agents (Request.Internal) bypass EP, as the
	// seed's internal seeding agents do; local policy still applies to them.
	InternalSkipsEP bool
	Logger          *slog.Logger // nil: slog.Default(); also EP's logger unless EP.Logger is set
}

// Option adjusts an IAM at construction.
type Option func(*IAM)

// WithResolver binds callers to ERC-8004 agents before any other check.
func WithResolver(r Resolver) Option { return func(g *IAM) { g.resolver = r } }

// IAM is the gateway's IAM stage. It is safe for concurrent use.
type IAM struct {
	policy          *Policy
	ep              *EPClient // nil when EP is off
	resolver        Resolver  // nil until ERC-8004 resolution is configured
	internalSkipsEP bool
	log             *slog.Logger
}

// New builds the IAM stage from cfg; an error names the offending setting.
func New(cfg Config, opts ...Option) (*IAM, error) {
	p, err := NewPolicy(cfg.Policy)
	if err != nil {
		return nil, err
	}
	g := &IAM{policy: p, internalSkipsEP: cfg.InternalSkipsEP, log: cfg.Logger}
	if g.log == nil {
		g.log = slog.Default()
	}
	if cfg.EP.Logger == nil {
		cfg.EP.Logger = g.log
	}
	if strings.TrimSpace(cfg.EP.URL) != "" {
		if g.ep, err = NewEPClient(cfg.EP); err != nil {
			return nil, err
		}
	}
	for _, o := range opts {
		o(g)
	}
	return g, nil
}

// Close releases the EP client's idle connections.
func (g *IAM) Close() error {
	if g.ep != nil {
		return g.ep.Close()
	}
	return nil
}

// Decide runs identity resolution, local policy and EP, in that order, and returns the one
// Outcome for the call. It never fails: every failure is an Outcome with a reason.
func (g *IAM) Decide(ctx context.Context, req Request) Outcome {
	if strings.TrimSpace(req.AgentID) == "" {
		req.AgentID = AnonymousAgentID
	}
	if g.resolver != nil {
		id, err := g.resolver.Resolve(ctx, req.AgentID, req.Payer)
		if err != nil || strings.TrimSpace(id) == "" {
			// A self-asserted agent id proves nothing; without a binding we do not guess.
			g.log.Warn("iam denied call: identity unresolved", "job_id", req.JobID,
				"agent_id", req.AgentID, "payer", req.Payer, "err", err)
			return Outcome{Decision: DecisionDenied, Source: SourceIdentity, Reason: ReasonIdentityUnresolved}
		}
		req.AgentID = id
	}
	if ok, reason, violations := g.policy.Evaluate(req); !ok {
		g.log.Info("iam denied call by policy", "job_id", req.JobID, "agent_id", req.AgentID,
			"tool", req.Tool, "reason", reason)
		return Outcome{Decision: DecisionDenied, Source: SourcePolicy, Reason: reason, Violations: violations}
	}
	switch {
	case req.Internal && g.internalSkipsEP:
		return Outcome{Approved: true, Decision: DecisionSkipped, Source: SourcePolicy, Reason: ReasonInternalAgent}
	case g.ep == nil:
		return Outcome{Approved: true, Decision: DecisionApproved, Source: SourcePolicy, Reason: ReasonEPDisabled}
	}
	return g.ep.Validate(ctx, req)
}
