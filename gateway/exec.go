package gateway

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/secureexec/secureexec/exec"
	"github.com/secureexec/secureexec/identity"
	"github.com/secureexec/secureexec/payments"
	"github.com/secureexec/secureexec/proof"
	"github.com/secureexec/secureexec/store"
)

// execResponse is the seed's 200 body, plus the IAM outcome in detail.
type execResponse struct {
	JobID           string           `json:"jobId"`
	Tool            string           `json:"tool"`
	DryRun          bool             `json:"dryRun"`
	Status          string           `json:"status"`
	Result          exec.Result      `json:"result"`
	IAMApproved     bool             `json:"iamApproved"`
	IAM             identity.Outcome `json:"iam"`
	ProofHash       string           `json:"proofHash"`
	PaymentProtocol string           `json:"paymentProtocol"`
	LatencyMs       int64            `json:"latencyMs"`
	Timestamp       string           `json:"timestamp"`
	SchemaVersion   string           `json:"schemaVersion"`
	Settlement      *settlementInfo  `json:"settlement,omitempty"`
}

// settlementInfo tells a paying caller where its money is: settled (with the transaction)
// or pending (with the id to poll at GET /payments/{id}).
type settlementInfo struct {
	Status      string `json:"status"`
	ID          string `json:"id,omitempty"`
	Transaction string `json:"transaction,omitempty"`
}

const (
	endpointTool     = "/exec/tool"
	endpointSimulate = "/exec/simulate"
)

func (s *Server) handleTool(w http.ResponseWriter, r *http.Request) { s.execute(w, r, endpointTool) }
func (s *Server) handleSimulate(w http.ResponseWriter, r *http.Request) {
	s.execute(w, r, endpointSimulate)
}

// execute is the one path every call takes:
// decode -> validate -> price -> pay -> IAM -> run -> seal -> audit -> respond.
func (s *Server) execute(w http.ResponseWriter, r *http.Request, endpoint string) {
	start := s.now()
	req, err := decodeExecRequest(w, r, s.cfg.MaxBodyBytes, s.cfg.MaxJSONDepth)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	dryRun := endpoint == endpointSimulate || req.DryRun == nil || *req.DryRun
	args, err := s.runner.Registry().Validate(req.Tool.Name, req.Tool.Args)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// Refuse what can never run before asking for (and claiming) a payment.
	if err := s.runner.Admissible(req.Tool.Name, dryRun); err != nil {
		s.writeError(w, r, err)
		return
	}

	mode := payments.ModeReal
	switch {
	case endpoint == endpointSimulate:
		mode = payments.ModeSimulate
	case dryRun:
		mode = payments.ModeDryRun
	}
	price := s.prices.Price(req.Tool.Name, mode, endpoint)
	ctx := r.Context()
	if !price.Free() {
		var done func()
		var handled bool
		if w, done, handled = s.replayable(w, r, price); handled {
			return
		}
		defer done()
		if _, named := w.(*captureWriter); named {
			// The payment names itself (payment-identifier): a client that hangs up resends it
			// under the same name and must get this call's result, so the client's leaving
			// does not cancel the call. The tool's own deadline still bounds it.
			ctx = context.WithoutCancel(ctx)
		}
	}
	pay, err := s.pay.authorize(ctx, r, price)
	if err != nil {
		s.metrics.payments.WithLabelValues(s.pay.label(r), "refused").Inc()
		if errors.Is(err, errPaymentRequired) || isPaymentError(err) {
			s.writePaymentRequired(w, r, price, err)
			return
		}
		s.writeError(w, r, err)
		return
	}

	agentID := req.AgentID
	if pay.protocol == protocolInternal && agentID == "" {
		agentID = s.pay.cfg.InternalAgentID
	}
	rec := &Record{
		SchemaVersion: SchemaVersion,
		JobID:         newJobID(),
		Timestamp:     formatTimestamp(start),
		Endpoint:      endpoint,
		AgentID:       agentID,
		DryRun:        dryRun,
		Context:       req.Context,
		Payment:       paymentRef(pay),
	}
	if pay.auth != nil {
		pay.auth.JobID = rec.JobID
	}
	timeout := s.runner.Limits().DefaultTimeout
	if req.Tool.TimeoutS != nil {
		timeout = s.runner.Timeout(*req.Tool.TimeoutS)
	}
	rec.Tool = RecordTool{Name: req.Tool.Name, Args: args, TimeoutMs: timeout.Milliseconds()}

	rec.IAM = s.iam.Decide(ctx, identity.Request{
		JobID: rec.JobID, AgentID: agentID, Payer: payer(pay), Tool: req.Tool.Name, DryRun: dryRun,
		PriceAtomic: price.Amount, Internal: pay.protocol == protocolInternal,
	})
	if !rec.IAM.Approved {
		rec.Status = statusDenied
		rec.Result = exec.Result{Output: []byte("null"), ExitCode: exec.ExitFailed, Simulated: dryRun,
			Error: exec.Failf("iam_denied", "%s", denialDetail(rec.IAM))}
		_, hash := s.finish(rec, start, pay)
		s.void(ctx, pay, "iam_denied")
		s.writeError(w, r, &deniedError{reason: rec.IAM.Reason, detail: denialDetail(rec.IAM), jobID: rec.JobID, proofHash: hash,
			unavailable: rec.IAM.Decision == identity.DecisionUnavailableFailedClosed})
		return
	}

	res, status, err := s.runner.Run(ctx, exec.Call{Tool: req.Tool.Name, Args: args, DryRun: dryRun, Timeout: timeout,
		Free: pay.auth == nil && pay.protocol != protocolInternal})
	if err != nil {
		s.void(ctx, pay, "not_run")
		s.writeError(w, r, err)
		return
	}
	rec.Result, rec.Status = res, status
	latency, hash := s.finish(rec, start, pay)
	s.metrics.tools.WithLabelValues(rec.Tool.Name, string(mode), rec.Status).Inc()

	// A failed tool is not charged; a completed one is settled now (or queued).
	var settled *settlementInfo
	if rec.Status != exec.StatusCompleted {
		s.void(ctx, pay, "tool_"+rec.Status)
	} else if pay.auth != nil {
		// The tool has run: its settlement goes to the end even if the client hangs up. A
		// settlement cut halfway could be recorded, and charged, yet reported not recorded.
		// Each rail bounds its own steps (the ledger's, Stripe's and the receipt's timeouts).
		st, err := pay.rail.Settle(context.WithoutCancel(ctx), pay.auth)
		if err != nil {
			if isPaymentError(err) {
				// The money cannot move (the payer spent the authorization between verify
				// and settle): the result is withheld, as x402's reference server does.
				s.metrics.payments.WithLabelValues(pay.protocol, "settlement_refused").Inc()
				s.writePaymentRequired(w, r, price, err)
				return
			}
			if errors.Is(err, payments.ErrNotRecorded) {
				// Nothing recorded means nothing to settle later: the result is withheld.
				s.log.Error("payment could not be recorded; result withheld", "job_id", rec.JobID, "err", err)
				s.metrics.payments.WithLabelValues(pay.protocol, "settlement_not_recorded").Inc()
				s.writeError(w, r, err)
				return
			}
			s.log.Error("settlement failed; the payment stays recorded for reconciliation", "job_id", rec.JobID, "err", err)
			st = &payments.Settlement{Status: payments.SettlementPending, ID: pay.auth.Reference}
		}
		addHeaders(w.Header(), st.Header)
		settled = &settlementInfo{Status: st.Status, ID: st.ID, Transaction: st.TxHash}
		s.metrics.payments.WithLabelValues(pay.protocol, "settlement_"+st.Status).Inc()
	}

	if pay.auth != nil {
		// A paid answer is the payer's own (PAYMENT-RESPONSE names them): no shared cache keeps it.
		w.Header().Set("Cache-Control", "private")
	}
	w.Header().Set(headerProofHash, hash)
	writeJSON(w, http.StatusOK, "application/json", execResponse{
		JobID: rec.JobID, Tool: rec.Tool.Name, DryRun: dryRun, Status: rec.Status, Result: rec.Result,
		IAMApproved: rec.IAM.Approved, IAM: rec.IAM, ProofHash: hash, PaymentProtocol: pay.protocol,
		LatencyMs: latency, Timestamp: rec.Timestamp, SchemaVersion: SchemaVersion, Settlement: settled,
	})
}

// void tells the rail that a verified payment will never be settled. Failing to record it
// is logged, not fatal: recovery marks stale verified payments as not charged anyway.
func (s *Server) void(ctx context.Context, pay payment, reason string) {
	if pay.auth == nil {
		return
	}
	v, ok := pay.rail.(payments.Voider)
	if !ok {
		return
	}
	if err := v.Void(context.WithoutCancel(ctx), pay.auth, reason); err != nil {
		s.log.Warn("recording an uncharged payment", "reference", pay.auth.Reference, "err", err)
	}
}

// finish seals the record and hands it to the audit log, which never blocks.
func (s *Server) finish(rec *Record, start time.Time, pay payment) (latencyMs int64, hash string) {
	canonical, hash := seal(rec)
	latencyMs = s.now().Sub(start).Milliseconds()
	s.audit.Submit(store.Entry{
		JobID: rec.JobID, Timestamp: start, CallerAgentID: rec.AgentID, ToolName: rec.Tool.Name,
		DryRun: rec.DryRun, Status: rec.Status, IAMApproved: rec.IAM.Approved, ProofHash: hash,
		LatencyMs: int(latencyMs), PaymentProtocol: pay.protocol, SchemaVersion: SchemaVersion,
		Record: canonical,
	})
	s.metrics.payments.WithLabelValues(pay.protocol, "accepted").Inc()
	return latencyMs, hash
}

func paymentRef(p payment) PaymentRef {
	ref := PaymentRef{Protocol: p.protocol, Amount: strconv.FormatUint(p.price.Amount, 10), Currency: p.price.Currency}
	if p.auth != nil {
		ref.Payer, ref.Reference = p.auth.Payer, p.auth.Reference
	}
	if p.protocol == protocolNone || p.protocol == protocolInternal {
		ref.Amount = "0"
	}
	return ref
}

func payer(p payment) string {
	if p.auth == nil {
		return ""
	}
	return p.auth.Payer
}

func isPaymentError(err error) bool {
	var pe *payments.PaymentError
	return errors.As(err, &pe)
}

func denialDetail(o identity.Outcome) string {
	d := "denied by " + o.Source + ": " + o.Reason
	for _, v := range o.Violations {
		d += "; " + v
	}
	return d
}

// handleJob answers GET /exec/jobs/{jobId} with the stored record and its proof hash.
func (s *Server) handleJob(w http.ResponseWriter, r *http.Request) {
	id := muxVar(r, "jobId")
	if _, err := uuid.Parse(id); err != nil {
		s.writeError(w, r, badRequest("invalid_job_id", "jobId", "jobId must be a UUID"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.StoreTimeout)
	defer cancel()
	e, err := s.audit.Get(ctx, id)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("reading a job", "job_id", id, "err", err)
			err = errJobStoreUnavailable
		}
		s.writeError(w, r, err)
		return
	}
	// Postgres keeps the record as jsonb (members reordered, numbers written out in full):
	// serve the bytes the proof hash was computed over.
	if canonical, err := proof.Canonicalize(e.Record); err == nil {
		e.Record = canonical
	}
	writeJSON(w, http.StatusOK, "application/json", e)
}

// newJobID returns a version 7 UUID: its first 48 bits are the time in milliseconds, so
// successive jobs land at the right edge of secureexec_calls' job_id index instead of on
// a random page of it, which keeps the index's working set small as the table grows. The
// remaining 74 bits (62 of them random) still make a job id impossible to guess; the time
// it gives away is in the record anyway.
func newJobID() string { return uuid.Must(uuid.NewV7()).String() }
