// Command x402load is the load generator of docs/PERFORMANCE.md for x402-paid calls: wrk
// cannot sign a fresh payment per request, so this does. It reads one 402 from the gateway,
// pre-signs N distinct EIP-3009 authorizations from the dev accounts (before the clock
// starts), then sends them over C keep-alive connections and reports throughput and latency
// percentiles; or, with -out, writes them to a file for wrk (scripts/x402-wrk.lua), which
// spends less of the machine per request than this Go client. It targets one URL given on the
// command line; run it against 127.0.0.1 only.
package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/secureexec/secureexec/payments/x402"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:5091/exec/tool", "the paid endpoint")
	accounts := flag.String("accounts", "secureexec-data/devchain-accounts.json", "the dev chain's accounts file")
	n := flag.Int("n", 20000, "payments to send")
	conns := flag.Int("c", 32, "concurrent connections")
	body := flag.String("body", `{"agentId":"bench","tool":{"name":"json_parse","args":{"data":{"key":"value","n":[1,2,3]}}}}`, "request body")
	out := flag.String("out", "", "write the pre-signed PAYMENT-SIGNATURE values to this file, one per line, and send nothing (for scripts/x402-wrk.lua)")
	flag.Parse()

	keys := loadKeys(*accounts)
	req := offer(*url, *body)
	log.Printf("pre-signing %d payments from %d payers for %s %s on %s", *n, len(keys), req.Amount, req.Asset, req.Network)
	headers := presign(req, keys, *n)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(strings.Join(headers, "\n")+"\n"), 0o600); err != nil {
			log.Fatal(err)
		}
		return
	}

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns}, Timeout: 30 * time.Second}
	lat := make([]time.Duration, *n)
	codes := make([]int, *n)
	var next atomic.Int64
	var wg sync.WaitGroup
	cpu0 := cpuTime()
	start := time.Now()
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= *n {
					return
				}
				r, _ := http.NewRequest(http.MethodPost, *url, strings.NewReader(*body))
				r.Header.Set("Content-Type", "application/json")
				r.Header.Set(x402.HeaderPaymentSignature, headers[i])
				t0 := time.Now()
				resp, err := client.Do(r)
				lat[i] = time.Since(t0)
				if err != nil {
					codes[i] = -1
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				codes[i] = resp.StatusCode
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	// The load generator shares the machine: what it spends is part of what each request costs it.
	fmt.Printf("load generator CPU per request: %d us\n", (cpuTime()-cpu0).Microseconds()/int64(*n))
	report(lat, codes, elapsed, *conns)
}

// cpuTime is the CPU time (user and system) this process has used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loadKeys(path string) []*ecdsa.PrivateKey {
	raw, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}
	var doc struct {
		Accounts []struct {
			PrivateKey string `json:"privateKey"`
		} `json:"accounts"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		log.Fatal(err)
	}
	var keys []*ecdsa.PrivateKey
	for _, a := range doc.Accounts[1:] { // #0 is the gateway's payTo
		k, err := crypto.HexToECDSA(strings.TrimPrefix(a.PrivateKey, "0x"))
		if err != nil {
			log.Fatal(err)
		}
		keys = append(keys, k)
	}
	return keys
}

// offer asks the gateway for its 402 and returns the x402 v2 requirement it offers.
func offer(url, body string) x402.PaymentRequirements {
	resp, err := http.Post(url, "application/json", bytes.NewBufferString(body))
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	pr, err := x402.DecodePaymentRequired(resp.Header.Get(x402.HeaderPaymentRequired))
	if err != nil || len(pr.Accepts) == 0 {
		log.Fatalf("no x402 offer in the gateway's %s: %v", resp.Status, err)
	}
	return pr.Accepts[0]
}

func presign(req x402.PaymentRequirements, keys []*ecdsa.PrivateKey, n int) []string {
	out := make([]string, n)
	validBefore := strconv.FormatInt(time.Now().Add(time.Duration(req.MaxTimeoutSeconds)*time.Second+time.Hour).Unix(), 10)
	var wg sync.WaitGroup
	workers := runtime.NumCPU()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				key := keys[i%len(keys)]
				var nonce [32]byte
				_, _ = rand.Read(nonce[:])
				auth := x402.EIP3009Authorization{
					From: crypto.PubkeyToAddress(key.PublicKey).Hex(), To: common.HexToAddress(req.PayTo).Hex(), Value: req.Amount,
					ValidAfter: "0", ValidBefore: validBefore, Nonce: "0x" + hex.EncodeToString(nonce[:]),
				}
				digest, err := x402.SigningDigest(req, auth)
				if err != nil {
					log.Fatal(err)
				}
				sig, err := crypto.Sign(digest[:], key)
				if err != nil {
					log.Fatal(err)
				}
				sig[64] += 27
				accepted := req
				p := &x402.PaymentPayload{X402Version: 2, Accepted: &accepted,
					Payload: x402.ExactEVMPayload{Signature: "0x" + hex.EncodeToString(sig), Authorization: auth}}
				h, err := x402.EncodePaymentPayload(p)
				if err != nil {
					log.Fatal(err)
				}
				out[i] = h
			}
		}()
	}
	wg.Wait()
	return out
}

func report(lat []time.Duration, codes []int, elapsed time.Duration, conns int) {
	byCode := map[int]int{}
	for _, c := range codes {
		byCode[c]++
	}
	sorted := append([]time.Duration(nil), lat...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	pct := func(p float64) time.Duration { return sorted[int(p*float64(len(sorted)-1))] }
	fmt.Printf("requests: %d in %.2fs over %d connections: %.0f req/s\n", len(lat), elapsed.Seconds(), conns, float64(len(lat))/elapsed.Seconds())
	fmt.Printf("latency: p50 %v  p90 %v  p99 %v  max %v\n", pct(.5).Round(10*time.Microsecond), pct(.9).Round(10*time.Microsecond),
		pct(.99).Round(10*time.Microsecond), sorted[len(sorted)-1].Round(10*time.Microsecond))
	fmt.Printf("status codes: %v\n", byCode)
	if byCode[http.StatusOK] != len(codes) {
		os.Exit(1)
	}
}
