package mpp

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/secureexec/secureexec/proof"
)

// The scheme, and the one method and intent this package serves.
const (
	SchemePayment = "Payment" // RFC 9110 auth-scheme of the draft; compared case-insensitively
	SchemeMPP     = "MPP"     // the seed's "Authorization: MPP <PaymentIntent id>"
	MethodStripe  = "stripe"
	IntentCharge  = "charge"
)

// Header names of the scheme.
const (
	HeaderWWWAuthenticate = "WWW-Authenticate"
	HeaderAuthorization   = "Authorization"
	HeaderReceipt         = "Payment-Receipt"
	HeaderAcceptPayment   = "Accept-Payment"
)

// Limits on what the network may hand the parsers. The draft asks servers to accept
// credentials of at least 4 KB and to keep challenges under 8 KB.
const (
	MaxHeaderBytes  = 16 << 10 // one WWW-Authenticate, Authorization or Accept-Payment value
	maxParams       = 32       // auth-params per challenge
	maxChallenges   = 16       // challenges per WWW-Authenticate value
	maxPaymentRange = 32       // ranges per Accept-Payment
)

// Challenge is one `Payment` challenge: its auth-params, and the same fields as a credential
// echoes them. Optional fields are "" when absent.
type Challenge struct {
	ID          string `json:"id"`
	Realm       string `json:"realm"`
	Method      string `json:"method"`
	Intent      string `json:"intent"`
	Request     string `json:"request"`
	Expires     string `json:"expires,omitempty"`
	Description string `json:"description,omitempty"`
	Digest      string `json:"digest,omitempty"`
	Opaque      string `json:"opaque,omitempty"`
	Header      string `json:"header,omitempty"`
}

// EncodeRequest is the draft's encoding of a `request` (or `opaque`) value: JSON, then RFC
// 8785 canonical form, then base64url without padding.
func EncodeRequest(v any) (string, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("mpp: encode request: %w", err)
	}
	c, err := proof.Canonicalize(raw)
	if err != nil {
		return "", fmt.Errorf("mpp: encode request: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(c), nil
}

// idInput is the HMAC input of the draft -01 recipe (mpp.md §2): seven slots joined by "|",
// "" for an absent optional one. `header` is left out on purpose: the draft and mppx disagree
// on its slot, so this server never emits it and refuses a credential that echoes it.
func idInput(c Challenge) string {
	return strings.Join([]string{c.Realm, c.Method, c.Intent, c.Request, c.Expires, c.Digest, c.Opaque}, "|")
}

// ComputeID returns the challenge id the secret gives c: base64url-nopad(HMAC-SHA256(secret,
// input)). c.ID is ignored.
func ComputeID(secret []byte, c Challenge) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(idInput(c)))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// MinSecretBytes is the shortest HMAC secret a Keyring takes.
const MinSecretBytes = 32

// Keyring holds the secret that signs new challenge ids and, after a rotation, the previous
// one, which still verifies ids until every challenge it signed has expired.
type Keyring struct {
	current       []byte
	previous      []byte
	previousUntil time.Time
}

// NewKeyring returns a keyring signing with current. previous (nil when there is none) keeps
// verifying until previousUntil: the rotation time plus the longest challenge lifetime.
func NewKeyring(current, previous []byte, previousUntil time.Time) (*Keyring, error) {
	if len(current) < MinSecretBytes {
		return nil, fmt.Errorf("mpp: the challenge secret must be at least %d bytes", MinSecretBytes)
	}
	if previous != nil && len(previous) < MinSecretBytes {
		return nil, fmt.Errorf("mpp: the previous challenge secret must be at least %d bytes", MinSecretBytes)
	}
	return &Keyring{current: append([]byte(nil), current...), previous: append([]byte(nil), previous...), previousUntil: previousUntil}, nil
}

// Sign returns c's id under the current secret.
func (k *Keyring) Sign(c Challenge) string { return ComputeID(k.current, c) }

// Verify reports, in constant time, whether c.ID is the id of c's other fields under the
// current secret, or under the previous one while it is still accepted at now.
func (k *Keyring) Verify(c Challenge, now time.Time) bool {
	ok := subtle.ConstantTimeCompare([]byte(ComputeID(k.current, c)), []byte(c.ID)) == 1
	if len(k.previous) > 0 && now.Before(k.previousUntil) {
		ok = subtle.ConstantTimeCompare([]byte(ComputeID(k.previous, c)), []byte(c.ID)) == 1 || ok
	}
	return ok
}

// HeaderValue renders c as a WWW-Authenticate value: `Payment id="…", realm="…", …`, required
// params first, optional ones only when set.
func (c Challenge) HeaderValue() string {
	var b strings.Builder
	b.WriteString(SchemePayment)
	sep := " "
	add := func(name, v string, always bool) {
		if v == "" && !always {
			return
		}
		b.WriteString(sep + name + "=" + quote(v))
		sep = ", "
	}
	add("id", c.ID, true)
	add("realm", c.Realm, true)
	add("method", c.Method, true)
	add("intent", c.Intent, true)
	add("request", c.Request, true)
	add("expires", c.Expires, false)
	add("digest", c.Digest, false)
	add("opaque", c.Opaque, false)
	add("description", c.Description, false)
	add("header", c.Header, false)
	return b.String()
}

// quote renders s as an RFC 9110 quoted-string. Control characters other than HTAB have no
// quoted form; they are dropped (realm and description are validated before they get here).
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\t' || c >= 0x20 && c != 0x7f:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// ChallengeFromParams builds a challenge from the auth-params of a `Payment` challenge and
// checks that the required ones are there. Unknown params are ignored, as the draft says.
func ChallengeFromParams(p map[string]string) (Challenge, error) {
	c := Challenge{
		ID: p["id"], Realm: p["realm"], Method: p["method"], Intent: p["intent"], Request: p["request"],
		Expires: p["expires"], Description: p["description"], Digest: p["digest"], Opaque: p["opaque"], Header: p["header"],
	}
	for _, f := range []struct{ name, v string }{{"id", c.ID}, {"realm", c.Realm}, {"method", c.Method}, {"intent", c.Intent}, {"request", c.Request}} {
		if f.v == "" {
			return c, fmt.Errorf("mpp: challenge without %s", f.name)
		}
	}
	if !validMethod(c.Method) {
		return c, fmt.Errorf("mpp: challenge method %q is not lowercase a-z", c.Method)
	}
	return c, nil
}

// validMethod is the draft's method name: lowercase ASCII letters.
func validMethod(m string) bool {
	if m == "" || len(m) > 64 {
		return false
	}
	for i := 0; i < len(m); i++ {
		if m[i] < 'a' || m[i] > 'z' {
			return false
		}
	}
	return true
}

// AuthChallenge is one challenge (or credential) of an RFC 9110 authentication header: its
// scheme, and either a token68 or auth-params (names lowercased).
type AuthChallenge struct {
	Scheme  string
	Token68 string
	Params  map[string]string
}

// ErrAuthSyntax marks a header value that is not RFC 9110 challenge syntax.
var ErrAuthSyntax = errors.New("mpp: malformed authentication header")

// ParseChallenges parses one WWW-Authenticate (or Authorization) field value into its
// challenges: `scheme [ 1*SP ( token68 / #auth-param ) ]`, comma-separated. Param names are
// case-insensitive and may not repeat within a challenge; quoted-string values are unescaped.
func ParseChallenges(v string) ([]AuthChallenge, error) {
	if len(v) > MaxHeaderBytes {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrAuthSyntax, MaxHeaderBytes)
	}
	p := &authParser{s: v}
	var out []AuthChallenge
	for {
		p.skipListSeparators()
		if p.eof() {
			break
		}
		if len(out) == maxChallenges {
			return nil, fmt.Errorf("%w: more than %d challenges", ErrAuthSyntax, maxChallenges)
		}
		c, err := p.challenge()
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no challenge", ErrAuthSyntax)
	}
	return out, nil
}

// ParseAuthParams parses a bare `#auth-param` list, as it follows the scheme of a challenge.
func ParseAuthParams(v string) (map[string]string, error) {
	if len(v) > MaxHeaderBytes {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrAuthSyntax, MaxHeaderBytes)
	}
	p := &authParser{s: v}
	params := map[string]string{}
	for {
		p.skipListSeparators()
		if p.eof() {
			return params, nil
		}
		if err := p.param(params); err != nil {
			return nil, err
		}
		p.skipOWS()
		if !p.eof() && p.peek() != ',' {
			return nil, p.errorf("expected ',' after a parameter")
		}
	}
}

// authParser is a cursor over one header value.
type authParser struct {
	s   string
	pos int
}

func (p *authParser) eof() bool  { return p.pos >= len(p.s) }
func (p *authParser) peek() byte { return p.s[p.pos] }

func (p *authParser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s at byte %d", ErrAuthSyntax, fmt.Sprintf(format, args...), p.pos)
}

func (p *authParser) skipOWS() {
	for !p.eof() && (p.peek() == ' ' || p.peek() == '\t') {
		p.pos++
	}
}

// skipListSeparators skips the empty elements and commas a #rule list allows.
func (p *authParser) skipListSeparators() {
	for !p.eof() && (p.peek() == ' ' || p.peek() == '\t' || p.peek() == ',') {
		p.pos++
	}
}

func (p *authParser) token() string {
	start := p.pos
	for !p.eof() && isTChar(p.peek()) {
		p.pos++
	}
	return p.s[start:p.pos]
}

// challenge parses one challenge at the cursor and leaves it at the following comma or end.
func (p *authParser) challenge() (AuthChallenge, error) {
	scheme := p.token()
	if scheme == "" {
		return AuthChallenge{}, p.errorf("expected an auth-scheme")
	}
	c := AuthChallenge{Scheme: scheme}
	if p.eof() || p.peek() == ',' {
		return c, nil
	}
	if p.peek() != ' ' {
		return AuthChallenge{}, p.errorf("expected a space after the auth-scheme")
	}
	for !p.eof() && p.peek() == ' ' {
		p.pos++
	}
	if p.eof() || p.peek() == ',' {
		return c, nil
	}
	if t, ok := p.tryToken68(); ok {
		c.Token68 = t
		return c, nil
	}
	c.Params = map[string]string{}
	for {
		if err := p.param(c.Params); err != nil {
			return AuthChallenge{}, err
		}
		p.skipOWS()
		if p.eof() {
			return c, nil
		}
		if p.peek() != ',' {
			return AuthChallenge{}, p.errorf("expected ',' after a parameter")
		}
		// After the comma: another param of this challenge, or the next challenge.
		save := p.pos
		p.skipListSeparators()
		if p.eof() {
			return c, nil
		}
		if !p.atParam() {
			p.pos = save
			return c, nil
		}
	}
}

// atParam reports whether the cursor is at `token BWS "="`.
func (p *authParser) atParam() bool {
	save := p.pos
	defer func() { p.pos = save }()
	if p.token() == "" {
		return false
	}
	p.skipOWS()
	return !p.eof() && p.peek() == '='
}

// tryToken68 consumes a token68 that is the whole rest of the challenge (up to OWS and a
// comma or the end); anything that reads as an auth-param is left for param.
func (p *authParser) tryToken68() (string, bool) {
	if p.atParam() {
		// `name=value` is a param; `abc=` followed by the end or a comma is a padded token68.
		save := p.pos
		p.token()
		p.skipOWS()
		p.pos++ // '='
		p.skipOWS()
		valueFollows := !p.eof() && (p.peek() == '"' || isTChar(p.peek()))
		p.pos = save
		if valueFollows {
			return "", false
		}
	}
	start := p.pos
	for !p.eof() && isToken68Char(p.peek()) {
		p.pos++
	}
	if p.pos == start {
		return "", false
	}
	for !p.eof() && p.peek() == '=' {
		p.pos++
	}
	end := p.pos
	p.skipOWS()
	if !p.eof() && p.peek() != ',' {
		p.pos = start
		return "", false
	}
	return p.s[start:end], true
}

// param parses `token BWS "=" BWS ( token / quoted-string )` into params.
func (p *authParser) param(params map[string]string) error {
	name := strings.ToLower(p.token())
	if name == "" {
		return p.errorf("expected a parameter name")
	}
	p.skipOWS()
	if p.eof() || p.peek() != '=' {
		return p.errorf("expected '=' after %q", name)
	}
	p.pos++
	p.skipOWS()
	if p.eof() {
		return p.errorf("expected a value for %q", name)
	}
	var value string
	if p.peek() == '"' {
		v, err := p.quoted()
		if err != nil {
			return err
		}
		value = v
	} else if value = p.token(); value == "" {
		return p.errorf("expected a value for %q", name)
	}
	if _, dup := params[name]; dup {
		return p.errorf("parameter %q repeated", name)
	}
	if len(params) == maxParams {
		return p.errorf("more than %d parameters", maxParams)
	}
	params[name] = value
	return nil
}

// quoted parses a quoted-string at the cursor and returns its unescaped content.
func (p *authParser) quoted() (string, error) {
	p.pos++ // opening quote
	var b strings.Builder
	for !p.eof() {
		c := p.peek()
		switch {
		case c == '"':
			p.pos++
			return b.String(), nil
		case c == '\\':
			p.pos++
			if p.eof() {
				return "", p.errorf("unterminated quoted-pair")
			}
			e := p.peek()
			if e != '\t' && (e < 0x20 || e == 0x7f) {
				return "", p.errorf("control character in a quoted-pair")
			}
			b.WriteByte(e)
		case c == '\t' || (c >= 0x20 && c != 0x7f):
			b.WriteByte(c)
		default:
			return "", p.errorf("control character in a quoted-string")
		}
		p.pos++
	}
	return "", p.errorf("unterminated quoted-string")
}

func isTChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func isToken68Char(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("-._~+/", c) >= 0
}

// PaymentRange is one element of Accept-Payment: `method/intent` (either may be "*") and its
// weight in thousandths (q=1 is 1000, q=0 is 0: never).
type PaymentRange struct {
	Method string
	Intent string
	Q      int
}

// ParseAcceptPayment parses the Accept-Payment field values of a request:
// `#( method "/" intent [ OWS ";" OWS "q=" qvalue ] )`, e.g. `tempo/charge, stripe/charge;q=0.5`.
// Names are lowercased. A malformed header is an error, which the draft lets a server ignore.
func ParseAcceptPayment(values []string) ([]PaymentRange, error) {
	var out []PaymentRange
	total := 0
	for _, v := range values {
		total += len(v)
		if total > MaxHeaderBytes {
			return nil, fmt.Errorf("%w: Accept-Payment longer than %d bytes", ErrAuthSyntax, MaxHeaderBytes)
		}
		for _, elem := range strings.Split(v, ",") {
			elem = strings.Trim(elem, " \t")
			if elem == "" {
				continue
			}
			if len(out) == maxPaymentRange {
				return nil, fmt.Errorf("%w: more than %d payment ranges", ErrAuthSyntax, maxPaymentRange)
			}
			r, err := parsePaymentRange(elem)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
	}
	return out, nil
}

func parsePaymentRange(elem string) (PaymentRange, error) {
	rng, params, _ := strings.Cut(elem, ";")
	method, intent, ok := strings.Cut(strings.Trim(rng, " \t"), "/")
	method, intent = strings.ToLower(method), strings.ToLower(intent)
	if !ok || !rangeName(method) || !rangeName(intent) {
		return PaymentRange{}, fmt.Errorf("%w: payment range %q is not method/intent", ErrAuthSyntax, rng)
	}
	r := PaymentRange{Method: method, Intent: intent, Q: 1000}
	if params == "" {
		return r, nil
	}
	for _, param := range strings.Split(params, ";") {
		name, value, ok := strings.Cut(strings.Trim(param, " \t"), "=")
		if !ok || !strings.EqualFold(name, "q") {
			return PaymentRange{}, fmt.Errorf("%w: payment range parameter %q is not q", ErrAuthSyntax, param)
		}
		q, err := parseQValue(value)
		if err != nil {
			return PaymentRange{}, err
		}
		r.Q = q
	}
	return r, nil
}

func rangeName(s string) bool {
	return s == "*" || (s != "" && len(s) <= 64 && strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789-_.") == "")
}

// parseQValue parses RFC 9110 `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`
// into thousandths, without floating point.
func parseQValue(s string) (int, error) {
	whole, frac, _ := strings.Cut(s, ".")
	bad := fmt.Errorf("%w: q value %q", ErrAuthSyntax, s)
	if (whole != "0" && whole != "1") || len(frac) > 3 || strings.Trim(frac, "0123456789") != "" {
		return 0, bad
	}
	for len(frac) < 3 {
		frac += "0"
	}
	f, _ := strconv.Atoi(frac)
	if whole == "1" {
		if f != 0 {
			return 0, bad
		}
		return 1000, nil
	}
	return f, nil
}

// Preference returns the weight ranges give method/intent: that of the most specific range
// that matches (exact beats a wildcard, a wildcard beats */*; the first listed among equals).
// matched is false when no range matches. No ranges at all accept anything at q=1.
func Preference(ranges []PaymentRange, method, intent string) (q int, matched bool) {
	if len(ranges) == 0 {
		return 1000, true
	}
	best := -1
	for _, r := range ranges {
		if (r.Method != "*" && r.Method != method) || (r.Intent != "*" && r.Intent != intent) {
			continue
		}
		spec := 0
		if r.Method != "*" {
			spec += 2
		}
		if r.Intent != "*" {
			spec++
		}
		if spec > best {
			best, q = spec, r.Q
		}
	}
	return q, best >= 0
}

type acceptPaymentKey struct{}

// WithAcceptPayment attaches a request's Accept-Payment values to ctx, for Offer: the gateway
// calls it with r.Header.Values("Accept-Payment") before asking the rails for their offers.
func WithAcceptPayment(ctx context.Context, values []string) context.Context {
	if len(values) == 0 {
		return ctx
	}
	return context.WithValue(ctx, acceptPaymentKey{}, values)
}

// offerWanted applies the draft's filter: a malformed Accept-Payment is ignored, a range
// with q=0 refuses the offer, no matching range keeps the normal set.
func offerWanted(ctx context.Context, method, intent string) bool {
	values, _ := ctx.Value(acceptPaymentKey{}).([]string)
	ranges, err := ParseAcceptPayment(values)
	if err != nil {
		return true
	}
	q, matched := Preference(ranges, method, intent)
	return !matched || q > 0
}
