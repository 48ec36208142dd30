package chain

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The node is a network peer: an answer past the limit is refused, not read whole into memory.
func TestDialCapsTheNodesAnswers(t *testing.T) {
	pad := strings.Repeat(" ", 4096)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(string(body), "eth_blockNumber") {
			_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,`+pad+`"result":"0x10"}`) // past the limit
			return
		}
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":"0x539"}`)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, srv.URL, 1024)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if id, err := c.ChainID(ctx); err != nil || id.Uint64() != 1337 {
		t.Fatalf("a small answer: %v, %v", id, err)
	}
	if _, err := c.BlockNumber(ctx); !errors.Is(err, ErrRPCAnswerTooLarge) {
		t.Fatalf("an answer past the limit: %v; want ErrRPCAnswerTooLarge", err)
	}
}
