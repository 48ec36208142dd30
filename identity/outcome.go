package identity

// Request is what the IAM stage needs to know about one call. The gateway fills it from the
// priced, payment-verified request; nothing here is trusted beyond what earlier stages proved.
type Request struct {
	JobID       string // our job id; sent to EP as proposal_id
	AgentID     string // self-asserted agent id, replaced by the resolved id when a Resolver is set
	Payer       string // payer/signer address proven by the payment rail; "" when none (internal, free)
	Tool        string // tool name
	DryRun      bool   // true for simulation, false for real execution
	PriceAtomic uint64 // price of this call in USDC atomic units (6 decimals)
	Internal    bool   // set by the gateway only for an authenticated internal agent
}

// Decision values of an Outcome.
const (
	DecisionApproved                = "approved"
	DecisionDenied                  = "denied"
	DecisionUnavailableFailedOpen   = "unavailable_failed_open"
	DecisionUnavailableFailedClosed = "unavailable_failed_closed"
	DecisionSkipped                 = "skipped"
)

// Source values of an Outcome: which check produced the decision.
const (
	SourcePolicy   = "policy"
	SourceIdentity = "identity"
	SourceEP       = "ep"
)

// AnonymousAgentID stands for a call without an agent id: EP rejects an empty agent_id, and a
// policy can deny-list or allow-list anonymous callers by this name.
const AnonymousAgentID = "anonymous"

// Outcome is the IAM decision for one call. It is part of the proof record, so it holds no
// timing data and is a pure function of the request, the configuration and EP's answer.
type Outcome struct {
	Approved    bool     `json:"approved"`              // may the call proceed
	Decision    string   `json:"decision"`              // one of the Decision* values
	Source      string   `json:"source"`                // one of the Source* values
	Reason      string   `json:"reason"`                // snake_case, one of the Reason* values
	Violations  []string `json:"violations,omitempty"`  // why it was denied (policy or EP's words)
	RiskScore   string   `json:"riskScore,omitempty"`   // EP's risk_score as text, e.g. "LOW" or "0.42"
	EPProofHash string   `json:"epProofHash,omitempty"` // EP's proof_hash: 64 lowercase hex, no 0x; a foreign reference only
}
