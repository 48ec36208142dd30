package identity

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/secureexec/secureexec/internal/textcut"
)

// Limits on what we keep from EP's answer: it is untrusted input that ends up in the proof record.
const (
	maxViolations      = 16
	maxViolationBytes  = 256
	maxRiskScoreBytes  = 32
	proofHashHexLength = 64
)

// epRequest is the body of POST /ep/validate, mapped per ep.md §6 item 2. EP ignores unknown
// fields, so we send only these; payer and payment details stay with us.
type epRequest struct {
	AgentID    string      `json:"agent_id"`
	ProposalID string      `json:"proposal_id,omitempty"` // EP invents a UUID when absent
	Asset      string      `json:"asset,omitempty"`
	Direction  string      `json:"direction"`
	AmountUSD  json.Number `json:"amount_usd,omitempty"` // omitted for free calls: EP answers 400 to a non-positive amount
	Chain      string      `json:"chain"`
}

// newEPRequest maps a call onto EP's trading-shaped schema.
func newEPRequest(req Request, chain string) epRequest {
	dir := "execute"
	if req.DryRun {
		dir = "dry_run"
	}
	return epRequest{
		AgentID:    req.AgentID,
		ProposalID: req.JobID,
		Asset:      req.Tool,
		Direction:  dir,
		AmountUSD:  amountUSD(req.PriceAtomic),
		Chain:      chain,
	}
}

// amountUSD renders USDC atomic units (6 decimals, pegged 1:1 to USD) as an exact decimal JSON
// number without trailing zeros: 10000 -> 0.01. It returns "" for 0 so that the field is omitted.
func amountUSD(atomic uint64) json.Number {
	if atomic == 0 {
		return ""
	}
	whole := strconv.FormatUint(atomic/1_000_000, 10)
	frac := atomic % 1_000_000
	if frac == 0 {
		return json.Number(whole)
	}
	f := strings.TrimRight(fmt.Sprintf("%06d", frac), "0")
	return json.Number(whole + "." + f)
}

// epAnswer is what we keep of a well-formed EP response.
type epAnswer struct {
	Valid         bool
	Contradictory bool // a denial because the answer also said valid (never with Valid)
	Violations    []string
	RiskScore     string
	ProofHash     string
}

var errBadResponse = errors.New("malformed EP response")

// decodeEPResponse validates an EP response body, which must be one JSON object. The boolean
// "valid" (matched case-sensitively, unlike encoding/json's struct decoding) is the gate, and
// a "no" is never lost: any top-level "valid": false, or "valid": true beside violations, is a
// denial whatever else the object holds (Contradictory says the answer also said yes). An
// approval needs exactly one "valid", true, no "error" and no violations; anything else that
// is not a denial is an error wrapping errBadResponse. The other fields are decoded leniently
// and dropped when malformed, because EP's documents disagree about their types (ep.md §4
// item 6).
func decodeEPResponse(body []byte) (epAnswer, error) {
	var a epAnswer
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return a, fmt.Errorf("%w: %v", errBadResponse, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return a, fmt.Errorf("%w: not a JSON object", errBadResponse)
	}
	// Walk the top-level keys ourselves: a duplicated key (two "valid"s) is ambiguous, since
	// parsers disagree on which one wins, and must not be resolved in the attacker's favour.
	var valids, violations []json.RawMessage
	var risk, proof json.RawMessage
	var dupExtra, sawError bool
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return a, fmt.Errorf("%w: %v", errBadResponse, err)
		}
		key, ok := tok.(string)
		if !ok {
			return a, fmt.Errorf("%w: object key is not a string", errBadResponse)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return a, fmt.Errorf("%w: value of %q: %v", errBadResponse, key, err)
		}
		var dst *json.RawMessage
		switch key {
		case "valid":
			valids = append(valids, raw)
			continue
		case "violations":
			violations = append(violations, raw)
			continue
		case "risk_score":
			dst = &risk
		case "proof_hash":
			dst = &proof
		case "error":
			// EP's error shape ({"error": ...}); beside "valid": true, the answer
			// contradicts itself.
			sawError = true
			continue
		default:
			continue
		}
		if *dst != nil {
			dupExtra = true
		}
		*dst = raw
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return a, fmt.Errorf("%w: %v", errBadResponse, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return a, fmt.Errorf("%w: trailing data after the object", errBadResponse)
	}

	var yes, no bool
	for _, v := range valids {
		switch string(v) {
		case "true":
			yes = true
		case "false":
			no = true
		}
	}
	violated := false
	for _, v := range violations {
		if !noViolations(v) {
			violated = true
		}
	}
	if no || (yes && violated) {
		// A denial, though the answer may be odd otherwise: what it says about the call is
		// "no", and fail-open must not turn that into a yes. Ambiguous extras are dropped.
		a.Contradictory = yes
		for _, v := range violations {
			a.Violations = append(a.Violations, decodeViolations(v)...)
		}
		if len(a.Violations) > maxViolations {
			a.Violations = a.Violations[:maxViolations]
		}
		if !dupExtra {
			a.RiskScore = decodeRiskScore(risk)
			a.ProofHash = normProofHash(proof)
		}
		return a, nil
	}
	switch {
	case len(valids) == 0:
		return a, fmt.Errorf("%w: no \"valid\" field", errBadResponse)
	case len(valids) > 1:
		return a, fmt.Errorf("%w: duplicate key \"valid\"", errBadResponse)
	case !yes:
		return a, fmt.Errorf("%w: \"valid\" is not a boolean", errBadResponse)
	case sawError:
		return a, fmt.Errorf("%w: an error answer", errBadResponse)
	case dupExtra || len(violations) > 1:
		return a, fmt.Errorf("%w: duplicate key", errBadResponse)
	}
	a.Valid = true
	a.RiskScore = decodeRiskScore(risk)
	a.ProofHash = normProofHash(proof)
	return a, nil
}

// noViolations reports whether a "violations" value says there are none: absent, null or [].
func noViolations(raw json.RawMessage) bool {
	if len(raw) == 0 || string(raw) == "null" {
		return true
	}
	var items []json.RawMessage
	return json.Unmarshal(raw, &items) == nil && len(items) == 0
}

// decodeViolations keeps the string elements of a JSON array, bounded in count and size, with
// invalid UTF-8 and U+0000 replaced by U+FFFD.
func decodeViolations(raw json.RawMessage) []string {
	var items []json.RawMessage
	if len(raw) == 0 || json.Unmarshal(raw, &items) != nil {
		return nil
	}
	var out []string
	for _, it := range items {
		var s string
		if json.Unmarshal(it, &s) != nil {
			continue
		}
		// U+0000 would make the record unstorable (Postgres jsonb refuses \u0000): the
		// audit writer would dead-letter the denial and its seal would turn into a failure.
		s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
		s = textcut.Prefix(s, maxViolationBytes)
		if s == "" {
			continue
		}
		out = append(out, s)
		if len(out) == maxViolations {
			break
		}
	}
	return out
}

// decodeRiskScore accepts a short token ("LOW") or a JSON number (0.42, 73) and returns it as
// text; any other shape is dropped.
func decodeRiskScore(raw json.RawMessage) string {
	if len(raw) == 0 || len(raw) > maxRiskScoreBytes+2 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s == "" || len(s) > maxRiskScoreBytes {
			return ""
		}
		for _, r := range s {
			if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
				return ""
			}
		}
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil && len(n) <= maxRiskScoreBytes {
		if _, err := strconv.ParseFloat(n.String(), 64); err == nil {
			return n.String()
		}
	}
	return ""
}

// normProofHash returns EP's proof_hash as 64 lowercase hex digits without 0x, or "" when it is
// anything else: /ep/swarm/validate prefixes 0x, /ep/validate does not.
func normProofHash(raw json.RawMessage) string {
	var s string
	if len(raw) == 0 || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	if len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		s = s[2:]
	}
	if len(s) != proofHashHexLength {
		return ""
	}
	s = strings.ToLower(s)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return ""
		}
	}
	return s
}
