// Package capread bounds what is read of a network peer's HTTP answers: whatever answers as
// Stripe or as an Ethereum node is still network input, and the clients that read them
// (stripe-go, go-ethereum's RPC client) read a body whole, whatever its size.
package capread

import (
	"io"
	"net/http"
)

// Transport wraps base so that every response body it hands out reads at most max bytes and
// then fails with tooLarge instead of reading one more.
func Transport(base http.RoundTripper, max int64, tooLarge error) http.RoundTripper {
	return transport{base: base, max: max, tooLarge: tooLarge}
}

type transport struct {
	base     http.RoundTripper
	max      int64
	tooLarge error
}

func (t transport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &body{rc: resp.Body, left: t.max, tooLarge: t.tooLarge}
	return resp, nil
}

type body struct {
	rc       io.ReadCloser
	left     int64
	tooLarge error
}

func (b *body) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body of exactly the cap from a longer one.
		var one [1]byte
		if n, _ := b.rc.Read(one[:]); n > 0 {
			return 0, b.tooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *body) Close() error { return b.rc.Close() }
