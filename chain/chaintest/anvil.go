// Package chaintest starts real chain nodes for tests in other processes: anvil from the
// npm package pinned in the repository's package.json. Everything binds to 127.0.0.1 and is
// stopped by its PID when the test ends.
package chaintest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/rpc"
)

// repoRoot finds the module root (the folder holding go.mod) above the working directory,
// where node_modules lives.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("chaintest: no go.mod above the working directory")
		}
		dir = parent
	}
}

// cappedBuffer keeps the first bytes of a child's output for failure messages.
type cappedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := 64<<10 - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *cappedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// StartAnvil runs the npm-pinned anvil on a free loopback port and returns a client for it;
// both are stopped (anvil by its PID) when the test ends.
func StartAnvil(t testing.TB, chainID uint64) (string, *ethclient.Client) {
	t.Helper()
	if os.Getenv("SECUREEXEC_SKIP_ANVIL") == "1" {
		t.Skip("SECUREEXEC_SKIP_ANVIL=1")
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "node_modules", "@foundry-rs", fmt.Sprintf("anvil-%s-%s", runtime.GOOS, runtime.GOARCH), "bin", "anvil")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("anvil binary missing (%v): run `make anvil` (or `npm ci`) in the repo root, or set SECUREEXEC_SKIP_ANVIL=1 to skip", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()

	var out cappedBuffer
	cmd := exec.Command(bin, "--host", "127.0.0.1", "--port", port, "--chain-id", strconv.FormatUint(chainID, 10), "--silent")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start anvil: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})

	// A private transport: no proxy from the environment, and idle connections closed at the end.
	tr := &http.Transport{DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext}
	rc, err := rpc.DialOptions(context.Background(), "http://127.0.0.1:"+port, rpc.WithHTTPClient(&http.Client{Transport: tr, Timeout: 10 * time.Second}))
	if err != nil {
		t.Fatalf("dial anvil: %v", err)
	}
	c := ethclient.NewClient(rc)
	t.Cleanup(func() { c.Close(); tr.CloseIdleConnections() })

	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		id, err := c.ChainID(ctx)
		cancel()
		if err == nil {
			if id.Uint64() != chainID {
				t.Fatalf("anvil chain id %v, want %d", id, chainID)
			}
			return "http://127.0.0.1:" + port, c
		}
		select {
		case werr := <-exited:
			exited <- werr // let the cleanup see it too
			t.Fatalf("anvil exited before serving: %v; output:\n%s", werr, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("anvil not ready on port %s: %v; output:\n%s", port, err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
