package identity

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// AnyAgent is the ToolAllow key whose list applies to every agent without its own entry.
const AnyAgent = "*"

// PolicyConfig is the gateway's own access policy, read once at start-up. Agent ids match
// ignoring case, surrounding space, compatibility forms and invisible characters (normAgent),
// so "Evil", "ｅｖｉｌ" or "evil" with a zero-width space cannot slip past a deny-list entry
// "evil"; tool names match exactly, as the tool registry spells them.
type PolicyConfig struct {
	// DenyAgents are refused outright.
	DenyAgents []string `json:"denyAgents,omitempty"`
	// ToolAllow maps an agent id (or AnyAgent) to the only tools it may call. An agent with
	// neither its own entry nor an AnyAgent entry may call any tool the registry offers.
	ToolAllow map[string][]string `json:"toolAllow,omitempty"`
	// AllowReal enables real (non-dry-run) execution at all; off by default, as in v1.
	AllowReal bool `json:"allowReal,omitempty"`
	// RealAgents, when non-empty, are the only agents allowed real execution. Needs AllowReal.
	RealAgents []string `json:"realAgents,omitempty"`
	// MaxPriceAtomic refuses calls priced above it (USDC atomic units); 0 means no cap.
	MaxPriceAtomic uint64 `json:"maxPriceAtomic,omitempty"`
}

// Policy is a validated PolicyConfig. It is immutable and safe for concurrent use.
type Policy struct {
	deny       map[string]bool
	toolAllow  map[string]map[string]bool // normalised agent id -> allowed tools
	allowReal  bool
	realAgents map[string]bool // nil: every agent may run for real when allowReal
	maxPrice   uint64
}

// NewPolicy validates cfg; an error names the offending setting.
func NewPolicy(cfg PolicyConfig) (*Policy, error) {
	p := &Policy{allowReal: cfg.AllowReal, maxPrice: cfg.MaxPriceAtomic}
	var err error
	if p.deny, err = agentSet("policy.denyAgents", cfg.DenyAgents); err != nil {
		return nil, err
	}
	if len(cfg.RealAgents) > 0 {
		if !cfg.AllowReal {
			return nil, errors.New("policy.realAgents is set but policy.allowReal is false")
		}
		if p.realAgents, err = agentSet("policy.realAgents", cfg.RealAgents); err != nil {
			return nil, err
		}
	}
	p.toolAllow = make(map[string]map[string]bool, len(cfg.ToolAllow))
	for agent, tools := range cfg.ToolAllow {
		key := normAgent(agent)
		if key == "" {
			return nil, errors.New("policy.toolAllow has an empty agent id")
		}
		if _, dup := p.toolAllow[key]; dup {
			return nil, fmt.Errorf("policy.toolAllow lists agent %q twice (ids are case-insensitive)", agent)
		}
		set := make(map[string]bool, len(tools))
		for _, t := range tools {
			if strings.TrimSpace(t) != t || t == "" {
				return nil, fmt.Errorf("policy.toolAllow[%q] has an empty or space-padded tool name %q", agent, t)
			}
			set[t] = true
		}
		p.toolAllow[key] = set
	}
	return p, nil
}

func agentSet(setting string, ids []string) (map[string]bool, error) {
	set := make(map[string]bool, len(ids))
	for _, id := range ids {
		key := normAgent(id)
		if key == "" {
			return nil, fmt.Errorf("%s has an empty agent id", setting)
		}
		set[key] = true
	}
	return set, nil
}

// normAgent is the form agent ids are compared in: compatibility characters folded (NFKC:
// a full-width "ｅｖｉｌ" is "evil"), invisible ones dropped (a zero-width space, a soft
// hyphen), case folded, no surrounding space. Look-alikes of other scripts stay distinct: a
// list of self-asserted ids is advisory, as any agent can name itself anything else.
func normAgent(id string) string {
	if isASCII(id) { // ASCII is its own NFKC form and has no invisible characters
		return strings.ToLower(strings.TrimSpace(id))
	}
	id = strings.TrimSpace(strings.Map(dropInvisible, norm.NFKC.String(id)))
	// Lower case alone leaves letters whose upper case is another's: a dotless "ı" and a
	// final "ς" upper-case to "I" and "Σ", and would stay apart from "i" and "σ".
	return strings.ToLower(strings.ToUpper(id))
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// dropInvisible maps the characters that display as nothing to nothing.
func dropInvisible(r rune) rune {
	if unicode.In(r, unicode.Cf, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point) {
		return -1
	}
	return r
}

// Evaluate checks req against the policy. It returns every violation found, in a fixed order,
// and the reason code of the first; ok is true when there is none.
func (p *Policy) Evaluate(req Request) (ok bool, reason string, violations []string) {
	agent := normAgent(req.AgentID)
	add := func(code, msg string) {
		if reason == "" {
			reason = code
		}
		violations = append(violations, msg)
	}
	if p.deny[agent] {
		add(ReasonAgentDenied, fmt.Sprintf("agent %q is deny-listed", req.AgentID))
	}
	allowed, listed := p.toolAllow[agent]
	if !listed {
		allowed, listed = p.toolAllow[AnyAgent]
	}
	if listed && !allowed[req.Tool] {
		add(ReasonToolNotAllowed, fmt.Sprintf("tool %q is not allowed for agent %q", req.Tool, req.AgentID))
	}
	if !req.DryRun {
		switch {
		case !p.allowReal:
			add(ReasonRealDisabled, "real execution is disabled; use dry-run")
		case p.realAgents != nil && !p.realAgents[agent]:
			add(ReasonRealNotAllowed, fmt.Sprintf("agent %q may not run tools for real", req.AgentID))
		}
	}
	if p.maxPrice > 0 && req.PriceAtomic > p.maxPrice {
		add(ReasonPriceOverLimit, fmt.Sprintf("price %d exceeds the per-call limit %d (USDC atomic units)", req.PriceAtomic, p.maxPrice))
	}
	return reason == "", reason, violations
}
