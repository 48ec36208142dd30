package chain

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/rpc"
)

// MaxRPCAnswerBytes bounds one answer of the node. go-ethereum's HTTP client reads an answer
// whole, whatever its size; the largest we ask for (a 100-payment batch's receipt, a page of
// logs) is well under a MiB.
const MaxRPCAnswerBytes = 64 << 20

// ErrRPCAnswerTooLarge is an answer of the node larger than the limit Dial was given.
var ErrRPCAnswerTooLarge = errors.New("chain: the node's answer is larger than the limit")

// Dial connects to the node at url (http(s) or ws(s)), reading at most limit bytes of any one
// answer: the node, or whatever answers in its place, is a network peer like any other.
func Dial(ctx context.Context, url string, limit int64) (*ethclient.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	c, err := rpc.DialOptions(ctx, url,
		rpc.WithHTTPClient(&http.Client{Transport: cappedTransport{rt: tr, limit: limit}}),
		rpc.WithWebsocketMessageSizeLimit(limit))
	if err != nil {
		return nil, err
	}
	return ethclient.NewClient(c), nil
}

// cappedTransport hands out response bodies that fail past limit bytes.
type cappedTransport struct {
	rt    http.RoundTripper
	limit int64
}

func (t cappedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &cappedBody{ReadCloser: resp.Body, left: t.limit}
	return resp, nil
}

// cappedBody reads up to left more bytes, and fails instead of reading one more.
type cappedBody struct {
	io.ReadCloser
	left int64
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.ReadCloser.Read(p)
	if int64(n) > b.left {
		return int(b.left), fmt.Errorf("%w (%d bytes)", ErrRPCAnswerTooLarge, b.left)
	}
	b.left -= int64(n)
	return n, err
}
