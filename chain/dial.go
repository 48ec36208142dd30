package chain

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/secureexec/secureexec/internal/capread"
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
		rpc.WithHTTPClient(&http.Client{Transport: capread.Transport(tr, limit, fmt.Errorf("%w (%d bytes)", ErrRPCAnswerTooLarge, limit))}),
		rpc.WithWebsocketMessageSizeLimit(limit))
	if err != nil {
		return nil, err
	}
	return ethclient.NewClient(c), nil
}
