package client

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/ethereum/go-ethereum/common"
)

// Call is one tool call. The SDK keeps its own copy of the wire shapes so that an agent does
// not link the gateway's server packages.
type Call struct {
	AgentID  string      // the caller's agent id; self-asserted, the gateway resolves the payer's
	Tool     string      // tool name, e.g. "json_parse"
	Args     any         // the tool's args: a json.RawMessage, or any value encoding to a JSON object; nil means {}
	DryRun   *bool       // nil: the gateway's default (dry run); false runs the tool for real
	TimeoutS float64     // tool timeout in seconds; 0 means the gateway's default
	Context  any         // optional caller context recorded with the call (json.RawMessage or a value)
	Header   http.Header // extra request headers, e.g. another rail's credential; a payment header here means the client never pays
}

// wireCall is the body of POST /exec/tool and /exec/simulate.
type wireCall struct {
	AgentID string          `json:"agentId,omitempty"`
	Tool    wireTool        `json:"tool"`
	DryRun  *bool           `json:"dryRun,omitempty"`
	Context json.RawMessage `json:"context,omitempty"`
}

type wireTool struct {
	Name     string          `json:"name"`
	Args     json.RawMessage `json:"args"`
	TimeoutS *float64        `json:"timeout_s,omitempty"`
}

// Result is the gateway's answer to a call that ran (or was simulated), plus what the client
// paid for it.
type Result struct {
	JobID           string     `json:"jobId"`
	Tool            string     `json:"tool"`
	DryRun          bool       `json:"dryRun"`
	Status          string     `json:"status"` // completed, failed, timeout
	Result          ToolResult `json:"result"`
	IAMApproved     bool       `json:"iamApproved"`
	IAM             IAMOutcome `json:"iam"`
	ProofHash       string     `json:"proofHash"`
	PaymentProtocol string     `json:"paymentProtocol"` // x402, internal, none, ...
	LatencyMs       int64      `json:"latencyMs"`
	Timestamp       string     `json:"timestamp"`
	SchemaVersion   string     `json:"schemaVersion"`

	Raw        json.RawMessage `json:"-"` // the response body as received
	RequestID  string          `json:"-"` // X-Request-ID of the call (both attempts share it)
	Payment    *Payment        `json:"-"` // what the client signed; nil when it did not pay
	Settlement *Settlement     `json:"-"` // the gateway's PAYMENT-RESPONSE; nil when it sent none
}

// ToolResult is what the tool produced.
type ToolResult struct {
	Output    json.RawMessage `json:"output"`
	ExitCode  int             `json:"exitCode"`
	Simulated bool            `json:"simulated"`
	Error     *ToolError      `json:"error,omitempty"`
}

// ToolError is a failure inside the tool: the call completed, unsuccessfully.
type ToolError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// IAMOutcome is the gateway's authorisation decision for the call.
type IAMOutcome struct {
	Approved    bool     `json:"approved"`
	Decision    string   `json:"decision"`
	Source      string   `json:"source"`
	Reason      string   `json:"reason"`
	Violations  []string `json:"violations,omitempty"`
	RiskScore   string   `json:"riskScore,omitempty"`
	EPProofHash string   `json:"epProofHash,omitempty"`
}

// Payment is an x402 payment the client signed and sent.
type Payment struct {
	X402Version int            // 2, or 1 for a v1 offer
	Network     string         // as offered: "eip155:8453", or the v1 name
	ChainID     uint64         // the EIP-712 chain id signed for
	Asset       common.Address // the token
	PayTo       common.Address
	Payer       common.Address
	Amount      uint64 // atomic units
	Nonce       common.Hash
	ValidBefore int64  // unix seconds
	PaymentID   string // the payment-identifier id, "" when the server declared none
}

// Settlement states.
const (
	SettlementSettled = "settled" // the transfer is on chain
	SettlementPending = "pending" // submitted, not yet final: not a failure
	SettlementFailed  = "failed"
	SettlementUnknown = "unknown" // the PAYMENT-RESPONSE header did not decode
)

// Settlement is the gateway's report of settling the payment (PAYMENT-RESPONSE).
type Settlement struct {
	Status       string // one of the Settlement* states
	Success      bool
	Transaction  string // transaction hash; may be set while pending
	Network      string
	Payer        string
	ErrorReason  string // e.g. settlement_pending
	ErrorMessage string
}

// Pending reports a settlement submitted but not yet final.
func (s *Settlement) Pending() bool { return s != nil && s.Status == SettlementPending }

// Tools is GET /exec/tools: what may run, what never will, and what it costs.
type Tools struct {
	Allowed       []ToolInfo    `json:"allowed"`
	Blocked       []BlockedTool `json:"blocked"`
	Prices        []ToolPrice   `json:"prices"`
	SchemaVersion string        `json:"schemaVersion"`
}

// ToolInfo describes one allowed tool.
type ToolInfo struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	DryRunOnly  bool            `json:"dryRunOnly"`
	ArgsSchema  json.RawMessage `json:"argsSchema"`
}

// BlockedTool is a tool the gateway refuses, and why.
type BlockedTool struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// ToolPrice is the price of one mode.
type ToolPrice struct {
	Mode         string `json:"mode"`
	Endpoint     string `json:"endpoint"`
	Amount       string `json:"amount"`       // decimal, e.g. "0.01"
	AmountAtomic string `json:"amountAtomic"` // atomic units
	Currency     string `json:"currency"`
}

// Health is GET /health.
type Health struct {
	Status  string `json:"status"`
	Service string `json:"service"`
	Version string `json:"version"`
}

// Job is GET /exec/jobs/{id}: the stored audit entry, with the record its proof hash commits to.
type Job struct {
	JobID           string          `json:"jobId"`
	Timestamp       time.Time       `json:"timestamp"`
	CallerAgentID   string          `json:"callerAgentId"`
	ToolName        string          `json:"toolName"`
	DryRun          bool            `json:"dryRun"`
	Status          string          `json:"status"`
	IAMApproved     bool            `json:"iamApproved"`
	ProofHash       string          `json:"proofHash"`
	LatencyMs       int             `json:"latencyMs"`
	PaymentProtocol string          `json:"paymentProtocol"`
	SchemaVersion   string          `json:"schemaVersion"`
	Record          json.RawMessage `json:"record"`
}
