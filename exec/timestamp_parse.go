package exec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // zone names resolve the same on every host, even without /usr/share/zoneinfo
)

// TimestampParse is the timestamp_parse tool. Parsing is pure, so dry-run returns the answer.
type TimestampParse struct{}

// NewTimestampParse returns the timestamp_parse tool.
func NewTimestampParse() *TimestampParse { return &TimestampParse{} }

// Name implements Tool.
func (*TimestampParse) Name() string { return "timestamp_parse" }

// Description implements Tool.
func (*TimestampParse) Description() string {
	return "Parse a date/time (RFC 3339, RFC 1123, ISO date, unix s/ms/us/ns or a Go layout) and convert it to a time zone"
}

// Schema implements Tool.
func (*TimestampParse) Schema() json.RawMessage { return timestampParseSchema }

var timestampParseSchema = json.RawMessage(`{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "required": ["input"],
  "not": {"required": ["format", "layout"]},
  "$defs": {
    "zone": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z][A-Za-z0-9_+\\-]*(/[A-Za-z0-9_+\\-]+)*$"}
  },
  "properties": {
    "input":         {"type": ["string", "number"], "minLength": 1, "maxLength": 128, "description": "a date string, or unix time as a number or numeric string; at most 128 characters, a number's literal too"},
    "format":        {"type": "string", "enum": ["auto", "rfc3339", "rfc1123", "rfc1123z", "rfc850", "rfc822", "rfc822z", "ansic", "iso_date", "iso_datetime", "unix"], "default": "auto"},
    "layout":        {"type": "string", "minLength": 1, "maxLength": 64, "description": "a Go time layout, e.g. 02/01/2006 15:04"},
    "unit":          {"type": "string", "enum": ["auto", "s", "ms", "us", "ns"], "default": "auto", "description": "for unix input"},
    "timezone":      {"$ref": "#/$defs/zone", "default": "UTC", "description": "IANA zone of the output"},
    "inputTimezone": {"$ref": "#/$defs/zone", "default": "UTC", "description": "IANA zone of an input that carries no offset"}
  }
}`)

type timestampParseArgs struct {
	Input         json.RawMessage `json:"input"`
	Format        string          `json:"format"`
	Layout        string          `json:"layout"`
	Unit          string          `json:"unit"`
	Timezone      string          `json:"timezone"`
	InputTimezone string          `json:"inputTimezone"`
}

// TimestampParseOutput is one instant in several notations.
type TimestampParseOutput struct {
	Unix          int64  `json:"unix"`
	UnixMs        int64  `json:"unixMs"`
	RFC3339       string `json:"rfc3339"`       // UTC, with the fraction when there is one
	ISO8601       string `json:"iso8601"`       // in the target zone, with its offset
	Timezone      string `json:"timezone"`      // the target zone's IANA name
	Abbreviation  string `json:"abbreviation"`  // e.g. CET, as in force at that instant
	OffsetSeconds int    `json:"offsetSeconds"` // of the target zone at that instant
	Weekday       string `json:"weekday"`       // in the target zone
	Format        string `json:"format"`        // the format that parsed the input
	Unit          string `json:"unit,omitempty"`
}

// Named formats, tried in this order by "auto" for strings that are not numbers.
var timestampParseLayouts = []struct{ name, layout string }{
	{"rfc3339", time.RFC3339Nano},
	{"rfc1123z", time.RFC1123Z},
	{"rfc1123", time.RFC1123},
	{"rfc850", time.RFC850},
	{"ansic", time.ANSIC},
	{"rfc822z", time.RFC822Z},
	{"rfc822", time.RFC822},
	{"iso_datetime", "2006-01-02T15:04:05.999999999"},
	{"iso_datetime", "2006-01-02 15:04:05.999999999"},
	{"iso_datetime", "2006-01-02T15:04"},
	{"iso_date", "2006-01-02"},
}

// timestampParseMinYear and timestampParseMaxYear bound results to what RFC 3339 can express.
const (
	timestampParseMinYear = 0
	timestampParseMaxYear = 9999
)

// Simulate returns the real answer: parsing has no side effect.
func (t *TimestampParse) Simulate(ctx context.Context, raw json.RawMessage) (any, error) {
	return t.Run(ctx, raw)
}

// Run parses and converts.
func (*TimestampParse) Run(_ context.Context, raw json.RawMessage) (any, error) {
	var a timestampParseArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, Failf("invalid_args", "%v", err)
	}
	target, err := timestampParseZone(a.Timezone)
	if err != nil {
		return nil, err
	}
	inZone, err := timestampParseZone(a.InputTimezone)
	if err != nil {
		return nil, err
	}
	ts, format, unit, err := timestampParseInput(a, inZone)
	if err != nil {
		return nil, err
	}
	local := ts.In(target)
	for _, y := range []int{ts.UTC().Year(), local.Year()} {
		if y < timestampParseMinYear || y > timestampParseMaxYear {
			return nil, Failf("out_of_range", "year %d is outside 0000-9999", y)
		}
	}
	abbr, offset := local.Zone()
	return TimestampParseOutput{
		Unix:          ts.Unix(),
		UnixMs:        ts.UnixMilli(),
		RFC3339:       ts.UTC().Format(time.RFC3339Nano),
		ISO8601:       local.Format(time.RFC3339Nano),
		Timezone:      target.String(),
		Abbreviation:  abbr,
		OffsetSeconds: offset,
		Weekday:       local.Weekday().String(),
		Format:        format,
		Unit:          unit,
	}, nil
}

// timestampParseZone loads an IANA zone. "Local" is refused: the host's zone is not the
// caller's business and would make answers depend on where the gateway runs.
func timestampParseZone(name string) (*time.Location, error) {
	if name == "" || name == "UTC" {
		return time.UTC, nil
	}
	if name == "Local" || strings.Contains(name, "..") {
		return nil, Failf("unknown_timezone", "time zone %q is not allowed", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, Failf("unknown_timezone", "unknown time zone %q", name)
	}
	return loc, nil
}

// timestampParseMaxInput is the schema's maxLength, which JSON Schema applies to strings only:
// a number's literal is held to it here, before big.Rat's parsing, quadratic in its length.
const timestampParseMaxInput = 128

func timestampParseInput(a timestampParseArgs, inZone *time.Location) (time.Time, string, string, error) {
	if lit := bytes.TrimSpace(a.Input); len(lit) > timestampParseMaxInput && lit[0] != '"' {
		return time.Time{}, "", "", Failf("invalid_input", "a numeric input has at most %d characters, this one has %d", timestampParseMaxInput, len(lit))
	}
	var s string
	isNumber := false
	if err := json.Unmarshal(a.Input, &s); err != nil {
		var n json.Number
		if err := json.Unmarshal(a.Input, &n); err != nil {
			return time.Time{}, "", "", Failf("invalid_args", "input must be a string or a number")
		}
		s, isNumber = n.String(), true
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, "", "", Failf("invalid_input", "input is empty")
	}
	if a.Layout != "" {
		ts, err := time.ParseInLocation(a.Layout, s, inZone)
		if err != nil {
			return time.Time{}, "", "", Failf("parse_failed", "input does not match the layout: %v", err)
		}
		return ts, "layout", "", nil
	}
	format := a.Format
	if format == "" {
		format = "auto"
	}
	if format == "unix" || isNumber || (format == "auto" && timestampParseLooksNumeric(s)) {
		if format != "auto" && format != "unix" {
			return time.Time{}, "", "", Failf("parse_failed", "a number cannot be parsed as %s", format)
		}
		ts, unit, err := timestampParseUnix(s, a.Unit)
		return ts, "unix", unit, err
	}
	for _, l := range timestampParseLayouts {
		if format != "auto" && format != l.name {
			continue
		}
		if ts, err := time.ParseInLocation(l.layout, s, inZone); err == nil {
			return ts, l.name, "", nil
		}
	}
	if format == "auto" {
		return time.Time{}, "", "", Failf("parse_failed", "input matches no known format; give format or layout")
	}
	return time.Time{}, "", "", Failf("parse_failed", "input is not in %s format", format)
}

// timestampParseLooksNumeric accepts plain decimal numbers: an optional sign, digits with
// at most one point, and an optional exponent. Nothing else reaches big.Rat, which would also
// accept fractions and binary, octal or hex forms.
func timestampParseLooksNumeric(s string) bool {
	s = timestampParseTrimSign(s)
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		exp := timestampParseTrimSign(s[i+1:])
		if exp == "" || strings.Trim(exp, "0123456789") != "" {
			return false
		}
		s = s[:i]
	}
	digits, dots := 0, 0
	for _, c := range s {
		switch {
		case c == '.':
			dots++
		case c >= '0' && c <= '9':
			digits++
		default:
			return false
		}
	}
	return digits > 0 && dots <= 1
}

func timestampParseTrimSign(s string) string {
	if s != "" && (s[0] == '+' || s[0] == '-') {
		return s[1:]
	}
	return s
}

// timestampParseUnits are the unix units, with nanoseconds per unit.
var timestampParseUnits = map[string]int64{"s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1}

// timestampParseUnix reads a decimal number of seconds, ms, us or ns since the epoch. "auto"
// picks the unit by magnitude: below 1e11 seconds (until year 5138), below 1e14 ms, below
// 1e17 us, else ns. The arithmetic is exact (big.Rat), so fractions and large values do not
// lose precision through a float.
func timestampParseUnix(s, unit string) (time.Time, string, error) {
	if len(s) > timestampParseMaxInput { // a numeric string from a caller the schema did not check
		return time.Time{}, "", Failf("invalid_input", "a numeric input has at most %d characters, this one has %d", timestampParseMaxInput, len(s))
	}
	// Every unit is past the year 9999 long before 1e22, and a huge exponent would make
	// big.Rat compute an enormous power of ten: refuse both before exact parsing.
	if !timestampParseLooksNumeric(s) {
		return time.Time{}, "", Failf("parse_failed", "%q is not a decimal number", s)
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return time.Time{}, "", Failf("parse_failed", "%q is not a decimal number", s)
	}
	if err != nil || math.Abs(f) >= 1e22 || timestampParseExponent(s) > 40 {
		return time.Time{}, "", Failf("out_of_range", "%s is out of range", s)
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return time.Time{}, "", Failf("parse_failed", "%q is not a decimal number", s)
	}
	if unit == "" || unit == "auto" {
		abs := new(big.Rat).Abs(r)
		switch {
		case abs.Cmp(big.NewRat(1e11, 1)) < 0:
			unit = "s"
		case abs.Cmp(big.NewRat(1e14, 1)) < 0:
			unit = "ms"
		case abs.Cmp(big.NewRat(1e17, 1)) < 0:
			unit = "us"
		default:
			unit = "ns"
		}
	}
	perUnit, ok := timestampParseUnits[unit]
	if !ok {
		return time.Time{}, "", Failf("invalid_args", "unit %q is not supported", unit)
	}
	ns := new(big.Rat).Mul(r, big.NewRat(perUnit, 1))
	// Floor to whole nanoseconds (Euclidean division by the positive denominator), then split
	// into seconds and nanoseconds: int64 nanoseconds alone would end in the year 2262.
	total := new(big.Int).Div(ns.Num(), ns.Denom())
	sec, nsec := new(big.Int).DivMod(total, big.NewInt(1e9), new(big.Int))
	if !sec.IsInt64() {
		return time.Time{}, "", Failf("out_of_range", "%s %s is out of range", s, unit)
	}
	return time.Unix(sec.Int64(), nsec.Int64()), unit, nil
}

// timestampParseExponent returns the magnitude of a decimal exponent ("1e-7" gives 7).
func timestampParseExponent(s string) int {
	i := strings.IndexAny(s, "eE")
	if i < 0 {
		return 0
	}
	e, err := strconv.Atoi(strings.TrimPrefix(s[i+1:], "+"))
	if err != nil || e < -1e6 || e > 1e6 {
		return math.MaxInt
	}
	return max(e, -e)
}
