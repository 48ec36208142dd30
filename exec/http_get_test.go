package exec

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// httpGetFakeDNS answers from a map; nothing leaves the process.
type httpGetFakeDNS struct {
	names   map[string][]netip.Addr
	lookups atomic.Int32
}

func (f *httpGetFakeDNS) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	f.lookups.Add(1)
	if a, ok := f.names[host]; ok {
		return a, nil
	}
	// As net.Resolver's errors do, this one names the DNS server that answered.
	return nil, &net.DNSError{Err: "no such host", Name: host, Server: "10.53.0.2:53", IsNotFound: true}
}

// httpGetProbe records every connect-time verdict, and how often the test fence had to stop
// a connection that the policy allowed to somewhere other than 127.0.0.1.
type httpGetProbe struct {
	mu       sync.Mutex
	verdicts map[netip.AddrPort]error
	fenced   atomic.Int32
}

func (p *httpGetProbe) observe(dst netip.AddrPort, verdict error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.verdicts == nil {
		p.verdicts = map[netip.AddrPort]error{}
	}
	p.verdicts[dst] = verdict
}

func (p *httpGetProbe) snapshot() map[netip.AddrPort]error {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[netip.AddrPort]error{}
	for k, v := range p.verdicts {
		out[k] = v
	}
	return out
}

var httpGetTestNames = map[string][]netip.Addr{
	"loopback.test": {netip.MustParseAddr("127.0.0.1")},
	"metadata.test": {netip.MustParseAddr("169.254.169.254")},
	"private.test":  {netip.MustParseAddr("10.0.0.1")},
	"v6loop.test":   {netip.MustParseAddr("::1")},
	"mapped.test":   {netip.MustParseAddr("::ffff:127.0.0.1")},
	"nat64.test":    {netip.MustParseAddr("64:ff9b::7f00:1")},
	"mixed.test":    {netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("127.0.0.1")},
	"public.test":   {netip.MustParseAddr("93.184.216.34")},
}

// newTestHTTPGet builds http_get with the fake DNS, the probe, and a fence that refuses any
// connection not to 127.0.0.1, so that no test can send a packet elsewhere.
func newTestHTTPGet(t *testing.T, cfg HTTPGetConfig) (*HTTPGet, *httpGetProbe, *httpGetFakeDNS) {
	t.Helper()
	dns := &httpGetFakeDNS{names: httpGetTestNames}
	probe := &httpGetProbe{}
	cfg.Resolver = dns
	cfg.Observe = probe.observe
	h := NewHTTPGet(cfg)
	h.dialer.fence = func(dst netip.AddrPort) error {
		if dst.Addr() == netip.MustParseAddr("127.0.0.1") {
			return nil
		}
		probe.fenced.Add(1)
		return errors.New("test fence: only 127.0.0.1 may be dialed")
	}
	return h, probe, dns
}

// httpGetCountingServer is an httptest server on 127.0.0.1 that counts the connections it accepts.
func httpGetCountingServer(t *testing.T, h http.Handler) (*httptest.Server, *atomic.Int32, uint16) {
	t.Helper()
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	port, _ := strconv.Atoi(u.Port())
	return srv, &conns, uint16(port)
}

func httpGetArgsJSON(u string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"url": u})
	return b
}

func toolsAWantCode(t *testing.T, err error, code, contains string) {
	t.Helper()
	var te *ToolError
	if !errors.As(err, &te) {
		t.Fatalf("err %v (%T), want ToolError %s", err, err, code)
	}
	if te.Code != code || !strings.Contains(te.Message, contains) {
		t.Fatalf("ToolError %s: %s; want %s containing %q", te.Code, te.Message, code, contains)
	}
}

func TestHTTPGetRefusesInternalDestinations(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	_, conns, port := httpGetCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "internal secret")
	}))
	p := strconv.Itoa(int(port))
	for _, tc := range []struct {
		name   string
		url    string
		reason string
		// dialed is the resolved destination the connect-time check must have refused;
		// empty when the URL is refused before any name is resolved or socket created.
		dialed []string
	}{
		{"loopback literal", "http://127.0.0.1:" + p + "/", "loopback address", nil},
		{"loopback other address", "http://127.0.0.2:" + p + "/", "loopback address", nil},
		{"cloud metadata", "http://169.254.169.254/latest/meta-data/", "cloud metadata", nil},
		{"Azure WireServer", "http://168.63.129.16/machine?comp=goalstate", "Azure WireServer", nil},
		{"private 10/8", "http://10.0.0.1/", "private address", nil},
		{"private 172.16/12", "http://172.16.5.4/", "private address", nil},
		{"private 192.168/16", "http://192.168.0.1/", "private address", nil},
		{"CGNAT", "http://100.64.0.1/", "CGNAT", nil},
		{"unspecified", "http://0.0.0.0:" + p + "/", "unspecified address", nil},
		{"multicast", "http://224.0.0.1/", "multicast address", nil},
		{"broadcast", "http://255.255.255.255/", "broadcast address", nil},
		{"IPv6 loopback", "http://[::1]:" + p + "/", "loopback address", nil},
		{"IPv4-mapped loopback", "http://[::ffff:127.0.0.1]:" + p + "/", "IPv4-mapped", nil},
		{"IPv4-mapped hex form", "http://[::ffff:7f00:1]:" + p + "/", "IPv4-mapped", nil},
		{"NAT64", "http://[64:ff9b::a9fe:a9fe]/", "NAT64 address", nil},
		{"IPv6 unique local", "http://[fd00::2]/", "private address", nil},
		{"IPv6 link-local scoped", "http://[fe80::1%25eth0]/", "scoped IPv6 address", nil},
		{"IPv6 link-local", "http://[fe80::1]/", "link-local address", nil},
		{"6to4", "http://[2002:7f00:1::1]/", "6to4 address", nil},
		{"Teredo", "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "Teredo address", nil},
		{"decimal IPv4", "http://2130706433:" + p + "/", "numeric host", nil},
		{"hex IPv4", "http://0x7f000001:" + p + "/", "numeric host", nil},
		{"short IPv4", "http://127.1:" + p + "/", "numeric host", nil},
		{"localhost", "http://localhost:" + p + "/", "localhost names", nil},
		{"localhost subdomain", "http://api.localhost/", "localhost names", nil},
		{"localhost in enclosed letters", "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ:" + p + "/", "localhost names", nil},
		{"loopback in fullwidth digits", "http://１２７.０.０.１:" + p + "/", "loopback address", nil},
		{"credentials", "http://user:pw@public.test/", "credentials", nil},
		{"ftp", "ftp://public.test/", "scheme", nil},
		{"file", "file:///etc/passwd", "scheme", nil},
		{"gopher", "gopher://127.0.0.1:" + p + "/", "scheme", nil},
		{"port not allowed", "http://public.test:8080/", "port 8080 is not allowed", nil},
		{"name resolving to loopback", "http://loopback.test:" + p + "/", "loopback address", []string{"127.0.0.1:" + p}},
		{"name resolving to metadata", "http://metadata.test/", "cloud metadata", []string{"169.254.169.254:80"}},
		{"name resolving to private", "http://private.test/", "private address", []string{"10.0.0.1:80"}},
		{"name resolving to IPv6 loopback", "http://v6loop.test:" + p + "/", "loopback address", []string{"[::1]:" + p}},
		{"name resolving to IPv4-mapped", "http://mapped.test:" + p + "/", "IPv4-mapped", []string{"[::ffff:127.0.0.1]:" + p}},
		{"name resolving to NAT64", "http://nat64.test/", "NAT64 address", []string{"[64:ff9b::7f00:1]:80"}},
		{"name resolving to several internal", "http://mixed.test:" + p + "/", "address", []string{"10.0.0.1:" + p, "127.0.0.1:" + p}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, probe, dns := newTestHTTPGet(t, HTTPGetConfig{AllowedPorts: []uint16{80, 443, port}})
			_, err := h.Run(context.Background(), httpGetArgsJSON(tc.url))
			toolsAWantCode(t, err, "destination_not_allowed", tc.reason)

			seen := probe.snapshot()
			if len(seen) != len(tc.dialed) {
				t.Errorf("connect-time verdicts %v, want exactly %v", seen, tc.dialed)
			}
			for _, d := range tc.dialed {
				if v, ok := seen[netip.MustParseAddrPort(d)]; !ok || v == nil {
					t.Errorf("destination %s: verdict %v (seen %v), want a refusal", d, v, ok)
				}
				// The caller named a host: what it resolves to inside is not theirs to learn.
				if a := netip.MustParseAddrPort(d).Addr().String(); strings.Contains(err.Error(), a) {
					t.Errorf("the refusal discloses the resolved address %s: %v", a, err)
				}
			}
			if n := probe.fenced.Load(); n != 0 {
				t.Errorf("the policy allowed %d connection(s) that only the test fence stopped", n)
			}
			if n := conns.Load(); n != 0 {
				t.Fatalf("the internal server accepted %d connection(s)", n)
			}

			// Dry-run refuses what it can judge without DNS, and never resolves a name.
			before := dns.lookups.Load()
			_, simErr := h.Simulate(context.Background(), httpGetArgsJSON(tc.url))
			if tc.dialed == nil {
				toolsAWantCode(t, simErr, "destination_not_allowed", tc.reason)
			} else if simErr != nil {
				t.Errorf("Simulate of a host name: %v", simErr)
			}
			if dns.lookups.Load() != before {
				t.Error("Simulate resolved a name")
			}
		})
	}
}

// TestSSRFControl exercises the connect-time hook alone: it is given the socket address the
// kernel is about to connect to, and nothing is dialed here.
func TestSSRFControl(t *testing.T) {
	allow := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	for _, tc := range []struct {
		network, address string
		allow            []netip.Prefix
		ok               bool
	}{
		{"tcp4", "93.184.216.34:443", nil, true},
		{"tcp6", "[2606:4700::1111]:80", nil, true},
		{"tcp4", "127.0.0.1:80", nil, false},
		{"tcp4", "127.0.0.1:80", allow, true},
		{"tcp4", "127.0.0.2:80", allow, false},
		{"tcp4", "169.254.169.254:80", nil, false},
		{"tcp4", "168.63.129.16:80", nil, false},
		// An allowed private range does not open the metadata endpoints inside it.
		{"tcp4", "169.254.1.1:80", []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16")}, true},
		{"tcp4", "169.254.169.254:80", []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16")}, false},
		{"tcp6", "[fd00::1]:80", []netip.Prefix{netip.MustParsePrefix("fd00::/8")}, true},
		{"tcp6", "[fd00:ec2::254]:80", []netip.Prefix{netip.MustParsePrefix("fd00::/8")}, false},
		{"tcp4", "168.63.129.16:80", []netip.Prefix{netip.MustParsePrefix("168.63.0.0/16")}, false},
		{"tcp4", "100.100.100.200:80", []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10")}, false},
		{"tcp4", "10.1.2.3:443", nil, false},
		{"tcp4", "100.100.100.200:80", nil, false},
		{"tcp4", "0.0.0.0:80", nil, false},
		{"tcp4", "255.255.255.255:80", nil, false},
		{"tcp4", "239.1.1.1:80", nil, false},
		{"tcp6", "[::1]:80", nil, false},
		{"tcp6", "[::]:80", nil, false},
		{"tcp6", "[::ffff:127.0.0.1]:80", allow, false},
		{"tcp6", "[64:ff9b::808:808]:80", nil, false},
		{"tcp6", "[fc00::1]:80", nil, false},
		{"tcp6", "[fe80::1%eth0]:80", nil, false},
		{"tcp6", "[ff02::1]:80", nil, false},
		{"tcp6", "[2002:a00:1::]:80", nil, false},
		{"tcp6", "[2001::1]:80", nil, false},
		{"tcp4", "93.184.216.34:22", nil, false},
		{"udp4", "93.184.216.34:443", nil, false},
		{"tcp4", "not-an-address", nil, false},
	} {
		d := newSSRFDialer(newSSRFPolicy([]uint16{80, 443}, tc.allow), nil, nil)
		err := d.control(tc.network, tc.address, nil)
		if (err == nil) != tc.ok {
			t.Errorf("control(%s, %s, allow=%v) = %v, want allowed=%v", tc.network, tc.address, tc.allow, err, tc.ok)
		}
		var denied *ssrfDeniedError
		if err != nil && !errors.As(err, &denied) {
			t.Errorf("control(%s): error %T is not a refusal", tc.address, err)
		}
	}
}

func TestHTTPGetFetch(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	mux := http.NewServeMux()
	mux.HandleFunc("/json", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("User-Agent") != httpGetUserAgent || r.Header.Get("Accept") != "application/json" {
			http.Error(w, "unexpected request headers", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Set-Cookie", "session=secret")
		w.Header().Set("X-Internal-Host", "db-1")
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprint(w, `{"ok":true,"text":"héllo"}`)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, strings.Repeat("a", 5000)) })
	mux.HandleFunc("/cut", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, strings.Repeat("a", 999)+"é and more") })
	mux.HandleFunc("/binary", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte{0xff, 0xfe, 0x00, 0x01}) })
	mux.HandleFunc("/nul", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "a\x00b") })
	mux.HandleFunc("/gzip", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		zw.Write(bytes.Repeat([]byte("z"), 1<<20))
		zw.Close()
	})
	srv, _, port := httpGetCountingServer(t, mux)
	h, probe, _ := newTestHTTPGet(t, HTTPGetConfig{
		MaxBodyBytes:  1000,
		AllowedPorts:  []uint16{port},
		AllowPrefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
	})

	for _, tc := range []struct {
		path      string
		headers   map[string]string
		status    int
		body      string // expected decoded body
		encoding  string
		truncated bool
	}{
		{"/json", map[string]string{"accept": "application/json"}, http.StatusAccepted, `{"ok":true,"text":"héllo"}`, "utf8", false},
		{"/big", nil, http.StatusOK, strings.Repeat("a", 1000), "utf8", true},
		{"/cut", nil, http.StatusOK, strings.Repeat("a", 999), "utf8", true},
		{"/binary", nil, http.StatusOK, "\xff\xfe\x00\x01", "base64", false},
		{"/nul", nil, http.StatusOK, "a\x00b", "base64", false},
		{"/gzip", nil, http.StatusOK, strings.Repeat("z", 1000), "utf8", true},
	} {
		t.Run(tc.path, func(t *testing.T) {
			args, _ := json.Marshal(httpGetArgs{URL: srv.URL + tc.path, Headers: tc.headers})
			out, err := h.Run(context.Background(), args)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			o := out.(HTTPGetOutput)
			body := o.Body
			if o.BodyEncoding == "base64" {
				b, err := base64.StdEncoding.DecodeString(o.Body)
				if err != nil {
					t.Fatalf("body is not base64: %v", err)
				}
				body = string(b)
			}
			if o.Status != tc.status || body != tc.body || o.BodyEncoding != tc.encoding || o.Truncated != tc.truncated {
				t.Errorf("got status %d encoding %s truncated %v body %.40q, want %d %s %v %.40q",
					o.Status, o.BodyEncoding, o.Truncated, body, tc.status, tc.encoding, tc.truncated, tc.body)
			}
			if o.BodyBytes != len(body) {
				t.Errorf("bodyBytes %d, but the body returned holds %d bytes", o.BodyBytes, len(body))
			}
			if o.FinalURL != srv.URL+tc.path {
				t.Errorf("finalUrl %q", o.FinalURL)
			}
			if strings.ContainsRune(o.Body, 0) {
				t.Error("output body contains U+0000")
			}
		})
	}

	args, _ := json.Marshal(httpGetArgs{URL: srv.URL + "/json", Headers: map[string]string{"accept": "application/json"}})
	out, _ := h.Run(context.Background(), args)
	hdr := out.(HTTPGetOutput).Headers
	if hdr["content-type"] != "application/json" || hdr["etag"] != `"v1"` {
		t.Errorf("allow-listed headers missing: %v", hdr)
	}
	for _, k := range []string{"set-cookie", "x-internal-host", "Set-Cookie"} {
		if _, ok := hdr[k]; ok {
			t.Errorf("header %q should have been dropped: %v", k, hdr)
		}
	}
	if v := probe.snapshot()[netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)]; v != nil {
		t.Errorf("allowed destination got verdict %v", v)
	}
}

func TestHTTPGetRedirects(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	_, targetConns, targetPort := httpGetCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "internal secret")
	}))
	tp := strconv.Itoa(int(targetPort))
	mux := http.NewServeMux()
	mux.HandleFunc("/final", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "landed") })
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/loop", http.StatusFound) })
	mux.HandleFunc("/to", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Query().Get("u"), http.StatusFound)
	})
	origin, _, originPort := httpGetCountingServer(t, mux)
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	redirect := func(to string) string { return origin.URL + "/to?u=" + url.QueryEscape(to) }

	t.Run("followed within the policy", func(t *testing.T) {
		h, _, _ := newTestHTTPGet(t, HTTPGetConfig{AllowedPorts: []uint16{originPort}, AllowPrefixes: loopback})
		out, err := h.Run(context.Background(), httpGetArgsJSON(redirect("/final")))
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if o := out.(HTTPGetOutput); o.Body != "landed" || o.FinalURL != origin.URL+"/final" {
			t.Errorf("got %+v", o)
		}
	})
	t.Run("not followed when disabled", func(t *testing.T) {
		h, _, _ := newTestHTTPGet(t, HTTPGetConfig{AllowedPorts: []uint16{originPort}, AllowPrefixes: loopback, MaxRedirects: -1})
		out, err := h.Run(context.Background(), httpGetArgsJSON(redirect("/final")))
		if err != nil || out.(HTTPGetOutput).Status != http.StatusFound {
			t.Fatalf("got %+v, %v; want the 302 itself", out, err)
		}
	})
	t.Run("too many", func(t *testing.T) {
		h, _, _ := newTestHTTPGet(t, HTTPGetConfig{AllowedPorts: []uint16{originPort}, AllowPrefixes: loopback, MaxRedirects: 3})
		_, err := h.Run(context.Background(), httpGetArgsJSON(origin.URL+"/loop"))
		toolsAWantCode(t, err, "too_many_redirects", "3")
	})

	// The origin is allowed (operator allow-list); every redirect target below is internal
	// and must be refused without a single connection to the target server.
	for _, tc := range []struct {
		name   string
		to     string
		ports  []uint16
		reason string
	}{
		{"loopback on a port not allowed", "http://127.0.0.1:" + tp + "/", []uint16{originPort}, "port " + tp + " is not allowed"},
		{"loopback via IPv4-mapped literal", "http://[::ffff:127.0.0.1]:" + tp + "/", nil, "IPv4-mapped"},
		{"loopback via name resolving to IPv4-mapped", "http://mapped.test:" + tp + "/", nil, "IPv4-mapped"},
		{"loopback via localhost", "http://localhost:" + tp + "/", nil, "localhost names"},
		{"loopback outside the allow-list", "http://127.0.0.2:" + tp + "/", nil, "loopback address"},
		{"IPv6 loopback", "http://[::1]:" + tp + "/", nil, "loopback address"},
		{"metadata via name", "http://metadata.test:" + tp + "/latest/meta-data/", nil, "cloud metadata"},
		{"private via name", "http://private.test:" + tp + "/", nil, "private address"},
		{"file scheme", "file:///etc/passwd", nil, "scheme"},
		{"gopher scheme", "gopher://127.0.0.1:" + tp + "/_", nil, "scheme"},
		{"credentials", "http://admin:pw@127.0.0.1:" + tp + "/", nil, "credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ports := tc.ports
			if ports == nil {
				ports = []uint16{originPort, targetPort}
			}
			h, probe, _ := newTestHTTPGet(t, HTTPGetConfig{AllowedPorts: ports, AllowPrefixes: loopback})
			_, err := h.Run(context.Background(), httpGetArgsJSON(redirect(tc.to)))
			toolsAWantCode(t, err, "destination_not_allowed", tc.reason)
			if n := targetConns.Load(); n != 0 {
				t.Fatalf("the redirect target accepted %d connection(s)", n)
			}
			if n := probe.fenced.Load(); n != 0 {
				t.Errorf("the policy allowed %d connection(s) that only the test fence stopped", n)
			}
		})
	}
}

func TestHTTPGetDeadlines(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	stop := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/slow-headers", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	})
	mux.HandleFunc("/slow-body", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "partial")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	})
	mux.HandleFunc("/huge-headers", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Pad", strings.Repeat("p", 40<<10))
	})
	// 101 hands the raw connection to the caller, out of the transport's reach: a read of
	// it does not end at the deadline, so the tool must refuse it rather than read it.
	mux.HandleFunc("/switching-protocols", func(w http.ResponseWriter, _ *http.Request) {
		c, bw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		bw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\npartial")
		bw.Flush()
		<-stop
	})
	srv, _, port := httpGetCountingServer(t, mux)
	t.Cleanup(func() { close(stop) }) // runs before srv.Close
	h, _, _ := newTestHTTPGet(t, HTTPGetConfig{AllowedPorts: []uint16{port}, AllowPrefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})

	for _, path := range []string{"/slow-headers", "/slow-body"} {
		t.Run(path, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			_, err := h.Run(ctx, httpGetArgsJSON(srv.URL+path))
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err %v, want the context deadline", err)
			}
		})
	}
	t.Run("/switching-protocols", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		var err error
		if _, ok := runWithin(stretched(10*time.Second), func() { _, err = h.Run(ctx, httpGetArgsJSON(srv.URL+"/switching-protocols")) }); !ok {
			t.Fatal("Run still reading the switched connection long after its deadline")
		}
		toolsAWantCode(t, err, "request_failed", "101")
	})
	t.Run("through the runner", func(t *testing.T) {
		r := toolsARunner(t, Limits{}, h)
		res, status, err := r.Run(context.Background(), Call{Tool: "http_get", Args: httpGetArgsJSON(srv.URL + "/slow-headers"), Timeout: 100 * time.Millisecond})
		if err != nil || status != StatusTimeout || res.ExitCode != ExitTimeout {
			t.Fatalf("status %q exit %d err %v, want timeout/124", status, res.ExitCode, err)
		}
	})
	t.Run("header cap", func(t *testing.T) {
		_, err := h.Run(context.Background(), httpGetArgsJSON(srv.URL+"/huge-headers"))
		toolsAWantCode(t, err, "response_headers_too_large", "")
	})
	t.Run("header cap over HTTP/2", func(t *testing.T) {
		tlsSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			for i := range 40 {
				w.Header().Set(fmt.Sprintf("X-Pad-%d", i), strings.Repeat("p", 1000))
			}
		}))
		tlsSrv.EnableHTTP2 = true
		tlsSrv.StartTLS()
		defer tlsSrv.Close()
		u, _ := url.Parse(tlsSrv.URL)
		tlsPort, _ := strconv.Atoi(u.Port())
		h2, _, _ := newTestHTTPGet(t, HTTPGetConfig{AllowedPorts: []uint16{uint16(tlsPort)}, AllowPrefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
		h2.client.Transport.(*http.Transport).TLSClientConfig.RootCAs = tlsSrv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
		_, err := h2.Run(context.Background(), httpGetArgsJSON(tlsSrv.URL+"/"))
		toolsAWantCode(t, err, "response_headers_too_large", "")
	})
}

func TestHTTPGetConnectionErrors(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	// A port on 127.0.0.1 with nothing listening.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	h, _, _ := newTestHTTPGet(t, HTTPGetConfig{AllowedPorts: []uint16{closed}, AllowPrefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	_, err = h.Run(context.Background(), httpGetArgsJSON(fmt.Sprintf("http://127.0.0.1:%d/", closed)))
	toolsAWantCode(t, err, "connection_failed", "")
	_, err = h.Run(context.Background(), httpGetArgsJSON(fmt.Sprintf("http://no-such-name.test:%d/", closed)))
	toolsAWantCode(t, err, "dns_lookup_failed", "no-such-name.test")
	if strings.Contains(err.Error(), "10.53.0.2") {
		t.Errorf("the lookup failure names the operator's DNS server: %v", err)
	}
}

func TestHTTPGetSimulate(t *testing.T) {
	h, probe, dns := newTestHTTPGet(t, HTTPGetConfig{})
	out, err := h.Simulate(context.Background(), json.RawMessage(`{"url":"https://api.example.com/data#frag","headers":{"accept":"application/json"}}`))
	if err != nil {
		t.Fatalf("Simulate: %v", err)
	}
	b, _ := json.Marshal(out)
	var got struct {
		Status       int               `json:"status"`
		Body         string            `json:"body"`
		Headers      map[string]string `json:"headers"`
		WouldRequest HTTPGetPlan       `json:"wouldRequest"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Status != 200 || got.Body != "Simulated GET https://api.example.com/data#frag" || got.Headers == nil || len(got.Headers) != 0 {
		t.Errorf("seed shape broken: %s", b)
	}
	if !bytes.Contains(b, []byte(`"headers":{}`)) {
		t.Errorf("headers must encode as {}: %s", b)
	}
	w := got.WouldRequest
	if w.Method != "GET" || w.URL != "https://api.example.com/data" || w.Host != "api.example.com" || w.Port != 443 ||
		w.Headers["accept"] != "application/json" || w.MaxBodyBytes != HTTPGetDefaultMaxBodyBytes || w.MaxRedirects != HTTPGetDefaultMaxRedirects {
		t.Errorf("wouldRequest %+v", w)
	}
	if dns.lookups.Load() != 0 || len(probe.snapshot()) != 0 {
		t.Error("dry-run resolved a name or opened a socket")
	}
}

// A body that fits MaxBodyBytes can still encode to more JSON than the runner's output cap
// (each <, > and & becomes six bytes, base64 adds a third): the body is cut to fit the cap,
// so the caller gets a truncated page rather than output_too_large.
func TestHTTPGetBodyFitsOutputCap(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	mux := http.NewServeMux()
	mux.HandleFunc("/text", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, strings.Repeat("a", 200_000)) })
	mux.HandleFunc("/markup", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, strings.Repeat("<a>&\x01", 45_000)) })
	mux.HandleFunc("/binary", func(w http.ResponseWriter, _ *http.Request) { w.Write(bytes.Repeat([]byte{0xff, 0}, 100_000)) })
	srv, _, port := httpGetCountingServer(t, mux)
	h, _, _ := newTestHTTPGet(t, HTTPGetConfig{AllowedPorts: []uint16{port}, AllowPrefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	for _, tc := range []struct {
		path     string
		capBytes int
		full     string // the whole body; the output must hold a truncated prefix of it
		encoding string
	}{
		{"/text", 64 << 10, strings.Repeat("a", 200_000), "utf8"},
		{"/markup", 1 << 20, strings.Repeat("<a>&\x01", 45_000), "utf8"},
		{"/markup", 64 << 10, strings.Repeat("<a>&\x01", 45_000), "utf8"},
		{"/binary", 64 << 10, strings.Repeat("\xff\x00", 100_000), "base64"},
	} {
		t.Run(fmt.Sprintf("%s within %d", tc.path, tc.capBytes), func(t *testing.T) {
			r := toolsARunner(t, Limits{MaxOutputBytes: tc.capBytes}, h)
			res, status, err := r.Run(context.Background(), Call{Tool: "http_get", Args: httpGetArgsJSON(srv.URL + tc.path)})
			if err != nil || status != StatusCompleted {
				t.Fatalf("status %q err %v error %v, want a completed call", status, err, res.Error)
			}
			if len(res.Output) > tc.capBytes {
				t.Fatalf("output is %d bytes, the cap is %d", len(res.Output), tc.capBytes)
			}
			var o HTTPGetOutput
			if err := json.Unmarshal(res.Output, &o); err != nil {
				t.Fatal(err)
			}
			body := o.Body
			if o.BodyEncoding == "base64" {
				b, err := base64.StdEncoding.DecodeString(o.Body)
				if err != nil {
					t.Fatalf("body is not base64: %v", err)
				}
				body = string(b)
			}
			if o.BodyEncoding != tc.encoding || !o.Truncated || o.BodyBytes != len(body) ||
				len(body) < tc.capBytes/8 || !strings.HasPrefix(tc.full, body) {
				t.Errorf("encoding %s truncated %v bodyBytes %d body %d bytes %.20q, want a %s prefix of the page, marked truncated",
					o.BodyEncoding, o.Truncated, o.BodyBytes, len(body), body, tc.encoding)
			}
		})
	}
}

// httpGetStuckDNS never answers: each lookup waits for its context, or for the test's end.
type httpGetStuckDNS struct {
	started, ended chan struct{}
	release        chan struct{}
}

func (s *httpGetStuckDNS) LookupNetIP(ctx context.Context, _, _ string) ([]netip.Addr, error) {
	close(s.started)
	defer close(s.ended)
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.release:
		return nil, errors.New("released by the test")
	}
}

// net/http dials on a context detached from the request's, so that a later request could use
// the connection. None ever will (keep-alives are off): the lookup, the connection attempts
// and the TLS handshake must end with the call, not run on past its deadline.
func TestHTTPGetDialEndsWithTheCall(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	t.Run("name lookup", func(t *testing.T) {
		dns := &httpGetStuckDNS{started: make(chan struct{}), ended: make(chan struct{}), release: make(chan struct{})}
		t.Cleanup(func() { close(dns.release) })
		h := NewHTTPGet(HTTPGetConfig{Resolver: dns})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { _, err := h.Run(ctx, httpGetArgsJSON("http://stuck.test/")); done <- err }()
		<-dns.started
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v, want the cancellation", err)
		}
		if _, ok := runWithin(stretched(10*time.Second), func() { <-dns.ended }); !ok {
			t.Fatal("the lookup is still running long after the call ended")
		}
	})
	t.Run("TLS handshake", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		accepted := make(chan net.Conn, 1)
		go func() {
			if c, err := ln.Accept(); err == nil {
				accepted <- c
			}
		}()
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		h, _, _ := newTestHTTPGet(t, HTTPGetConfig{AllowedPorts: []uint16{port}, AllowPrefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
		h.client.Transport.(*http.Transport).TLSHandshakeTimeout = time.Hour // only the call's end may stop it
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { _, err := h.Run(ctx, httpGetArgsJSON(fmt.Sprintf("https://127.0.0.1:%d/", port))); done <- err }()
		c := <-accepted // the server never answers the ClientHello
		defer c.Close()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v, want the cancellation", err)
		}
		// The read ends when the client closes the connection.
		if _, ok := runWithin(stretched(10*time.Second), func() { io.Copy(io.Discard, c) }); !ok {
			c.Close()
			t.Fatal("the connection is still open long after the call ended")
		}
	})
}

// httpGetRebindingDNS answers 127.0.0.1 (allowed in the test below) to the first lookup and
// 127.0.0.2 to every later one, as a rebinding name with a zero TTL would.
type httpGetRebindingDNS struct{ lookups atomic.Int32 }

func (r *httpGetRebindingDNS) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	if r.lookups.Add(1) == 1 {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	return []netip.Addr{netip.MustParseAddr("127.0.0.2")}, nil
}

// The address judged is the address dialled: a name that passed once and then rebinds to an
// internal address is refused on the next connection, here the redirect's.
func TestHTTPGetDNSRebinding(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	mux := http.NewServeMux()
	mux.HandleFunc("/first", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/second", http.StatusFound) })
	mux.HandleFunc("/second", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "internal secret") })
	_, conns, port := httpGetCountingServer(t, mux)
	h, probe, _ := newTestHTTPGet(t, HTTPGetConfig{AllowedPorts: []uint16{port}, AllowPrefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	dns := &httpGetRebindingDNS{}
	h.dialer.resolver = dns
	_, err := h.Run(context.Background(), httpGetArgsJSON(fmt.Sprintf("http://rebind.test:%d/first", port)))
	toolsAWantCode(t, err, "destination_not_allowed", "loopback address")
	if v := probe.snapshot()[netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), port)]; v == nil || dns.lookups.Load() != 2 {
		t.Errorf("rebound address verdict %v after %d lookups, want a refusal after 2", v, dns.lookups.Load())
	}
	if n := conns.Load(); n != 1 || probe.fenced.Load() != 0 {
		t.Errorf("server saw %d connection(s), fence stopped %d; want only the first, allowed one", n, probe.fenced.Load())
	}
}

// A proxy named by the environment would be dialled instead of the checked destination: it
// must be ignored.
func TestHTTPGetIgnoresProxyEnvironment(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	proxy, proxyConns, _ := httpGetCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "proxied") }))
	_, _, port := httpGetCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "direct") }))
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"} {
		t.Setenv(k, proxy.URL)
	}
	h, _, _ := newTestHTTPGet(t, HTTPGetConfig{AllowedPorts: []uint16{port}, AllowPrefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	// By a name: net/http never proxies a loopback IP literal, whatever the environment says.
	out, err := h.Run(context.Background(), httpGetArgsJSON(fmt.Sprintf("http://loopback.test:%d/", port)))
	if err != nil || out.(HTTPGetOutput).Body != "direct" {
		t.Fatalf("got %+v, %v; want the origin's answer, fetched directly", out, err)
	}
	if n := proxyConns.Load(); n != 0 {
		t.Errorf("the proxy accepted %d connection(s)", n)
	}
}

// A dry run is faithful about internationalized names: it names the host in the form that
// would be looked up and dialled, and refuses one whose form is a refused destination.
func TestHTTPGetSimulateMapsInternationalizedHosts(t *testing.T) {
	h, _, _ := newTestHTTPGet(t, HTTPGetConfig{})
	out, err := h.Simulate(context.Background(), json.RawMessage(`{"url":"https://ⓔⓧⓐⓜⓟⓛⓔ.com/x"}`))
	if err != nil {
		t.Fatalf("Simulate: %v", err)
	}
	b, _ := json.Marshal(out)
	var got struct {
		WouldRequest HTTPGetPlan `json:"wouldRequest"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.WouldRequest.Host != "example.com" || got.WouldRequest.URL != "https://example.com/x" {
		t.Errorf("wouldRequest %+v; want the host as it would be dialled", got.WouldRequest)
	}
	_, err = h.Simulate(context.Background(), json.RawMessage(`{"url":"http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/"}`))
	toolsAWantCode(t, err, "destination_not_allowed", "localhost names")
}
