package gateway

import (
	"encoding"
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/secureexec/secureexec/exec"
	"github.com/secureexec/secureexec/identity"
	"github.com/secureexec/secureexec/internal/jsonstr"
	"github.com/secureexec/secureexec/proof"
)

// SchemaVersion is the version of the record and response shapes.
const SchemaVersion = "v1"

// timestampLayout is RFC 3339 in UTC with milliseconds, as records and responses show time.
const timestampLayout = "2006-01-02T15:04:05.000Z07:00"

// Record is everything a call decided and produced. Its RFC 8785 canonical JSON is what
// the proof hash commits to; GET /exec/jobs/{jobId} returns it in that form (JSON's escaping
// of <, > and & aside) so that anyone can recompute the hash.
type Record struct {
	SchemaVersion string           `json:"schemaVersion"`
	JobID         string           `json:"jobId"`
	Timestamp     string           `json:"timestamp"`
	Endpoint      string           `json:"endpoint"`
	AgentID       string           `json:"agentId"`
	Tool          RecordTool       `json:"tool"`
	DryRun        bool             `json:"dryRun"`
	Context       json.RawMessage  `json:"context,omitempty"`
	Status        string           `json:"status"`
	Result        exec.Result      `json:"result"`
	IAM           identity.Outcome `json:"iam"`
	Payment       PaymentRef       `json:"payment"`
}

// RecordTool is the call as the sandbox ran it: the validated args and the effective timeout.
type RecordTool struct {
	Name      string          `json:"name"`
	Args      json.RawMessage `json:"args"`
	TimeoutMs int64           `json:"timeoutMs"`
}

// PaymentRef says how the call was paid for. Amount is in atomic units, as a string.
type PaymentRef struct {
	Protocol  string `json:"protocol"`
	Amount    string `json:"amount"`
	Currency  string `json:"currency"`
	Payer     string `json:"payer,omitempty"`
	Reference string `json:"reference,omitempty"`
}

// Statuses of a record besides the runner's completed/failed/timeout.
const statusDenied = "denied"

// seal canonicalises and hashes the record. A result that cannot be stored (U+0000, which the
// audit log's jsonb refuses; hasNULEscape tells its \u0000 from an escaped backslash followed
// by "u0000") or cannot be canonicalised (a number JSON cannot represent as a double) is
// replaced by an error result, so that every call gets a proof hash and an audit row.
func seal(rec *Record) (canonical []byte, hash string) {
	c, err := canonicalRecord(rec)
	if err == nil && !hasNULEscape(c) {
		return c, proof.HashCanonical(c)
	}
	code := "output_not_storable"
	if err != nil {
		code = "output_not_canonicalizable"
	}
	rec.Status = exec.StatusFailed
	rec.Result = exec.Result{Output: json.RawMessage("null"), ExitCode: exec.ExitFailed, Simulated: rec.Result.Simulated,
		Error: exec.Failf(code, "the tool's output cannot be sealed in a verifiable record")}
	c, err = canonicalRecord(rec)
	if err != nil {
		// Everything left in the record came from validated input and our own types.
		panic("sealing a sanitised record: " + err.Error())
	}
	return c, proof.HashCanonical(c)
}

// canonicalRecord returns the canonical JSON of rec: byte for byte what proof.Seal makes of
// it, without marshalling the whole record and parsing it back to sort its members. Anything
// the direct encoding does not cover takes proof.Seal itself.
func canonicalRecord(rec *Record) ([]byte, error) {
	if recordShapeKnown {
		size := 640 + len(rec.Context) + len(rec.Tool.Args) + len(rec.Result.Output)
		if c, ok := appendCanonicalRecord(make([]byte, 0, size), rec); ok {
			return c, nil
		}
	}
	c, _, err := proof.Seal(rec)
	return c, err
}

// appendCanonicalRecord appends the canonical JSON of rec to b: members in RFC 8785 order
// (all names are ASCII, so byte order is UTF-16 order), omitempty fields left out as
// encoding/json leaves them out, and each raw JSON value canonicalised on its own. It
// reports false for what it cannot encode exactly as proof.Seal would (a raw value that
// does not canonicalise, nesting near the canonicaliser's depth limit, an integer a double
// cannot hold), and the caller falls back.
func appendCanonicalRecord(b []byte, rec *Record) ([]byte, bool) {
	ok := true
	raw := func(v json.RawMessage) {
		if !ok {
			return
		}
		if v == nil {
			b = append(b, "null"...)
			return
		}
		// The record nests raw values a few levels deep; the whole-record parse counts those.
		if len(v) >= 2*rawDepthMargin && jsonDepth(v) > rawDepthMargin {
			ok = false
			return
		}
		var err error
		if b, err = proof.AppendCanonical(b, v); err != nil {
			ok = false
		}
	}
	integer := func(n int64) {
		// Canonical numbers are doubles; below 10^15 an integer prints the same either way.
		if n <= -1e15 || n >= 1e15 {
			ok = false
			return
		}
		b = strconv.AppendInt(b, n, 10)
	}
	str := proof.AppendString

	b = append(b, `{"agentId":`...)
	b = str(b, rec.AgentID)
	if len(rec.Context) > 0 {
		b = append(b, `,"context":`...)
		raw(rec.Context)
	}
	b = append(b, `,"dryRun":`...)
	b = strconv.AppendBool(b, rec.DryRun)
	b = append(b, `,"endpoint":`...)
	b = str(b, rec.Endpoint)

	iam := &rec.IAM
	b = append(b, `,"iam":{"approved":`...)
	b = strconv.AppendBool(b, iam.Approved)
	b = append(b, `,"decision":`...)
	b = str(b, iam.Decision)
	if iam.EPProofHash != "" {
		b = append(b, `,"epProofHash":`...)
		b = str(b, iam.EPProofHash)
	}
	b = append(b, `,"reason":`...)
	b = str(b, iam.Reason)
	if iam.RiskScore != "" {
		b = append(b, `,"riskScore":`...)
		b = str(b, iam.RiskScore)
	}
	b = append(b, `,"source":`...)
	b = str(b, iam.Source)
	if len(iam.Violations) > 0 {
		b = append(b, `,"violations":[`...)
		for i, v := range iam.Violations {
			if i > 0 {
				b = append(b, ',')
			}
			b = str(b, v)
		}
		b = append(b, ']')
	}
	b = append(b, `},"jobId":`...)
	b = str(b, rec.JobID)

	pay := &rec.Payment
	b = append(b, `,"payment":{"amount":`...)
	b = str(b, pay.Amount)
	b = append(b, `,"currency":`...)
	b = str(b, pay.Currency)
	if pay.Payer != "" {
		b = append(b, `,"payer":`...)
		b = str(b, pay.Payer)
	}
	b = append(b, `,"protocol":`...)
	b = str(b, pay.Protocol)
	if pay.Reference != "" {
		b = append(b, `,"reference":`...)
		b = str(b, pay.Reference)
	}

	res := &rec.Result
	b = append(b, `},"result":{`...)
	if res.Error != nil {
		b = append(b, `"error":{"code":`...)
		b = str(b, res.Error.Code)
		b = append(b, `,"message":`...)
		b = str(b, res.Error.Message)
		b = append(b, `},`...)
	}
	b = append(b, `"exitCode":`...)
	integer(int64(res.ExitCode))
	b = append(b, `,"output":`...)
	raw(res.Output)
	b = append(b, `,"simulated":`...)
	b = strconv.AppendBool(b, res.Simulated)

	b = append(b, `},"schemaVersion":`...)
	b = str(b, rec.SchemaVersion)
	b = append(b, `,"status":`...)
	b = str(b, rec.Status)
	b = append(b, `,"timestamp":`...)
	b = str(b, rec.Timestamp)
	b = append(b, `,"tool":{"args":`...)
	raw(rec.Tool.Args)
	b = append(b, `,"name":`...)
	b = str(b, rec.Tool.Name)
	b = append(b, `,"timeoutMs":`...)
	integer(rec.Tool.TimeoutMs)
	b = append(b, "}}"...)
	return b, ok
}

// rawDepthMargin is the nesting past which a raw value takes the slow path: the canonicaliser
// refuses a record nested deeper than 10000 levels, raw values included.
const rawDepthMargin = 9000

// recordShape is the shape appendCanonicalRecord was written for: every field of every
// struct it encodes, with its type and JSON tag. A field added anywhere (here, in exec or in
// identity) turns the direct encoding off until it is taught the new field; a test fails
// meanwhile, and the records stay correct through proof.Seal.
var recordShape = []string{
	"gateway.Record.SchemaVersion string schemaVersion",
	"gateway.Record.JobID string jobId",
	"gateway.Record.Timestamp string timestamp",
	"gateway.Record.Endpoint string endpoint",
	"gateway.Record.AgentID string agentId",
	"gateway.Record.Tool gateway.RecordTool tool",
	"gateway.Record.DryRun bool dryRun",
	"gateway.Record.Context json.RawMessage context,omitempty",
	"gateway.Record.Status string status",
	"gateway.Record.Result exec.Result result",
	"gateway.Record.IAM identity.Outcome iam",
	"gateway.Record.Payment gateway.PaymentRef payment",
	"gateway.RecordTool.Name string name",
	"gateway.RecordTool.Args json.RawMessage args",
	"gateway.RecordTool.TimeoutMs int64 timeoutMs",
	"exec.Result.Output json.RawMessage output",
	"exec.Result.ExitCode int exitCode",
	"exec.Result.Simulated bool simulated",
	"exec.Result.Error *exec.ToolError error,omitempty",
	"exec.ToolError.Code string code",
	"exec.ToolError.Message string message",
	"identity.Outcome.Approved bool approved",
	"identity.Outcome.Decision string decision",
	"identity.Outcome.Source string source",
	"identity.Outcome.Reason string reason",
	"identity.Outcome.Violations []string violations,omitempty",
	"identity.Outcome.RiskScore string riskScore,omitempty",
	"identity.Outcome.EPProofHash string epProofHash,omitempty",
	"gateway.PaymentRef.Protocol string protocol",
	"gateway.PaymentRef.Amount string amount",
	"gateway.PaymentRef.Currency string currency",
	"gateway.PaymentRef.Payer string payer,omitempty",
	"gateway.PaymentRef.Reference string reference,omitempty",
}

// recordShapeKnown says the record types still have recordShape and no custom encoding.
var recordShapeKnown = slices.Equal(shapeOf(reflect.TypeFor[Record](), reflect.TypeFor[RecordTool](), reflect.TypeFor[exec.Result](),
	reflect.TypeFor[exec.ToolError](), reflect.TypeFor[identity.Outcome](), reflect.TypeFor[PaymentRef]()), recordShape)

// shapeOf describes struct types as recordShape does: every field with its type and JSON
// tag. A type with its own JSON or text encoding is described as such, which no entry of a
// shape list matches.
func shapeOf(types ...reflect.Type) []string {
	var out []string
	marshalers := []reflect.Type{reflect.TypeFor[json.Marshaler](), reflect.TypeFor[encoding.TextMarshaler]()}
	for _, t := range types {
		for _, m := range marshalers {
			if t.Implements(m) || reflect.PointerTo(t).Implements(m) {
				out = append(out, t.String()+" implements "+m.String())
			}
		}
		for i := range t.NumField() {
			f := t.Field(i)
			out = append(out, t.String()+"."+f.Name+" "+f.Type.String()+" "+f.Tag.Get("json"))
		}
	}
	return out
}

// marshalResponse is json.Marshal(v), byte for byte, with the 200 answer of an execution
// encoded directly: encoding/json's reflection was a tenth of the request's CPU time.
func marshalResponse(v any) ([]byte, error) {
	if r, ok := v.(execResponse); ok && responseShapeKnown {
		if b, ok := appendExecResponse(make([]byte, 0, 448+len(r.Result.Output)), &r); ok {
			return b, nil
		}
	}
	return json.Marshal(v)
}

// appendExecResponse appends r as json.Marshal encodes it: fields in declaration order,
// omitempty fields left out, strings escaped for HTML. It reports false when the output is a
// raw value that json.Marshal would rewrite (whitespace, characters it escapes) or might
// refuse, and the caller falls back.
func appendExecResponse(b []byte, r *execResponse) ([]byte, bool) {
	str := appendHTMLSafeString
	b = append(b, `{"jobId":`...)
	b = str(b, r.JobID)
	b = append(b, `,"tool":`...)
	b = str(b, r.Tool)
	b = append(b, `,"dryRun":`...)
	b = strconv.AppendBool(b, r.DryRun)
	b = append(b, `,"status":`...)
	b = str(b, r.Status)

	b = append(b, `,"result":{"output":`...)
	switch out := r.Result.Output; {
	case out == nil:
		b = append(b, "null"...)
	case rawIsCompactAndHTMLSafe(out):
		b = append(b, out...)
	default:
		return b, false
	}
	b = append(b, `,"exitCode":`...)
	b = strconv.AppendInt(b, int64(r.Result.ExitCode), 10)
	b = append(b, `,"simulated":`...)
	b = strconv.AppendBool(b, r.Result.Simulated)
	if e := r.Result.Error; e != nil {
		b = append(b, `,"error":{"code":`...)
		b = str(b, e.Code)
		b = append(b, `,"message":`...)
		b = str(b, e.Message)
		b = append(b, '}')
	}

	b = append(b, `},"iamApproved":`...)
	b = strconv.AppendBool(b, r.IAMApproved)
	iam := &r.IAM
	b = append(b, `,"iam":{"approved":`...)
	b = strconv.AppendBool(b, iam.Approved)
	b = append(b, `,"decision":`...)
	b = str(b, iam.Decision)
	b = append(b, `,"source":`...)
	b = str(b, iam.Source)
	b = append(b, `,"reason":`...)
	b = str(b, iam.Reason)
	if len(iam.Violations) > 0 {
		b = append(b, `,"violations":[`...)
		for i, v := range iam.Violations {
			if i > 0 {
				b = append(b, ',')
			}
			b = str(b, v)
		}
		b = append(b, ']')
	}
	if iam.RiskScore != "" {
		b = append(b, `,"riskScore":`...)
		b = str(b, iam.RiskScore)
	}
	if iam.EPProofHash != "" {
		b = append(b, `,"epProofHash":`...)
		b = str(b, iam.EPProofHash)
	}

	b = append(b, `},"proofHash":`...)
	b = str(b, r.ProofHash)
	b = append(b, `,"paymentProtocol":`...)
	b = str(b, r.PaymentProtocol)
	b = append(b, `,"latencyMs":`...)
	b = strconv.AppendInt(b, r.LatencyMs, 10)
	b = append(b, `,"timestamp":`...)
	b = str(b, r.Timestamp)
	b = append(b, `,"schemaVersion":`...)
	b = str(b, r.SchemaVersion)
	if st := r.Settlement; st != nil {
		b = append(b, `,"settlement":{"status":`...)
		b = str(b, st.Status)
		if st.ID != "" {
			b = append(b, `,"id":`...)
			b = str(b, st.ID)
		}
		if st.Transaction != "" {
			b = append(b, `,"transaction":`...)
			b = str(b, st.Transaction)
		}
		b = append(b, '}')
	}
	return append(b, '}'), true
}

// responseShape is the shape appendExecResponse was written for; see recordShape.
var responseShape = []string{
	"gateway.execResponse.JobID string jobId",
	"gateway.execResponse.Tool string tool",
	"gateway.execResponse.DryRun bool dryRun",
	"gateway.execResponse.Status string status",
	"gateway.execResponse.Result exec.Result result",
	"gateway.execResponse.IAMApproved bool iamApproved",
	"gateway.execResponse.IAM identity.Outcome iam",
	"gateway.execResponse.ProofHash string proofHash",
	"gateway.execResponse.PaymentProtocol string paymentProtocol",
	"gateway.execResponse.LatencyMs int64 latencyMs",
	"gateway.execResponse.Timestamp string timestamp",
	"gateway.execResponse.SchemaVersion string schemaVersion",
	"gateway.execResponse.Settlement *gateway.settlementInfo settlement,omitempty",
	"gateway.settlementInfo.Status string status",
	"gateway.settlementInfo.ID string id,omitempty",
	"gateway.settlementInfo.Transaction string transaction,omitempty",
	"exec.Result.Output json.RawMessage output",
	"exec.Result.ExitCode int exitCode",
	"exec.Result.Simulated bool simulated",
	"exec.Result.Error *exec.ToolError error,omitempty",
	"exec.ToolError.Code string code",
	"exec.ToolError.Message string message",
	"identity.Outcome.Approved bool approved",
	"identity.Outcome.Decision string decision",
	"identity.Outcome.Source string source",
	"identity.Outcome.Reason string reason",
	"identity.Outcome.Violations []string violations,omitempty",
	"identity.Outcome.RiskScore string riskScore,omitempty",
	"identity.Outcome.EPProofHash string epProofHash,omitempty",
}

// responseShapeKnown says the response types still have responseShape and no custom encoding.
var responseShapeKnown = slices.Equal(shapeOf(reflect.TypeFor[execResponse](), reflect.TypeFor[settlementInfo](),
	reflect.TypeFor[exec.Result](), reflect.TypeFor[exec.ToolError](), reflect.TypeFor[identity.Outcome]()), responseShape)

// appendHTMLSafeString appends s as encoding/json encodes a string by default: <, > and &
// escaped for HTML, U+2028 and U+2029 escaped for JavaScript, invalid UTF-8 as \ufffd.
func appendHTMLSafeString(dst []byte, s string) []byte {
	return jsonstr.Append(dst, s, jsonstr.EncodingJSON)
}

// rawSpecial marks the bytes rawIsCompactAndHTMLSafe has to look at.
var rawSpecial = func() (t [256]bool) {
	for _, c := range []byte{'"', '\\', ' ', '\t', '\n', '\r', '<', '>', '&', 0xE2} {
		t[c] = true
	}
	return t
}()

// rawIsCompactAndHTMLSafe reports whether json.Marshal copies the raw value v unchanged:
// v is valid (I-JSON, stricter than json.Marshal needs), has no whitespace outside strings
// and nothing json.Marshal escapes inside them. A tool's output has been through
// json.Marshal already, so it almost always is.
func rawIsCompactAndHTMLSafe(v []byte) bool {
	inString := false
	for i := 0; i < len(v); i++ {
		if !rawSpecial[v[i]] {
			continue
		}
		switch c := v[i]; c {
		case '"':
			inString = !inString
		case '\\':
			i++ // only inside a string; the escaped byte cannot end it
		case ' ', '\t', '\n', '\r':
			if !inString {
				return false
			}
		case '<', '>', '&':
			return false
		case 0xE2:
			if i+2 < len(v) && v[i+1] == 0x80 && v[i+2]&^1 == 0xA8 {
				return false
			}
		}
	}
	return jsontext.Value(v).IsValid()
}

// formatTimestamp is t.UTC().Format(timestampLayout), written out digit by digit for the
// years time.Format prints as four digits; the layout's reflection-free interpreter was a
// few percent of a call.
func formatTimestamp(t time.Time) string {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.Format(timestampLayout)
	}
	hour, minute, sec := t.Clock()
	ms := t.Nanosecond() / 1e6 // truncated, as time.Format truncates fractions
	var b [len("2006-01-02T15:04:05.000Z")]byte
	put := func(at, n, digits int) {
		for i := at + digits - 1; i >= at; i-- {
			b[i] = byte('0' + n%10)
			n /= 10
		}
	}
	put(0, year, 4)
	b[4] = '-'
	put(5, int(month), 2)
	b[7] = '-'
	put(8, day, 2)
	b[10] = 'T'
	put(11, hour, 2)
	b[13] = ':'
	put(14, minute, 2)
	b[16] = ':'
	put(17, sec, 2)
	b[19] = '.'
	put(20, ms, 3)
	b[23] = 'Z'
	return string(b[:])
}
