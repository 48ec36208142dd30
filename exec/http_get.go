package exec

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Defaults of HTTPGetConfig.
const (
	HTTPGetDefaultMaxBodyBytes = 1 << 20
	HTTPGetDefaultMaxRedirects = 5
)

const (
	httpGetMaxHeaderBytes = 32 << 10 // response header block
	httpGetMaxHeaderValue = 1024     // each returned header value
	httpGetUserAgent      = "SecureExec-http_get/1"
)

// httpGetResponseHeaders are the response headers returned to the caller; others (cookies,
// server banners, internal routing headers) are dropped.
var httpGetResponseHeaders = []string{
	"age", "cache-control", "content-language", "content-length", "content-type",
	"date", "etag", "expires", "last-modified", "retry-after", "vary",
}

// HTTPGetResolver resolves a host name; *net.Resolver satisfies it. Tests inject a fake so
// that no DNS traffic leaves the process.
type HTTPGetResolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// HTTPGetConfig configures http_get. The zero value is the safe default.
type HTTPGetConfig struct {
	MaxBodyBytes  int64          // response body cap; 0 means 1 MiB
	MaxRedirects  int            // 0 means 5; negative means a 3xx is returned, not followed
	AllowedPorts  []uint16       // destination ports; empty means 80 and 443
	AllowPrefixes []netip.Prefix // operator allow-list, checked before the deny lists
	Resolver      HTTPGetResolver
	// Observe, if set, is called at connect time with every destination and the policy's
	// verdict (nil means allowed); for metrics and tests.
	Observe func(dst netip.AddrPort, verdict error)
}

// HTTPGet is the http_get tool: a GET request through the SSRF-safe dialer.
type HTTPGet struct {
	cfg    HTTPGetConfig
	policy *ssrfPolicy
	dialer *ssrfDialer
	client *http.Client
}

// NewHTTPGet returns the http_get tool. Zero fields of cfg take their defaults.
func NewHTTPGet(cfg HTTPGetConfig) *HTTPGet {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = HTTPGetDefaultMaxBodyBytes
	}
	if cfg.MaxRedirects == 0 {
		cfg.MaxRedirects = HTTPGetDefaultMaxRedirects
	}
	if len(cfg.AllowedPorts) == 0 {
		cfg.AllowedPorts = []uint16{80, 443}
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	h := &HTTPGet{cfg: cfg, policy: newSSRFPolicy(cfg.AllowedPorts, cfg.AllowPrefixes)}
	h.dialer = newSSRFDialer(h.policy, cfg.Resolver, cfg.Observe)
	transport := &http.Transport{
		Proxy:                  nil, // never route through a proxy named by the environment
		DialContext:            h.dialer.DialContext,
		DisableKeepAlives:      true, // no connection is shared between calls (or tenants)
		MaxResponseHeaderBytes: httpGetMaxHeaderBytes,
		TLSHandshakeTimeout:    10 * time.Second,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:      true,
	}
	h.client = &http.Client{Transport: transport, CheckRedirect: h.checkRedirect}
	return h
}

// Name implements Tool.
func (h *HTTPGet) Name() string { return "http_get" }

// Description implements Tool.
func (h *HTTPGet) Description() string {
	return "HTTP GET request to a public http(s) URL; internal and special-purpose addresses are refused"
}

// Schema implements Tool.
func (h *HTTPGet) Schema() json.RawMessage { return httpGetSchema }

var httpGetSchema = json.RawMessage(`{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "required": ["url"],
  "properties": {
    "url": {"type": "string", "minLength": 8, "maxLength": 2048, "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"},
    "headers": {
      "type": "object",
      "description": "request headers; only these names are allowed",
      "additionalProperties": false,
      "properties": {
        "accept":            {"type": "string", "maxLength": 256, "pattern": "^[\\x20-\\x7e]*$"},
        "accept-language":   {"type": "string", "maxLength": 256, "pattern": "^[\\x20-\\x7e]*$"},
        "if-none-match":     {"type": "string", "maxLength": 256, "pattern": "^[\\x20-\\x7e]*$"},
        "if-modified-since": {"type": "string", "maxLength": 64, "pattern": "^[\\x20-\\x7e]*$"}
      }
    }
  }
}`)

type httpGetArgs struct {
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers"`
}

// HTTPGetOutput is the result of a real GET.
type HTTPGetOutput struct {
	Status       int               `json:"status"`
	Headers      map[string]string `json:"headers"`      // allow-listed, lower-case names
	Body         string            `json:"body"`         // text, or base64 when bodyEncoding says so
	BodyEncoding string            `json:"bodyEncoding"` // "utf8" or "base64"
	BodyBytes    int               `json:"bodyBytes"`    // raw bytes returned (after the cap)
	Truncated    bool              `json:"truncated"`    // the body was longer than the cap
	FinalURL     string            `json:"finalUrl"`     // after redirects
}

// HTTPGetSimulation is the dry-run result: the seed's shape plus the request it stands for.
type HTTPGetSimulation struct {
	Status       int               `json:"status"`
	Body         string            `json:"body"`
	Headers      map[string]string `json:"headers"`
	WouldRequest HTTPGetPlan       `json:"wouldRequest"`
}

// HTTPGetPlan describes the request real mode would send and the limits it would run under.
type HTTPGetPlan struct {
	Method       string            `json:"method"`
	URL          string            `json:"url"`
	Host         string            `json:"host"`
	Port         uint16            `json:"port"`
	Headers      map[string]string `json:"headers"`
	MaxBodyBytes int64             `json:"maxBodyBytes"`
	MaxRedirects int               `json:"maxRedirects"`
	AddressCheck string            `json:"addressCheck"`
}

// Simulate validates the URL against the destination policy (an IP literal is judged now; a
// host name is resolved and judged only at connect time, so dry-run sends no DNS query) and
// describes the request.
func (h *HTTPGet) Simulate(_ context.Context, raw json.RawMessage) (any, error) {
	a, u, port, err := h.prepare(raw)
	if err != nil {
		return nil, err
	}
	check := "host name: resolved and each address checked at connect time"
	if _, err := netip.ParseAddr(u.Hostname()); err == nil {
		check = "IP literal: checked and allowed"
	}
	return HTTPGetSimulation{
		Status:  http.StatusOK,
		Body:    "Simulated GET " + a.URL,
		Headers: map[string]string{},
		WouldRequest: HTTPGetPlan{
			Method: http.MethodGet, URL: u.String(), Host: u.Hostname(), Port: port,
			Headers: h.requestHeaders(a), MaxBodyBytes: h.cfg.MaxBodyBytes,
			MaxRedirects: max(h.cfg.MaxRedirects, 0), AddressCheck: check,
		},
	}, nil
}

// Run performs the GET. Refusals are ToolErrors with code destination_not_allowed.
func (h *HTTPGet) Run(ctx context.Context, raw json.RawMessage) (any, error) {
	a, u, _, err := h.prepare(raw)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(withSSRFCall(ctx), http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, Failf("invalid_url", "%v", err)
	}
	for k, v := range h.requestHeaders(a) {
		req.Header.Set(k, v)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, httpGetFailure(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// The body would be the raw connection, which the transport no longer closes at the
		// deadline; a GET never asks for an upgrade anyway.
		return nil, Failf("request_failed", "the server switched protocols (101) on a request that asked for no upgrade")
	}

	body, err := io.ReadAll(io.LimitReader(resp.Body, h.cfg.MaxBodyBytes+1))
	if err != nil {
		return nil, httpGetFailure(ctx, err)
	}
	truncated := int64(len(body)) > h.cfg.MaxBodyBytes
	if truncated {
		body = body[:h.cfg.MaxBodyBytes]
	}
	text, enc := httpGetEncodeBody(body, truncated)
	out := HTTPGetOutput{
		Status:       resp.StatusCode,
		Headers:      httpGetPickHeaders(resp.Header),
		BodyEncoding: enc,
		BodyBytes:    len(body),
		Truncated:    truncated,
		FinalURL:     resp.Request.URL.String(),
	}
	if err := out.fitBody(body, text, outputCap(ctx)); err != nil {
		return nil, err
	}
	return out, nil
}

// fitBody sets o.Body to text, cut if need be so that the encoded output stays within the
// runner's cap: JSON makes a body up to six times longer (<, >, & and control characters are
// escaped) and base64 a third longer, so a body within MaxBodyBytes can still be too large,
// and the caller should get a truncated page rather than output_too_large.
func (o *HTTPGetOutput) fitBody(body []byte, text string, capBytes int) error {
	shell, err := json.Marshal(o) // Body is still empty; cutting only shortens the other fields
	if err != nil {
		return err
	}
	room := capBytes - len(shell)
	if room < 0 {
		return errOutputTooLarge(capBytes)
	}
	if o.BodyEncoding == "base64" {
		if n := room / 4 * 3; n < len(body) {
			body, o.BodyBytes, o.Truncated = body[:n], n, true
		}
		o.Body = base64.StdEncoding.EncodeToString(body)
		return nil
	}
	size := 0
	for i, r := range text {
		if size += httpGetJSONLen(r); size > room {
			text, o.Truncated = text[:i], true
			break
		}
	}
	// Not len(body): a character that the cap cut in two is not in text.
	o.Body, o.BodyBytes = text, len(text)
	return nil
}

// httpGetJSONLen is how many bytes encoding/json writes for r inside a string.
func httpGetJSONLen(r rune) int {
	switch r {
	case '"', '\\', '\b', '\f', '\n', '\r', '\t':
		return 2
	case '<', '>', '&', '\u2028', '\u2029':
		return 6
	}
	if r < 0x20 {
		return 6
	}
	return utf8.RuneLen(r)
}

func (h *HTTPGet) prepare(raw json.RawMessage) (httpGetArgs, *url.URL, uint16, error) {
	var a httpGetArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return a, nil, 0, Failf("invalid_args", "%v", err)
	}
	u, port, err := h.checkURL(a.URL)
	return a, u, port, err
}

func (h *HTTPGet) requestHeaders(a httpGetArgs) map[string]string {
	hdr := map[string]string{"user-agent": httpGetUserAgent, "accept": "*/*"}
	for k, v := range a.Headers {
		hdr[strings.ToLower(k)] = v
	}
	return hdr
}

// checkURL is the static half of the policy, applied to the first URL and to every redirect.
func (h *HTTPGet) checkURL(raw string) (*url.URL, uint16, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, 0, Failf("invalid_url", "%v", err)
	}
	deny := func(format string, args ...any) error {
		return Failf("destination_not_allowed", "%s: %s", httpGetRedact(u), fmt.Sprintf(format, args...))
	}
	u.Scheme = strings.ToLower(u.Scheme)
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, 0, deny("scheme %q is not allowed (http and https only)", u.Scheme)
	}
	if u.User != nil {
		return nil, 0, deny("credentials in the URL are not allowed")
	}
	if u.Opaque != "" || u.Hostname() == "" {
		return nil, 0, Failf("invalid_url", "%s: the URL has no host", httpGetRedact(u))
	}
	port := uint16(80)
	if u.Scheme == "https" {
		port = 443
	}
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return nil, 0, Failf("invalid_url", "%s: invalid port %q", httpGetRedact(u), p)
		}
		port = uint16(n)
	}
	host := u.Hostname()
	if !isASCIIHost(host) {
		// net/http looks up and dials a non-ASCII name in its IDNA Lookup form ("ⓛⓞⓒⓐⓛⓗⓞⓢⓣ"
		// is "localhost", fullwidth digits are an address): checked, and shown by a dry run,
		// in the form that would be dialled.
		ascii, err := idna.Lookup.ToASCII(host)
		if err != nil {
			return nil, 0, Failf("invalid_url", "%s: the host is not a valid internationalized name: %v", httpGetRedact(u), err)
		}
		host = ascii
		u.Host = host
		if p := u.Port(); p != "" {
			u.Host = net.JoinHostPort(host, p)
		}
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		if err := h.policy.check(netip.AddrPortFrom(addr, port)); err != nil {
			return nil, 0, deny("%s", err.Error())
		}
	} else {
		if err := h.policy.checkPort(host, port); err != nil {
			return nil, 0, deny("%s", err.Error())
		}
		if reason := httpGetHostReason(host); reason != "" {
			return nil, 0, deny("host %q: %s", host, reason)
		}
	}
	u.Fragment, u.RawFragment = "", ""
	return u, port, nil
}

// httpGetHostReason refuses host names that are not plain DNS names: localhost (RFC 6761),
// and numeric forms such as 2130706433, 0x7f.1 or 127.1 that some resolvers turn into
// internal addresses (the WHATWG "ends in a number" rule).
func httpGetHostReason(host string) string {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if len(h) > 253 {
		return "host name is too long"
	}
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return "localhost names are not allowed"
	}
	last := h[strings.LastIndexByte(h, '.')+1:]
	if last == "" {
		return "empty label"
	}
	numeric := strings.Trim(last, "0123456789") == ""
	if strings.HasPrefix(last, "0x") && strings.Trim(last[2:], "0123456789abcdef") == "" {
		numeric = true
	}
	if numeric {
		return "numeric host that is not a canonical IP address"
	}
	return ""
}

func (h *HTTPGet) checkRedirect(req *http.Request, via []*http.Request) error {
	if h.cfg.MaxRedirects < 0 {
		return http.ErrUseLastResponse
	}
	if len(via) > h.cfg.MaxRedirects {
		return Failf("too_many_redirects", "stopped after %d redirects", h.cfg.MaxRedirects)
	}
	u, _, err := h.checkURL(req.URL.String())
	if err != nil {
		return err
	}
	req.URL = u
	return nil
}

// httpGetFailure turns a client error into the tool's error. A deadline stays a wrapped
// context error so that the runner reports a timeout.
func httpGetFailure(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("http_get: %w", ctxErr)
	}
	var te *ToolError
	var denied *ssrfDeniedError
	var lookup *ssrfLookupError
	var certErr *tls.CertificateVerificationError
	var hostErr x509.HostnameError
	var authErr x509.UnknownAuthorityError
	var recErr tls.RecordHeaderError
	var opErr *net.OpError
	switch {
	case errors.As(err, &te):
		return te
	case errors.As(err, &denied):
		return Failf("destination_not_allowed", "%s", denied.Error())
	case errors.As(err, &lookup):
		return Failf("dns_lookup_failed", "%s", lookup.Error())
	case errors.As(err, &certErr), errors.As(err, &hostErr), errors.As(err, &authErr), errors.As(err, &recErr):
		return Failf("tls_error", "%v", err)
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return Failf("connection_failed", "%v", err)
	case strings.Contains(err.Error(), "response headers exceeded"),
		strings.Contains(err.Error(), "response header list larger than advertised limit"):
		// net/http reports the header cap only as text, over HTTP/1.1 and over HTTP/2.
		return Failf("response_headers_too_large", "the response headers exceed %d bytes", httpGetMaxHeaderBytes)
	default:
		return Failf("request_failed", "%v", err)
	}
}

// httpGetEncodeBody returns the body as text when it is valid UTF-8 without NUL, else base64.
// A cap that cut a multi-byte character does not force base64: the partial character is
// dropped instead.
func httpGetEncodeBody(b []byte, truncated bool) (string, string) {
	text := b
	if truncated && !utf8.Valid(text) {
		i := len(text) - 1
		for i > 0 && len(text)-i < utf8.UTFMax && !utf8.RuneStart(text[i]) {
			i--
		}
		if i >= 0 && !utf8.FullRune(text[i:]) {
			text = text[:i]
		}
	}
	if utf8.Valid(text) && bytes.IndexByte(text, 0) < 0 {
		return string(text), "utf8"
	}
	return base64.StdEncoding.EncodeToString(b), "base64"
}

func httpGetPickHeaders(h http.Header) map[string]string {
	out := map[string]string{}
	for _, name := range httpGetResponseHeaders {
		vals := h.Values(name)
		if len(vals) == 0 {
			continue
		}
		v := strings.ToValidUTF8(strings.Join(vals, ", "), "\uFFFD")
		v = strings.ReplaceAll(v, "\x00", "")
		if len(v) > httpGetMaxHeaderValue {
			v = strings.ToValidUTF8(v[:httpGetMaxHeaderValue], "")
		}
		out[name] = v
	}
	return out
}

// httpGetRedact prints a URL without credentials, for error messages.
func httpGetRedact(u *url.URL) string {
	if u.User == nil {
		return u.String()
	}
	c := *u
	c.User = nil
	return c.String()
}

// isASCIIHost reports whether host needs no IDNA mapping.
func isASCIIHost(host string) bool {
	for i := 0; i < len(host); i++ {
		if host[i] >= 0x80 {
			return false
		}
	}
	return true
}
