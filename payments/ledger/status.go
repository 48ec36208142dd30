package ledger

import (
	"fmt"
	"slices"
)

// Status is where a payment is on its way to settlement.
type Status string

// The statuses of a payment. The only legal moves are listed in transitions.
const (
	// StatusVerified: the credential is verified and its nonce claimed; the tool has not run.
	StatusVerified Status = "verified"
	// StatusNotCharged: the call ended without a result worth paying for (tool failed, IAM
	// denied, a refused dry run); the authorization is never settled.
	StatusNotCharged Status = "not_charged"
	// StatusQueued: waiting for the batch worker.
	StatusQueued Status = "queued"
	// StatusSubmitted: the signed transaction (or the batch's) is recorded and being broadcast.
	StatusSubmitted Status = "submitted"
	// StatusSettling: handed to a remote facilitator, whose answer is not recorded yet. There
	// is no transaction of ours to re-broadcast: recovery asks the chain whether the
	// authorization was used, and otherwise asks the facilitator again (one EIP-3009 nonce
	// can move the money only once, so asking again never charges twice).
	StatusSettling Status = "settling"
	// StatusPending: the receipt wait timed out. Not failed: reconciled against the chain later.
	StatusPending Status = "pending"
	// StatusSettled: the receipt holds the Transfer log; the money moved.
	StatusSettled Status = "settled"
	// StatusFailed: definitively reverted; ErrorReason says why.
	StatusFailed Status = "failed"
)

// transitions is the state machine: from -> the statuses it may move to. migrations/
// 002_payments.sql enforces the same edges in a trigger (TestTransitionsMatchTrigger).
var transitions = map[Status][]Status{
	// settled straight from verified or queued: by a transaction not ours, which used the
	// authorization before our first send (migrations/009); it must name that transaction.
	StatusVerified:  {StatusNotCharged, StatusQueued, StatusSubmitted, StatusSettling, StatusSettled},
	StatusQueued:    {StatusSubmitted, StatusSettling, StatusNotCharged, StatusSettled}, // not charged: the token refused it before broadcast
	StatusSubmitted: {StatusSettled, StatusPending, StatusFailed},
	StatusSettling:  {StatusSettled, StatusPending, StatusFailed, StatusNotCharged}, // not charged: refused, nothing sent
	StatusPending:   {StatusSettled, StatusFailed},
}

// entryStatuses are where a payment may start (Create): verified, recorded before its call,
// or, where a payment is recorded only once its call is done (batch mode), queued or
// not_charged. migrations/006_payments_late_entry.sql allows the same ones.
var entryStatuses = []Status{StatusVerified, StatusQueued, StatusNotCharged}

// AllStatuses lists every status, in the order a payment meets them.
var AllStatuses = []Status{StatusVerified, StatusNotCharged, StatusQueued, StatusSubmitted, StatusSettling, StatusPending, StatusSettled, StatusFailed}

// Valid reports whether s is one of the statuses.
func (s Status) Valid() bool { return slices.Contains(AllStatuses, s) }

// Terminal reports whether no move leaves s.
func (s Status) Terminal() bool { return s.Valid() && len(transitions[s]) == 0 }

// CanTransition reports whether a payment may move from one status to the other.
func CanTransition(from, to Status) bool { return slices.Contains(transitions[from], to) }

// spoolable reports whether a move may be recorded in the local spool while its payment
// exists only there: moves after which no money can move without the database. A move to
// submitted must reach Postgres before the transaction is broadcast, so that any replica's
// recovery can find and re-broadcast it.
func spoolable(to Status) bool { return to == StatusNotCharged || to == StatusQueued }

// checkTransition is the one place the state machine is checked, for every move the ledger
// makes (Transition, TransitionBatch, ClaimQueued, spool replay): every listed from-status
// must have an edge to to, and the patch must carry what to needs.
func checkTransition(from []Status, to Status, patch Patch) error {
	if !to.Valid() {
		return fmt.Errorf("ledger: unknown status %q: %w", to, ErrIllegalTransition)
	}
	if len(from) == 0 {
		return fmt.Errorf("ledger: move to %s from no status: %w", to, ErrIllegalTransition)
	}
	for _, f := range from {
		if !CanTransition(f, to) {
			return fmt.Errorf("ledger: %s -> %s: %w", f, to, ErrIllegalTransition)
		}
	}
	if err := patch.validate(); err != nil {
		return err
	}
	switch to {
	case StatusSubmitted:
		// Sync settlement records its own signed transaction; a batch records the batch.
		if len(patch.RawTx) == 0 && patch.BatchID == [16]byte{} {
			return invalid("a move to submitted needs the signed transaction (RawTx) or a BatchID")
		}
	case StatusFailed:
		if patch.ErrorReason == "" {
			return invalid("a move to failed needs an ErrorReason")
		}
	case StatusSettled:
		for _, f := range from {
			if (f == StatusVerified || f == StatusQueued) && patch.TxHash == "" {
				return invalid("a move from %s to settled needs the transaction that moved the money (TxHash)", f)
			}
		}
	}
	return nil
}
