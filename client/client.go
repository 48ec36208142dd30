package client

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/google/uuid"

	"github.com/secureexec/secureexec/internal/textcut"
	"github.com/secureexec/secureexec/payments/x402"
	"github.com/secureexec/secureexec/proof"
)

// Defaults of a new Client.
const (
	DefaultTimeout      = 60 * time.Second
	DefaultMaxPayment   = 1_000_000 // atomic units: 1 USDC, the reference client's default cap
	DefaultMaxBodyBytes = 8 << 20   // 8 MiB
)

// Header names the client sends besides the x402 ones.
const (
	HeaderInternalKey = "X-Internal-Key"
	HeaderRequestID   = "X-Request-ID"
)

// Client calls one SecureExec gateway. It is safe for concurrent use.
type Client struct {
	base         *url.URL
	http         *http.Client
	signer       Signer
	internalKey  string
	maxPayment   uint64
	allowed      map[assetKey]x402.Network
	now          func() time.Time
	timeout      time.Duration
	maxBodyBytes int64
	log          *slog.Logger
	insecureHTTP bool // pay offers that came over plain HTTP from another machine
}

// assetKey names a token on a chain.
type assetKey struct {
	chainID uint64
	asset   common.Address
}

// Option configures a Client.
type Option func(*Client) error

// WithInsecureHTTP lets the client pay a gateway reached over plain HTTP on another machine.
// Without it such an offer is refused (ReasonInsecureTransport): anyone on the path can rewrite
// a 402's payTo, and the client would sign the transfer to them. A gateway on this machine
// (loopback) is paid over HTTP either way.
func WithInsecureHTTP() Option {
	return func(c *Client) error {
		c.insecureHTTP = true
		return nil
	}
}

// WithHTTPClient sets the HTTP client. The Client uses a copy whose redirects are never
// followed, so that a payment header cannot be carried to another host.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) error {
		if hc == nil {
			return errors.New("WithHTTPClient: nil client")
		}
		cp := *hc
		c.http = &cp
		return nil
	}
}

// WithX402Signer pays x402 offers with an in-memory EVM private key.
func WithX402Signer(privateKey *ecdsa.PrivateKey) Option {
	return func(c *Client) error {
		s, err := NewKeySigner(privateKey)
		if err != nil {
			return fmt.Errorf("WithX402Signer: %w", err)
		}
		c.signer = s
		return nil
	}
}

// WithSigner pays x402 offers with any Signer (an HSM, a remote wallet).
func WithSigner(s Signer) Option {
	return func(c *Client) error {
		if s == nil {
			return errors.New("WithSigner: nil signer")
		}
		c.signer = s
		return nil
	}
}

// WithInternalKey sends the gateway's INTERNAL_API_KEY (X-Internal-Key). Internal callers do
// not pay: a client with an internal key never signs a payment.
func WithInternalKey(key string) Option {
	return func(c *Client) error {
		if key == "" || strings.ContainsAny(key, "\r\n\x00") {
			return errors.New("WithInternalKey: empty or not a header value")
		}
		c.internalKey = key
		return nil
	}
}

// WithMaxPayment caps what one call may cost, in atomic units (1 USDC = 1_000_000). Offers
// above it are refused with max_payment_exceeded and nothing is signed. 0 refuses every payment.
func WithMaxPayment(atomic uint64) Option {
	return func(c *Client) error {
		c.maxPayment = atomic
		return nil
	}
}

// WithAllowedAssets allows paying in these tokens besides the defaults (USDC on Base and on
// Base Sepolia). A network needs ChainID and Asset; when it also names the token's EIP-712
// domain (TokenName, TokenVersion), offers that name another domain are refused.
func WithAllowedAssets(networks ...x402.Network) Option {
	return func(c *Client) error {
		for _, n := range networks {
			if n.ChainID == 0 || n.Asset == (common.Address{}) {
				return fmt.Errorf("WithAllowedAssets: %q needs a chain id and an asset", n.CAIP2)
			}
			c.allowed[assetKey{n.ChainID, n.Asset}] = n
		}
		return nil
	}
}

// WithClock sets the clock the payment window (validBefore) is computed from.
func WithClock(now func() time.Time) Option {
	return func(c *Client) error {
		if now == nil {
			return errors.New("WithClock: nil clock")
		}
		c.now = now
		return nil
	}
}

// WithTimeout bounds each method call (both attempts of a paid call together).
func WithTimeout(d time.Duration) Option {
	return func(c *Client) error {
		if d <= 0 {
			return errors.New("WithTimeout: must be positive")
		}
		c.timeout = d
		return nil
	}
}

// WithMaxBodyBytes caps the size of a response body.
func WithMaxBodyBytes(n int64) Option {
	return func(c *Client) error {
		if n <= 0 {
			return errors.New("WithMaxBodyBytes: must be positive")
		}
		c.maxBodyBytes = n
		return nil
	}
}

// WithLogger logs payment decisions; the default discards them.
func WithLogger(l *slog.Logger) Option {
	return func(c *Client) error {
		if l == nil {
			return errors.New("WithLogger: nil logger")
		}
		c.log = l
		return nil
	}
}

// New returns a Client for the gateway at baseURL ("http://127.0.0.1:5091").
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("client: base URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("client: base URL %q: want http(s)://host[:port][/path] without credentials, query or fragment", baseURL)
	}
	c := &Client{
		base:         u,
		http:         &http.Client{},
		maxPayment:   DefaultMaxPayment,
		allowed:      map[assetKey]x402.Network{},
		now:          time.Now,
		timeout:      DefaultTimeout,
		maxBodyBytes: DefaultMaxBodyBytes,
		log:          slog.New(slog.DiscardHandler),
	}
	for _, n := range []x402.Network{x402.Base, x402.BaseSepolia} {
		c.allowed[assetKey{n.ChainID, n.Asset}] = n
	}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
	}
	c.http.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c, nil
}

// CloseIdleConnections closes the HTTP client's idle connections.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// Exec posts a call to /exec/tool, paying for it if the gateway asks.
func (c *Client) Exec(ctx context.Context, call Call) (*Result, error) {
	return c.execute(ctx, "/exec/tool", call)
}

// Simulate posts a call to /exec/simulate, which is free: a 402 there is refused
// (ReasonSimulateNotFree), never paid.
func (c *Client) Simulate(ctx context.Context, call Call) (*Result, error) {
	return c.execute(ctx, "/exec/simulate", call)
}

// Tools reads GET /exec/tools.
func (c *Client) Tools(ctx context.Context) (*Tools, error) {
	var t Tools
	if err := c.getJSON(ctx, "/exec/tools", &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// Health reads GET /health.
func (c *Client) Health(ctx context.Context) (*Health, error) {
	var h Health
	if err := c.getJSON(ctx, "/health", &h); err != nil {
		return nil, err
	}
	return &h, nil
}

// Job reads GET /exec/jobs/{id}. The id must be a UUID, as the gateway issues them.
func (c *Client) Job(ctx context.Context, id string) (*Job, error) {
	if u, err := uuid.Parse(id); err != nil || u.String() != strings.ToLower(id) {
		return nil, fmt.Errorf("client: job id %q is not a UUID", id)
	}
	var j Job
	if err := c.getJSON(ctx, "/exec/jobs/"+url.PathEscape(id), &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// VerifyJob fetches a job and recomputes its proof hash: SHA-256 of the RFC 8785 canonical
// JSON of the record. It returns the job when the hash matches and the record is the job's;
// a tampered record yields an error wrapping proof.ErrMismatch.
func (c *Client) VerifyJob(ctx context.Context, id string) (*Job, error) {
	j, err := c.Job(ctx, id)
	if err != nil {
		return nil, err
	}
	if !strings.EqualFold(j.JobID, id) {
		return nil, fmt.Errorf("client: job %s: the gateway answered with job %q: %w", id, j.JobID, ErrInvalidResponse)
	}
	if len(j.Record) == 0 {
		return nil, fmt.Errorf("client: job %s has no record: %w", id, ErrInvalidResponse)
	}
	if err := proof.Verify(j.Record, j.ProofHash); err != nil {
		return nil, fmt.Errorf("client: job %s: %w", id, err)
	}
	// A genuine record of another job would hash correctly too: the record must name this job.
	var rec struct {
		JobID string `json:"jobId"`
	}
	if err := json.Unmarshal(j.Record, &rec); err != nil || !strings.EqualFold(rec.JobID, id) {
		return nil, fmt.Errorf("client: job %s: the record is of job %q: %w", id, rec.JobID, proof.ErrMismatch)
	}
	return j, nil
}

// execute runs one call: the request, and at most one paid retry.
func (c *Client) execute(ctx context.Context, path string, call Call) (*Result, error) {
	body, err := encodeCall(call)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	hdr := make(http.Header, len(call.Header)+4)
	for k, vs := range call.Header {
		hdr[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
	}
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Accept", "application/json")
	reqID := hdr.Get(HeaderRequestID)
	if reqID == "" {
		reqID = uuid.NewString()
		hdr.Set(HeaderRequestID, reqID)
	}
	if c.internalKey != "" {
		hdr.Set(HeaderInternalKey, c.internalKey)
	}

	resp, err := c.do(ctx, http.MethodPost, path, body, hdr)
	if err != nil {
		return nil, err
	}
	if resp.status != http.StatusPaymentRequired {
		return c.result(resp, reqID, nil)
	}

	// 402. Decide whether to pay at all before reading the offer.
	serverReason, serverDetail := refusalOf(resp)
	switch {
	case carriesPayment(hdr):
		return nil, &PaymentRefusedError{Reason: serverReason, Detail: "the request already carried a payment, which the server refused: " + serverDetail, Status: resp.status}
	case c.internalKey != "":
		return nil, &PaymentRefusedError{Reason: ReasonInternalKeyRefused, Detail: fmt.Sprintf("payment required although the internal key was sent (%s: %s)", serverReason, serverDetail), Status: resp.status}
	case path == "/exec/simulate":
		return nil, &PaymentRefusedError{Reason: ReasonSimulateNotFree, Detail: fmt.Sprintf("a simulation is free; the server asked for payment (%s: %s)", serverReason, serverDetail), Status: resp.status}
	case c.signer == nil:
		return nil, &PaymentRefusedError{Reason: ReasonNoSigner, Detail: "payment required and no signer is configured", Status: resp.status}
	case c.base.Scheme == "http" && !c.insecureHTTP && !isLoopbackHost(c.base.Hostname()):
		return nil, &PaymentRefusedError{Reason: ReasonInsecureTransport, Status: resp.status,
			Detail: "the offer came over plain HTTP from " + c.base.Host + ", where anyone on the path could have changed whom it pays: use https, or WithInsecureHTTP"}
	}
	o, err := parseOffer(resp.header, resp.body)
	if err != nil {
		return nil, err
	}
	choice, err := c.choose(o)
	if err != nil {
		return nil, err
	}
	name, value, pay, err := c.sign(o, choice)
	if err != nil {
		return nil, err
	}
	c.log.Info("paying with x402", "network", pay.Network, "asset", pay.Asset.Hex(), "amount", pay.Amount,
		"pay_to", pay.PayTo.Hex(), "payer", pay.Payer.Hex(), "payment_id", pay.PaymentID, "request_id", reqID)

	if err := ctx.Err(); err != nil {
		// The caller gave up while the payment was being signed: it never leaves the process.
		return nil, fmt.Errorf("client: the payment was signed but not sent: %w", err)
	}
	paid := hdr.Clone()
	paid.Set(name, value)
	return c.sendPaid(ctx, &paidRequest{base: c.base.String(), path: path, body: body, header: paid, reqID: reqID, pay: pay})
}

// paidRequest is a request that carries a signed payment, kept so that Resend can send the
// very same payment again.
type paidRequest struct {
	base   string // the gateway it was sent to: a payment is never sent to another
	path   string
	body   []byte
	header http.Header
	reqID  string
	pay    *Payment
}

// sendPaid sends a paid request once.
func (c *Client) sendPaid(ctx context.Context, pr *paidRequest) (*Result, error) {
	resp, err := c.do(ctx, http.MethodPost, pr.path, pr.body, pr.header.Clone())
	if err != nil {
		return nil, &PaymentInFlightError{Payment: pr.pay, Err: err, sent: pr}
	}
	if resp.status == http.StatusPaymentRequired {
		// Never retried: a conforming client that paid again could pay twice.
		reason, detail := refusalOf(resp)
		return nil, &PaymentRefusedError{Reason: reason, Detail: detail, Status: resp.status, Paid: true,
			Payment: pr.pay, Settlement: settlementOf(resp.header)}
	}
	return c.result(resp, pr.reqID, pr)
}

// Resend sends a paid call again with the payment it carried, never a newly signed one: the
// same PAYMENT-SIGNATURE (or X-PAYMENT), body and X-Request-ID. err is the error of the paid
// call, whose outcome is unknown: a *PaymentInFlightError (the answer was lost), or an
// *APIError with Payment set (a 503, or 409 payment_identifier_in_flight while the first is
// still running: wait RetryAfter). A gateway that already answered a payment with a
// Payment.PaymentID returns the answer it kept; without an id, a gateway that already took the
// payment refuses it again (invalid_exact_evm_nonce_already_used). Either way the
// authorization's one nonce moves the money at most once. Resend returns an error without
// sending anything when err carries no paid request, or one sent to another gateway.
func (c *Client) Resend(ctx context.Context, err error) (*Result, error) {
	var pr *paidRequest
	var inFlight *PaymentInFlightError
	var ae *APIError
	switch {
	case errors.As(err, &inFlight):
		pr = inFlight.sent
	case errors.As(err, &ae):
		pr = ae.sent
	}
	if pr == nil {
		return nil, fmt.Errorf("client: Resend: %v is not the error of a paid call", err)
	}
	if pr.base != c.base.String() {
		return nil, fmt.Errorf("client: Resend: the payment was sent to %s, not to this client's gateway", pr.base)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	c.log.Info("resending an x402 payment", "network", pr.pay.Network, "amount", pr.pay.Amount,
		"nonce", pr.pay.Nonce.Hex(), "payment_id", pr.pay.PaymentID, "request_id", pr.reqID)
	return c.sendPaid(ctx, pr)
}

// result turns the final answer of a call into a Result or an *APIError; sent is the paid
// request it answers, nil when the call was not paid.
func (c *Client) result(resp *response, reqID string, sent *paidRequest) (*Result, error) {
	var pay *Payment
	if sent != nil {
		pay = sent.pay
	}
	st := settlementOf(resp.header)
	if resp.status/100 != 2 {
		e := apiError(resp)
		e.Settlement, e.Payment, e.sent = st, pay, sent
		return nil, e
	}
	var r Result
	err := json.Unmarshal(resp.body, &r)
	switch {
	case err != nil:
		err = fmt.Errorf("client: decoding the result: %w: %w", ErrInvalidResponse, err)
	case r.JobID == "" || r.ProofHash == "":
		err = fmt.Errorf("client: the result has no jobId or proofHash: %w", ErrInvalidResponse)
	}
	if err != nil && pay != nil {
		return nil, &PaymentInFlightError{Payment: pay, Err: err, sent: sent} // it may have settled
	}
	if err != nil {
		return nil, err
	}
	r.Raw = resp.body
	r.RequestID = reqID
	if id := resp.header.Get(HeaderRequestID); id != "" {
		r.RequestID = id
	}
	r.Payment, r.Settlement = pay, st
	return &r, nil
}

// getJSON reads a GET endpoint into v.
func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	hdr := http.Header{"Accept": {"application/json"}}
	if c.internalKey != "" {
		hdr.Set(HeaderInternalKey, c.internalKey)
	}
	resp, err := c.do(ctx, http.MethodGet, path, nil, hdr)
	if err != nil {
		return err
	}
	if resp.status/100 != 2 {
		return apiError(resp)
	}
	if err := json.Unmarshal(resp.body, v); err != nil {
		return fmt.Errorf("client: GET %s: %w: %w", path, ErrInvalidResponse, err)
	}
	return nil
}

// response is a fully read, size-capped HTTP answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request and reads the whole answer under the client's body cap.
func (c *Client) do(ctx context.Context, method, path string, body []byte, hdr http.Header) (*response, error) {
	u := *c.base
	u.Path = c.base.Path + path
	u.RawPath = ""
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	req.Header = hdr
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.ContentLength > c.maxBodyBytes {
		return nil, fmt.Errorf("client: %s %s: %w: Content-Length %d exceeds %d", method, path, ErrResponseTooLarge, resp.ContentLength, c.maxBodyBytes)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: reading the body: %w", method, path, err)
	}
	if int64(len(b)) > c.maxBodyBytes {
		return nil, fmt.Errorf("client: %s %s: %w: body exceeds %d bytes", method, path, ErrResponseTooLarge, c.maxBodyBytes)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// encodeCall validates a call and encodes the request body.
func encodeCall(call Call) ([]byte, error) {
	if call.Tool == "" {
		return nil, errors.New("client: Call.Tool is required")
	}
	if call.TimeoutS < 0 || math.IsNaN(call.TimeoutS) || math.IsInf(call.TimeoutS, 0) {
		return nil, errors.New("client: Call.TimeoutS must be a non-negative number")
	}
	w := wireCall{AgentID: call.AgentID, Tool: wireTool{Name: call.Tool, Args: json.RawMessage("{}")}, DryRun: call.DryRun}
	if call.Args != nil {
		b, err := json.Marshal(call.Args)
		if err != nil {
			return nil, fmt.Errorf("client: Call.Args: %w", err)
		}
		if len(b) == 0 || b[0] != '{' {
			return nil, errors.New("client: Call.Args must encode to a JSON object")
		}
		w.Tool.Args = b
	}
	if call.TimeoutS > 0 {
		t := call.TimeoutS
		w.Tool.TimeoutS = &t
	}
	if call.Context != nil {
		b, err := json.Marshal(call.Context)
		if err != nil {
			return nil, fmt.Errorf("client: Call.Context: %w", err)
		}
		if string(b) != "null" {
			w.Context = b
		}
	}
	return json.Marshal(w)
}

// problemBody is the gateway's problem+json error body.
type problemBody struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail"`
	Code      string `json:"code"`
	Error     string `json:"error"`
	Field     string `json:"field"`
	JobID     string `json:"jobId"`
	ProofHash string `json:"proofHash"`
	RequestID string `json:"requestId"`
}

// maxDetail bounds the text an error quotes from a response.
const maxDetail = 512

// apiError reads an error answer. A body that is not problem+json is quoted, shortened.
func apiError(resp *response) *APIError {
	e := &APIError{Status: resp.status, RequestID: resp.header.Get(HeaderRequestID)}
	if s, err := strconv.Atoi(strings.TrimSpace(resp.header.Get("Retry-After"))); err == nil && s > 0 && s < 86400 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	if resp.status/100 == 3 {
		e.Detail = "redirect to " + clip(resp.header.Get("Location")) + " not followed"
		return e
	}
	var p problemBody
	if isJSON(resp.header) && json.Unmarshal(resp.body, &p) == nil {
		e.Code, e.Field, e.JobID, e.ProofHash = clip(p.Code), clip(p.Field), clip(p.JobID), clip(p.ProofHash)
		e.Detail = clip(p.Detail)
		if e.Detail == "" {
			e.Detail = clip(p.Error)
		}
		if e.RequestID == "" {
			e.RequestID = clip(p.RequestID)
		}
		return e
	}
	e.Detail = clip(string(resp.body))
	return e
}

// refusalOf reads the reason of a 402: the problem body's code when it names one, else the
// PAYMENT-REQUIRED error text, else payment_required.
func refusalOf(resp *response) (reason, detail string) {
	reason = ReasonPaymentRequired
	var p problemBody
	if isJSON(resp.header) && json.Unmarshal(resp.body, &p) == nil {
		if p.Code != "" {
			reason = clip(p.Code)
		}
		detail = clip(p.Detail)
		if detail == "" {
			detail = clip(p.Error)
		}
	}
	if v := resp.header.Get(x402.HeaderPaymentRequired); v != "" {
		if pr, err := x402.DecodePaymentRequired(v); err == nil && pr.Error != "" {
			if reason == ReasonPaymentRequired && isReasonCode(pr.Error) {
				reason = pr.Error
			}
			if detail == "" {
				detail = clip(pr.Error)
			}
		}
	}
	return reason, detail
}

// settlementOf decodes PAYMENT-RESPONSE (or the v1 X-PAYMENT-RESPONSE); nil when absent.
func settlementOf(h http.Header) *Settlement {
	v := h.Get(x402.HeaderPaymentResponse)
	if v == "" {
		v = h.Get(x402.HeaderXPaymentResponse)
	}
	if v == "" {
		return nil
	}
	sr, err := x402.DecodeSettlementResponse(v)
	if err != nil {
		return &Settlement{Status: SettlementUnknown, ErrorMessage: clip(err.Error())}
	}
	s := &Settlement{Success: sr.Success, Transaction: clip(sr.Transaction), Network: clip(sr.Network), Payer: clip(sr.Payer),
		ErrorReason: clip(sr.ErrorReason), ErrorMessage: clip(sr.ErrorMessage)}
	switch {
	case sr.Success:
		s.Status = SettlementSettled
	case sr.ErrorReason == x402.ReasonSettlementPending:
		s.Status = SettlementPending
	default:
		s.Status = SettlementFailed
	}
	return s
}

func isJSON(h http.Header) bool {
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	return err == nil && (mt == "application/json" || mt == "application/problem+json")
}

// isReasonCode reports a snake_case code, as opposed to a sentence.
func isReasonCode(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// clip shortens text from the network to maxDetail bytes of printable UTF-8, so that an error
// message cannot carry a megabyte or a terminal escape sequence.
func clip(s string) string {
	s = strings.ToValidUTF8(s, "?")
	s = textcut.Clip(s, maxDetail)
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return ' '
		}
		return r
	}, s)
}

// carriesPayment reports a request that already carries a payment credential: an x402 header,
// or an Authorization header of any scheme (the gateway reads only payment credentials there).
func carriesPayment(h http.Header) bool {
	return x402.HasCredential(h) || h.Get("Authorization") != ""
}

// isLoopbackHost reports whether host names this machine: "localhost" or a loopback address.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}
