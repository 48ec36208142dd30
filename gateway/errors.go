package gateway

import (
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/secureexec/secureexec/exec"
	"github.com/secureexec/secureexec/internal/textcut"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/payments/ledger"
	"github.com/secureexec/secureexec/payments/mpp"
	"github.com/secureexec/secureexec/store"
)

// problem is an RFC 9457 problem+json body. Error repeats Detail for clients of the
// original API, which read an "error" string.
type problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	Code      string `json:"code"`
	Error     string `json:"error"`
	Field     string `json:"field,omitempty"`
	JobID     string `json:"jobId,omitempty"`
	ProofHash string `json:"proofHash,omitempty"`
	RequestID string `json:"requestId,omitempty"`
}

// deniedError is a call refused by IAM; it was sealed and audited like any other.
// unavailable: no verdict was given (EP out of reach, failing closed), so the refusal is for
// now only.
type deniedError struct {
	reason      string
	detail      string
	jobID       string
	proofHash   string
	unavailable bool
}

func (e *deniedError) Error() string {
	if e.unavailable {
		return "iam_unavailable: " + e.reason
	}
	return "iam_denied: " + e.reason
}

// errInternal is what an unexpected failure (a bug, a recovered panic) becomes.
var errInternal = errors.New("internal_error")

// errJobStoreUnavailable means the audit store could not be read in time.
var errJobStoreUnavailable = errors.New("audit_store_unavailable")

// classify is the one place where an error becomes an HTTP status, a reason code and a
// Retry-After. Handlers never pick statuses themselves.
func classify(err error) (status int, code, field string, retryAfter int) {
	var (
		tooBig  *http.MaxBytesError
		reqErr  *requestError
		argsErr *exec.ArgsError
		payErr  *payments.PaymentError
		denied  *deniedError
	)
	switch {
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, "body_too_large", "", 0
	case errors.As(err, &reqErr):
		return http.StatusBadRequest, reqErr.Code, reqErr.Field, 0
	case errors.Is(err, errBodyTimeout):
		return http.StatusRequestTimeout, "body_timeout", "", 0
	case errors.Is(err, errUnsupportedMediaType):
		return http.StatusUnsupportedMediaType, "unsupported_media_type", "", 0
	case errors.As(err, &argsErr):
		return http.StatusBadRequest, "invalid_args", argsField(argsErr.Field), 0
	case errors.Is(err, exec.ErrUnknownTool):
		return http.StatusBadRequest, "unknown_tool", "tool.name", 0
	case errors.Is(err, exec.ErrDryRunOnly):
		return http.StatusBadRequest, "dry_run_only", "dryRun", 0
	case errors.Is(err, exec.ErrToolBlocked):
		return http.StatusForbidden, "tool_blocked", "tool.name", 0
	case errors.As(err, &denied) && denied.unavailable:
		return http.StatusServiceUnavailable, "iam_unavailable", "", 5
	case errors.As(err, &denied):
		return http.StatusForbidden, "iam_denied", "", 0
	case errors.As(err, &payErr) && payErr.Rail == mpp.RailName && mpp.Status(payErr.Reason) < 500:
		// The Payment scheme's own statuses (400 for method-unsupported and bad-request); its
		// kebab-case slug becomes a snake_case code, and stays whole in the problem type.
		return mpp.Status(payErr.Reason), strings.ReplaceAll(payErr.Reason, "-", "_"), "", 0
	case errors.As(err, &payErr):
		return http.StatusPaymentRequired, payErr.Reason, "", 0
	case errors.Is(err, errPaymentRequired):
		return http.StatusPaymentRequired, "payment_required", "", 0
	case errors.Is(err, payments.ErrUnavailable):
		return http.StatusServiceUnavailable, "payment_backend_unavailable", "", 2
	case errors.Is(err, exec.ErrSandboxBusy):
		return http.StatusServiceUnavailable, "sandbox_busy", "", 1
	case errors.Is(err, errJobStoreUnavailable):
		return http.StatusServiceUnavailable, "audit_store_unavailable", "", 2
	case errors.Is(err, ledger.ErrIdempotencyConflict):
		return http.StatusConflict, "payment_identifier_conflict", "", 0
	case errors.Is(err, ledger.ErrInFlight):
		return http.StatusConflict, "payment_identifier_in_flight", "", ledger.InFlightRetryAfter
	case errors.Is(err, errPaymentNotFound):
		return http.StatusNotFound, "payment_not_found", "", 0
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound, "job_not_found", "", 0
	case errors.Is(err, errRouteNotFound):
		return http.StatusNotFound, "not_found", "", 0
	case errors.Is(err, errMethodNotAllowed):
		return http.StatusMethodNotAllowed, "method_not_allowed", "", 0
	default:
		// Never a 500: an unexpected failure is reported as temporary.
		return http.StatusServiceUnavailable, "internal_error", "", 1
	}
}

// argsField turns the JSON pointer of a bad argument ("/items/3/name") into the dotted
// field name the rest of the API uses ("tool.args.items.3.name").
func argsField(pointer string) string {
	f := "tool.args"
	for _, seg := range strings.Split(strings.Trim(pointer, "/"), "/") {
		if seg != "" {
			f += "." + strings.NewReplacer("~1", "/", "~0", "~").Replace(seg)
		}
	}
	return f
}

// writeError answers with the problem+json body for err.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code, field, retryAfter := classify(err)
	p := problem{
		Type:      "urn:secureexec:problem:" + code,
		Title:     http.StatusText(status),
		Status:    status,
		Code:      code,
		Field:     textcut.Clip(field, maxProblemField),
		RequestID: w.Header().Get(headerRequestID),
	}
	p.Detail = err.Error()
	var denied *deniedError
	if errors.As(err, &denied) {
		p.Detail = denied.detail
		p.JobID, p.ProofHash = denied.jobID, denied.proofHash
	}
	switch {
	case code == "internal_error":
		s.log.Error("unexpected failure", "err", err, "path", r.URL.Path, "request_id", p.RequestID)
		p.Detail = "an unexpected error occurred; it has been logged, retry later"
	case status >= 500:
		// A backend's error names where it is (a node's URL, its API key in the path; the
		// address dialled): the payer reads what failed, the operator's log where.
		s.log.Warn("request refused: a backend is out of reach", "code", code, "err", err, "path", r.URL.Path, "request_id", p.RequestID)
		p.Detail = hideEndpoints(p.Detail)
	default:
		s.log.Debug("request refused", "code", code, "status", status, "err", err)
	}
	p.Detail = textcut.Clip(p.Detail, maxProblemDetail)
	p.Error = p.Detail
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	}
	writeJSON(w, status, "application/problem+json", p)
}

// endpointPattern matches what names a place in an error's text: a URL of any scheme (with
// its credentials, path and query), a bracketed IPv6 address, an IPv4 address, each with its
// port.
var endpointPattern = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"';,]+|\[[0-9a-fA-F:.%]+\](:\d+)?|\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b`)

// hideEndpoints replaces every URL and address in detail with "<endpoint>".
func hideEndpoints(detail string) string {
	return endpointPattern.ReplaceAllLiteralString(detail, "<endpoint>")
}

// A problem's field and detail may quote the request (a member name, a path to one): they are
// cut past these lengths, so that a refusal stays small whatever the request held.
const (
	maxProblemField  = 256
	maxProblemDetail = 1024
)

// writeJSON encodes v as the whole response. Encoding our own types cannot fail; a
// failure to write means the client went away, and there is nobody left to tell.
func writeJSON(w http.ResponseWriter, status int, contentType string, v any) {
	b, err := marshalResponse(v)
	if err != nil {
		slog.Error("encoding a response", "err", err)
		status, b = http.StatusServiceUnavailable, []byte(`{"code":"internal_error","error":"response encoding failed"}`)
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
