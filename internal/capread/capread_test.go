package capread

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

var errTooLarge = errors.New("too large")

func TestTransportCapsBodies(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("x", len(r.URL.Path)-1))
	}))
	defer srv.Close()
	c := &http.Client{Transport: Transport(http.DefaultTransport, 8, errTooLarge)}
	for path, want := range map[string]error{"/1234567": nil, "/12345678": nil, "/123456789": errTooLarge} {
		resp, err := c.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !errors.Is(err, want) || (want == nil && len(b) != len(path)-1) {
			t.Errorf("%d bytes: read %d, %v; want %v", len(path)-1, len(b), err, want)
		}
	}
}
