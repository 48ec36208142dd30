package x402

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/secureexec/secureexec/payments"
)

// The remote facilitator's HTTP API (x402.md §8): POST /verify and POST /settle take
// {"x402Version", "paymentPayload", "paymentRequirements"}; GET /supported lists the kinds it
// settles. Everything it answers is network input: size-capped, time-bounded and validated
// before the gateway acts on it.

// Limits on a facilitator's answers.
const (
	maxFacilitatorBody   = 64 << 10 // an answer is a few hundred bytes; /supported a few KiB
	maxFacilitatorReason = 128      // reason codes are short snake_case identifiers
	maxFacilitatorText   = 512      // invalidMessage / errorMessage, kept for the log and the 402
)

// ErrFacilitator marks a facilitator that could not be asked or did not answer in the protocol:
// unreachable, timed out, a 5xx, a redirect, a body that is not its JSON. Always joined with
// payments.ErrUnavailable. For /settle it means the outcome is unknown, never "failed".
var ErrFacilitator = errors.New("x402: facilitator")

// FacilitatorOptions configures a FacilitatorClient; zero values take the defaults in brackets.
type FacilitatorOptions struct {
	// AuthHeader, when set, is sent as the Authorization header of every request, e.g.
	// "Bearer <key>". Facilitators that need one issue it.
	AuthHeader string
	// VerifyTimeout bounds /verify and /supported [10 s].
	VerifyTimeout time.Duration
	// SettleTimeout bounds /settle, which waits for the transaction's receipt [60 s]. Past it
	// the payment is pending, never failed.
	SettleTimeout time.Duration
	// Client is the HTTP client [one with the timeouts above and no redirects].
	Client *http.Client
	// Logger receives the causes of failures to reach the facilitator [slog.Default()].
	Logger *slog.Logger
}

// FacilitatorClient asks a remote facilitator to verify and settle payments.
type FacilitatorClient struct {
	base *url.URL
	opts FacilitatorOptions
}

// NewFacilitatorClient returns a client of the facilitator at baseURL (http or https; the
// endpoints are baseURL + "/verify", "/settle", "/supported").
func NewFacilitatorClient(baseURL string, opts FacilitatorOptions) (*FacilitatorClient, error) {
	u, err := url.Parse(strings.TrimSuffix(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("x402: facilitator URL %q: want http(s)://host[:port][/path], no credentials, query or fragment", baseURL)
	}
	if strings.ContainsAny(opts.AuthHeader, "\r\n") {
		return nil, errors.New("x402: facilitator auth header contains a line break")
	}
	if opts.VerifyTimeout <= 0 {
		opts.VerifyTimeout = 10 * time.Second
	}
	if opts.SettleTimeout <= 0 {
		opts.SettleTimeout = 60 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Client == nil {
		opts.Client = &http.Client{
			// A POST is not re-sent to wherever a redirect points: the configured URL is the
			// facilitator, and a redirect is reported as a facilitator fault.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Transport: &http.Transport{
				Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second,
				TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: opts.SettleTimeout,
			},
		}
	}
	return &FacilitatorClient{base: u, opts: opts}, nil
}

// FacilitatorRequest is the body of /verify and /settle. The top-level version is the payload's.
type FacilitatorRequest struct {
	X402Version         int             `json:"x402Version"`
	PaymentPayload      json.RawMessage `json:"paymentPayload"`
	PaymentRequirements json.RawMessage `json:"paymentRequirements"`
}

// NewFacilitatorRequest is the request for payload against the offer entry it answers: req for
// v2, its v1 form (with resource) for v1.
func NewFacilitatorRequest(p *PaymentPayload, req PaymentRequirements, resource ResourceInfo) ([]byte, error) {
	var requirements any = req
	if p.X402Version == 1 {
		v1, ok := RequirementsV1(req, resource)
		if !ok {
			return nil, refuse(ReasonInvalidNetwork, "this network has no x402 v1 name")
		}
		requirements = v1
	}
	payload, err := marshalCompact(p)
	if err != nil {
		return nil, err
	}
	reqJSON, err := marshalCompact(requirements)
	if err != nil {
		return nil, err
	}
	return marshalCompact(FacilitatorRequest{X402Version: p.X402Version, PaymentPayload: payload, PaymentRequirements: reqJSON})
}

// VerifyResponse is the facilitator's /verify answer.
type VerifyResponse struct {
	IsValid        bool   `json:"isValid"`
	InvalidReason  string `json:"invalidReason,omitempty"`
	InvalidMessage string `json:"invalidMessage,omitempty"`
	Payer          string `json:"payer,omitempty"`
}

// SupportedKind is one (version, scheme, network) the facilitator settles.
type SupportedKind struct {
	X402Version int             `json:"x402Version"`
	Scheme      string          `json:"scheme"`
	Network     string          `json:"network"`
	Extra       json.RawMessage `json:"extra,omitempty"`
}

// Supported is the facilitator's /supported answer.
type Supported struct {
	Kinds      []SupportedKind     `json:"kinds"`
	Extensions []string            `json:"extensions,omitempty"`
	Signers    map[string][]string `json:"signers,omitempty"`
}

// Settles reports whether the facilitator lists the exact scheme on network for version.
func (s *Supported) Settles(version int, network string) bool {
	for _, k := range s.Kinds {
		if k.X402Version == version && k.Scheme == SchemeExact && k.Network == network {
			return true
		}
	}
	return false
}

// Verify asks the facilitator whether the payment in body (a FacilitatorRequest) is valid. A
// refusal is a VerifyResponse with IsValid false, not an error; an error is ErrFacilitator
// (and payments.ErrUnavailable).
func (c *FacilitatorClient) Verify(ctx context.Context, body []byte) (VerifyResponse, error) {
	var out VerifyResponse
	status, err := c.post(ctx, "/verify", body, c.opts.VerifyTimeout, &out)
	if err != nil {
		return out, err
	}
	if err := out.check(); err != nil {
		return out, facilitatorFault("/verify", "%v", err)
	}
	// A non-2xx that still says isValid:false is a refusal (the reference client reads it so);
	// any other non-2xx is a fault.
	if status/100 != 2 && out.IsValid {
		return out, facilitatorFault("/verify", "HTTP %d with isValid true", status)
	}
	// unexpected_verify_error is the facilitator failing, not the payment: like
	// unexpected_settle_error at /settle, it decides nothing.
	if !out.IsValid && out.InvalidReason == ReasonUnexpectedVerifyError {
		return out, facilitatorFault("/verify", "%s: %s", out.InvalidReason, out.InvalidMessage)
	}
	// A yes for another payer is not an answer about this payment.
	if out.IsValid && out.Payer != "" {
		asked := subjectOf(body)
		got, ok1 := ParseAddress(out.Payer)
		want, ok2 := ParseAddress(asked.PaymentPayload.Payload.Authorization.From)
		if !ok1 || !ok2 || got != want {
			return out, facilitatorFault("/verify", "isValid true for payer %q, the payment is from %q", clip(out.Payer, 64),
				clip(asked.PaymentPayload.Payload.Authorization.From, 64))
		}
	}
	return out, nil
}

// facilitatorSubject is what a facilitator's answer must agree with: the payer and the network
// of the request it answers.
type facilitatorSubject struct {
	PaymentPayload struct {
		Payload struct {
			Authorization struct {
				From string `json:"from"`
			} `json:"authorization"`
		} `json:"payload"`
	} `json:"paymentPayload"`
	PaymentRequirements struct {
		Network string `json:"network"`
	} `json:"paymentRequirements"`
}

// subjectOf reads the payer and network of a FacilitatorRequest; a request the gateway did not
// build has none, and no answer agrees with it.
func subjectOf(body []byte) facilitatorSubject {
	var s facilitatorSubject
	_ = json.Unmarshal(body, &s)
	return s
}

// Settle asks the facilitator to settle the payment in body. The answer may be a success, a
// refusal (Success false, no transaction: nothing was sent), a failed transaction, or
// settlement_pending, each on the payment's network; an error (ErrFacilitator) means the
// outcome is unknown.
func (c *FacilitatorClient) Settle(ctx context.Context, body []byte) (SettlementResponse, error) {
	var out SettlementResponse
	status, err := c.post(ctx, "/settle", body, c.opts.SettleTimeout, &out)
	if err != nil {
		return out, err
	}
	if err := checkSettlementAnswer(&out); err != nil {
		return out, facilitatorFault("/settle", "%v", err)
	}
	if status/100 != 2 && out.Success {
		return out, facilitatorFault("/settle", "HTTP %d with success true", status)
	}
	// An answer about another network is not about this payment; a transaction needs one.
	if asked := subjectOf(body).PaymentRequirements.Network; out.Network != asked && (out.Network != "" || out.Success || out.Transaction != "") {
		return out, facilitatorFault("/settle", "the answer is about network %q, the payment is on %q", clip(out.Network, 64), clip(asked, 64))
	}
	return out, nil
}

// Supported asks the facilitator what it settles.
func (c *FacilitatorClient) Supported(ctx context.Context) (*Supported, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.VerifyTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+"/supported", nil)
	if err != nil {
		return nil, err
	}
	var out Supported
	status, err := c.do(req, "/supported", &out)
	if err != nil {
		return nil, err
	}
	if status/100 != 2 {
		return nil, facilitatorFault("/supported", "HTTP %d", status)
	}
	return &out, nil
}

func (c *FacilitatorClient) post(ctx context.Context, path string, body []byte, timeout time.Duration, out any) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base.String()+path, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	return c.do(req, path, out)
}

// do sends req and decodes a JSON answer of at most maxFacilitatorBody bytes into out. 4xx
// answers are decoded too (a facilitator may refuse with a 400 and its reason); 3xx, 408, 429,
// 5xx and anything that is not one JSON object are faults.
func (c *FacilitatorClient) do(req *http.Request, path string, out any) (int, error) {
	req.Header.Set("Accept", "application/json")
	if c.opts.AuthHeader != "" {
		req.Header.Set("Authorization", c.opts.AuthHeader)
	}
	res, err := c.opts.Client.Do(req)
	if err != nil {
		// The cause names the facilitator's URL and address, and the fault's text reaches the
		// payer in the 503: the operator reads the cause in the log, the payer its kind.
		c.opts.Logger.Warn("x402: the facilitator could not be asked", "path", path, "err", err)
		return 0, facilitatorFault(path, "%s", transportFailure(err))
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, maxFacilitatorBody+1))
	if err != nil {
		return res.StatusCode, facilitatorFault(path, "reading the answer: %v", err)
	}
	// 408 and 429 say "not now", whatever their body says: never a verdict on the payment.
	if res.StatusCode/100 != 2 && res.StatusCode/100 != 4 || res.StatusCode == http.StatusRequestTimeout || res.StatusCode == http.StatusTooManyRequests {
		return res.StatusCode, facilitatorFault(path, "HTTP %d", res.StatusCode)
	}
	if len(raw) > maxFacilitatorBody {
		return res.StatusCode, facilitatorFault(path, "answer larger than %d bytes", maxFacilitatorBody)
	}
	if err := decodeFacilitatorJSON(raw, out); err != nil {
		return res.StatusCode, facilitatorFault(path, "HTTP %d: %v", res.StatusCode, err)
	}
	return res.StatusCode, nil
}

// transportFailure says what kind of failure err (from http.Client.Do) is, without the URL or
// address it names.
func transportFailure(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "request canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "no answer in time"
	default:
		return "not reachable (connection or TLS failure)"
	}
}

// decodeFacilitatorJSON decodes one JSON object into out; unknown fields are allowed (the
// protocol adds fields), trailing data is not.
func decodeFacilitatorJSON(raw []byte, out any) error {
	if t := bytes.TrimLeft(raw, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return errors.New("the answer is not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("the answer is not the protocol's JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON answer")
	}
	return nil
}

func facilitatorFault(path, format string, args ...any) error {
	return fmt.Errorf("%w %s: %s: %w", ErrFacilitator, path, fmt.Sprintf(format, args...), payments.ErrUnavailable)
}

// check validates a /verify answer: a refusal names a reason the gateway can pass on.
func (v *VerifyResponse) check() error {
	v.InvalidMessage = clip(v.InvalidMessage, maxFacilitatorText)
	if v.IsValid {
		return nil
	}
	if !isReasonCode(v.InvalidReason) {
		return fmt.Errorf("isValid false with invalidReason %q", clip(v.InvalidReason, 64))
	}
	return nil
}

// checkSettlementAnswer validates a /settle answer: a transaction is a 32-byte hash, a failure
// names a reason.
func checkSettlementAnswer(s *SettlementResponse) error {
	s.ErrorMessage = clip(s.ErrorMessage, maxFacilitatorText)
	if s.Transaction != "" {
		if h, ok := parseBytes32(s.Transaction); !ok || h == (common.Hash{}) {
			return fmt.Errorf("transaction %q is not a 32-byte hash", clip(s.Transaction, 80))
		}
	}
	if s.Success {
		if s.Transaction == "" {
			return errors.New("success without a transaction")
		}
		return nil
	}
	if !isReasonCode(s.ErrorReason) {
		return fmt.Errorf("success false with errorReason %q", clip(s.ErrorReason, 64))
	}
	return nil
}

// isReasonCode accepts the shape of the protocol's reason codes: short, lower-case snake_case.
func isReasonCode(s string) bool {
	if s == "" || len(s) > maxFacilitatorReason {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// clip cuts s to at most n bytes without splitting a UTF-8 sequence, and drops control bytes.
func clip(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, ""))
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut]
}
