package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// remoteClient is a client of f that believes f is the gateway at base (another machine):
// every connection goes to f, whatever the URL's host.
func remoteClient(t *testing.T, f *fakeGateway, base string, opts ...Option) *Client {
	t.Helper()
	addr := strings.TrimPrefix(f.srv.URL, "http://")
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}}
	all := append([]Option{WithHTTPClient(hc), WithX402Signer(payerKey(t)), WithAllowedAssets(localToken), WithClock(func() time.Time { return fixedNow })}, opts...)
	c, err := New(base, all...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// An offer that came over plain HTTP from another machine may have been rewritten on the way
// (its payTo above all): the client signs nothing for it unless told to.
func TestPlainHTTPToAnotherMachineIsNotPaid(t *testing.T) {
	f := newFake(t, nil)
	_, err := remoteClient(t, f, "http://gateway.example.invalid:5091").Exec(context.Background(), jsonParseCall())
	var refused *PaymentRefusedError
	if !errors.As(err, &refused) || refused.Reason != ReasonInsecureTransport || refused.Paid {
		t.Fatalf("Exec over plain HTTP to another machine = %v; want a refusal to pay (%s)", err, ReasonInsecureTransport)
	}
	if paid, _ := f.paid(); len(paid) != 0 {
		t.Fatalf("the gateway received %d payments", len(paid))
	}

	// Told to, it pays; and a gateway on this machine is paid over HTTP either way.
	if res, err := remoteClient(t, f, "http://gateway.example.invalid:5091", WithInsecureHTTP()).Exec(context.Background(), jsonParseCall()); err != nil || res.Payment == nil {
		t.Fatalf("Exec with WithInsecureHTTP = %+v, %v; want paid", res, err)
	}
	for _, base := range []string{"http://localhost:5091", "http://127.0.0.2:5091", "http://[::1]:5091"} {
		if res, err := remoteClient(t, f, base).Exec(context.Background(), jsonParseCall()); err != nil || res.Payment == nil {
			t.Fatalf("Exec to %s = %+v, %v; want paid", base, res, err)
		}
	}
}
