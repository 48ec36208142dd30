// Package ledger is the durable record the payment rails share: nonce claims (Claims), the
// state of every paid call (Ledger), and the payment-identifier store (Idempotency), in
// Postgres (migrations 002_payments and 003_payment_batches) with Redis in front of the
// claims; refunds and disputes reported after a call, and the payers they flag (marks.go,
// migration 004_payment_marks). Gateway replicas keep no payment state of their own: any
// number of them can run against one Postgres and one Redis (Cluster included) without two of
// them ever using one credential or moving one payment.
//
// A payment moves along one state machine, checked in Go (checkTransition) and again in SQL
// (every move is UPDATE ... WHERE status = ANY(allowed from), and a trigger refuses any other
// edge):
//
//	verified  -> not_charged | queued | submitted | settling
//	queued    -> submitted | settling | not_charged
//	submitted -> settled | pending | failed
//	settling  -> settled | pending | failed | not_charged   (a remote facilitator settles)
//	pending   -> settled | failed
//
// A payment starts verified, recorded before its call. Batch mode records it only once the call
// is done, and it then starts queued or not_charged (entryStatuses, migration 006): its nonce
// was claimed before any work all the same, and a crash before the row is written leaves
// nothing to charge, which is what recovery makes of a verified payment whose call never ended.
//
// # When Postgres is away
//
// Some writes can wait on local disk and some cannot. The rule: an operation may be spooled
// only if no other replica could act on what it leaves unsaid.
//
//	operation                   Postgres unreachable
//	Claims.Claim                succeeds on Redis's word; the nonce row is spooled
//	Ledger.Create               spooled (nil error): the payment exists only on this replica
//	                            until replayed, so no other replica can see or move it
//	Ledger.Transition           of a payment still in this replica's spool, to not_charged or
//	                            queued: spooled after its earlier operations, in order, and
//	                            replayed with its create, in one transaction (once the create
//	                            is replayed, the payment's moves wait for Postgres);
//	                            any other move (to submitted above all: the signed transaction
//	                            must be in Postgres before it is broadcast, where every
//	                            replica's recovery can find it): ErrUnavailable, fail closed
//	Ledger.Get, GetByNonceKey   answered from the spool for a spooled payment, else ErrUnavailable
//	Ledger.ClaimQueued, ClaimQueuedSettling, ListRecoverable, RecordAttempt, TransitionBatch, RecordBatchTx,
//	TransitionReplacing, MoveBatch, GetBatch, RunExclusive, purges, MarkPayment, Marks, FlagPayer, Flagged
//	                            ErrUnavailable
//	Idempotency.*               ErrUnavailable: without the store a resend cannot be told apart
//
// A sync-settling rail whose move to submitted fails with ErrUnavailable can fall back to
// queued (which spools) and answer settlement pending, where a batch worker settles the
// queue: it does once Postgres is back. Without one the call is refused instead.
//
// The spool is a directory of JSON-lines segments, fsynced per operation, replayed in order by
// the Ledger's goroutine with backoff. Replay is idempotent: each operation carries an id
// recorded in payment_spool_log in the same transaction that applies it, so a segment replayed
// twice applies nothing twice. Creates are INSERT ... ON CONFLICT DO NOTHING; a move applies
// only if the payment is still in an allowed from-status. What cannot be applied (the payment
// moved on meanwhile, a nonce that another replica recorded with another claim) is recorded in
// payment_spool_log as rejected, with the operation, and logged as an error; a line that cannot
// even be decoded goes to ledger-unreadable.jsonl beside the segments.
package ledger
