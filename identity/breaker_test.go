package identity

import (
	"testing"
	"time"
)

func TestBreaker(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type step struct {
		op        string // allow | success | failure | release
		at        time.Duration
		probe     bool // for release and failure
		wantOK    bool // allow result, or tripped for failure
		wantProbe bool
	}
	for _, tc := range []struct {
		name  string
		steps []step
		state breakerState
	}{
		{"non-consecutive failures never trip", []step{
			{op: "failure"}, {op: "failure"}, {op: "success"}, {op: "failure"}, {op: "failure"},
			{op: "allow", wantOK: true},
		}, breakerClosed},
		{"threshold trips", []step{
			{op: "failure"}, {op: "failure"}, {op: "failure", wantOK: true},
			{op: "allow", at: 9 * time.Second, wantOK: false},
		}, breakerOpen},
		{"one probe at a time in half-open", []step{
			{op: "failure"}, {op: "failure"}, {op: "failure", wantOK: true},
			{op: "allow", at: 10 * time.Second, wantOK: true, wantProbe: true},
			{op: "allow", at: 10 * time.Second, wantOK: false},
		}, breakerHalfOpen},
		{"released probe frees the slot", []step{
			{op: "failure"}, {op: "failure"}, {op: "failure", wantOK: true},
			{op: "allow", at: 10 * time.Second, wantOK: true, wantProbe: true},
			{op: "release", probe: true},
			{op: "allow", at: 10 * time.Second, wantOK: true, wantProbe: true},
		}, breakerHalfOpen},
		{"release by a non-probe keeps the probe slot taken", []step{
			{op: "failure"}, {op: "failure"}, {op: "failure", wantOK: true},
			{op: "allow", at: 10 * time.Second, wantOK: true, wantProbe: true},
			{op: "release", probe: false},
			{op: "allow", at: 10 * time.Second, wantOK: false},
		}, breakerHalfOpen},
		{"failed probe reopens for a full cool-down", []step{
			{op: "failure"}, {op: "failure"}, {op: "failure", wantOK: true},
			{op: "allow", at: 10 * time.Second, wantOK: true, wantProbe: true},
			{op: "failure", at: 15 * time.Second, probe: true, wantOK: true},
			{op: "allow", at: 24 * time.Second, wantOK: false},
			{op: "allow", at: 25 * time.Second, wantOK: true, wantProbe: true},
		}, breakerHalfOpen},
		{"late failure while open changes nothing", []step{
			{op: "failure"}, {op: "failure"}, {op: "failure", wantOK: true},
			{op: "failure", at: 5 * time.Second, wantOK: false},
			{op: "allow", at: 10 * time.Second, wantOK: true, wantProbe: true},
		}, breakerHalfOpen},
		{"a late failure of a call from before the trip leaves the probe alone", []step{
			{op: "failure"}, {op: "failure"}, {op: "failure", wantOK: true},
			{op: "allow", at: 10 * time.Second, wantOK: true, wantProbe: true},
			{op: "failure", at: 11 * time.Second, probe: false, wantOK: false},
			{op: "allow", at: 11 * time.Second, wantOK: false}, // the probe is still the one in flight
		}, breakerHalfOpen},
		{"successful probe closes", []step{
			{op: "failure"}, {op: "failure"}, {op: "failure", wantOK: true},
			{op: "allow", at: 10 * time.Second, wantOK: true, wantProbe: true},
			{op: "success"},
			{op: "allow", at: 10 * time.Second, wantOK: true, wantProbe: false},
		}, breakerClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBreaker(3, 10*time.Second)
			for i, s := range tc.steps {
				now := t0.Add(s.at)
				switch s.op {
				case "allow":
					ok, probe := b.allow(now)
					if ok != s.wantOK || probe != s.wantProbe {
						t.Fatalf("step %d: allow = %v, %v; want %v, %v", i, ok, probe, s.wantOK, s.wantProbe)
					}
				case "failure":
					if tripped := b.failure(now, s.probe); tripped != s.wantOK {
						t.Fatalf("step %d: failure tripped = %v, want %v", i, tripped, s.wantOK)
					}
				case "success":
					b.success()
				case "release":
					b.release(s.probe)
				}
			}
			if st, _ := b.snapshot(); st != tc.state {
				t.Errorf("final state %s, want %s", st, tc.state)
			}
		})
	}
}
