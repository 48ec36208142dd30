package ledger

import (
	"bytes"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// containsNUL is the reference for hasNULEscape: decode the document and look for a NUL in
// any string or member name.
func containsNUL(v any) bool {
	switch x := v.(type) {
	case string:
		return strings.IndexByte(x, 0) >= 0
	case []any:
		for _, e := range x {
			if containsNUL(e) {
				return true
			}
		}
	case map[string]any:
		for k, e := range x {
			if strings.IndexByte(k, 0) >= 0 || containsNUL(e) {
				return true
			}
		}
	}
	return false
}

// payloadCorpus is a set of payloads near every edge of what JSONB holds.
var payloadCorpus = []string{
	`{}`, `{"a":"\u0000"}`, `{"a":"\\u0000"}`, `{"\u0000":1}`, `{"a":"\\\u0000"}`, `[1]`, `{"a":`, `{"a":"\\\\u0000"}`,
	` {"n":1e400}`, `{"n":1e300}`, `{"n":-1E-300}`, `{"n":1e+301}`, `{"s":"\ud800"}`, `{"s":"\ud800\udc00"}`,
	`{"s":"\udc00"}`, `{"s":"\ud800x"}`, `{"s":"\ud800\n"}`, `{"s":"\ud800\u0041"}`, `{"s":"\udbff\udfff"}`,
	`{"s":"\u00e9\u20ac"}`, "{\"s\":\"\xff\"}", `{"n":0.000000000000000000000000000000000000000000000000000000000000001}`,
	`{"n":12345678901234567890123456789012345678901234567890123456789012345}`, `{"a":{"b":[{"c":"\u0000"}]}}`,
	`{"a":1,"a":2}`, `{"k\"ey":"v\\"}`,
}

// The payload is the rail's rendering of a client's credential: checkPayload must refuse
// everything that is not a JSON object or holds a NUL, whatever the bytes, and never panic.
// (That what it accepts Postgres accepts is TestPayloadCheckIsSoundForJSONB, live.)
func FuzzCheckPayload(f *testing.F) {
	for _, s := range payloadCorpus {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := checkPayload(b)
		var v any
		if json.Unmarshal(b, &v) != nil || len(b) > MaxPayloadBytes || !utf8.Valid(b) {
			if err == nil {
				t.Fatalf("accepted %q", b)
			}
			return
		}
		if _, isObject := v.(map[string]any); (!isObject || containsNUL(v)) && err == nil {
			t.Fatalf("accepted %q", b)
		}
	})
}

// Spool lines are read back after crashes: any bytes must decode to a valid operation or be
// refused, never panic, and a valid create must survive a round trip unchanged.
func FuzzSpoolLine(f *testing.F) {
	p, _ := prepareNew(Payment{ID: uuid.New(), Rail: "x402", Amount: big.NewInt(10), NonceKey: "k", Payload: []byte(`{"a":1}`)}, time.Now())
	create, _ := json.Marshal(spoolOp{V: spoolVersion, OpID: uuid.New(), Kind: opCreate, At: time.Now().UTC(), Payment: newPaymentLine(p)})
	move, _ := json.Marshal(spoolOp{V: spoolVersion, OpID: uuid.New(), Kind: opTransition, At: time.Now().UTC(),
		Transition: &transitionOp{ID: p.ID, From: []Status{StatusVerified}, To: StatusQueued}})
	nonce, _ := json.Marshal(spoolOp{V: spoolVersion, OpID: uuid.New(), Kind: opNonce, At: time.Now().UTC(),
		Nonce: &nonceRow{Key: "k", ClaimID: uuid.New(), ClaimedAt: time.Now(), ExpiresAt: time.Now()}})
	for _, s := range [][]byte{create, move, nonce, []byte(`{}`), []byte(`{"v":1}`)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var op spoolOp
		if json.Unmarshal(line, &op) != nil || op.valid() != nil {
			return
		}
		if op.Kind != opCreate {
			return
		}
		p1, err := op.Payment.payment()
		if err != nil {
			t.Fatalf("valid create whose payment fails: %v", err)
		}
		again, err := json.Marshal(spoolOp{V: op.V, OpID: op.OpID, Kind: op.Kind, At: op.At, Payment: newPaymentLine(p1)})
		if err != nil {
			t.Fatal(err)
		}
		var op2 spoolOp
		if err := json.Unmarshal(again, &op2); err != nil || op2.valid() != nil {
			t.Fatalf("re-encoded line invalid: %v", err)
		}
		p2, _ := op2.Payment.payment()
		if !sameIdentity(p1, p2) || !p1.CreatedAt.Equal(p2.CreatedAt) || !bytes.Equal(compact(p1.Payload), compact(p2.Payload)) {
			t.Fatalf("round trip changed the payment:\n%+v\n%+v", p1, p2)
		}
	})
}

func compact(b []byte) []byte {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return b
	}
	return out.Bytes()
}
