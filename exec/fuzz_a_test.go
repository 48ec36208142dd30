package exec

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// FuzzRegexMatchArgs feeds arbitrary patterns and inputs through schema validation and the
// tool, and checks the deadline-aware search against regexp's own FindAll and ReplaceAll.
func FuzzRegexMatchArgs(f *testing.F) {
	f.Add(`(?P<y>\d{4})-(\d\d)`, "2024-03 2025-04", "", uint8(1), 5)
	f.Add(`\bfoo\b`, "foo foofoo foo", "i", uint8(2), 0)
	f.Add(`(?m)^$`, "a\n\nb\n", "m", uint8(1), 3)
	f.Add(`\b\Qa.b`, "a.b xa.b", "s", uint8(0), 1)
	f.Add(`a*`, "baaac", "ims", uint8(2), 100)
	f.Add(`[`, "x", "", uint8(0), 0)
	reg, err := NewRegistry(NewRegexMatch())
	if err != nil {
		f.Fatal(err)
	}
	modes := []string{"match", "find_all", "replace"}
	f.Fuzz(func(t *testing.T, pattern, input, flags string, mode uint8, maxMatches int) {
		a := regexMatchArgs{Pattern: pattern, Input: input, Flags: flags, Mode: modes[int(mode)%len(modes)], Replacement: "[$0]", MaxMatches: maxMatches}
		raw, _ := json.Marshal(a)
		valid, err := reg.Validate("regex_match", raw)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		out, err := NewRegexMatch().Run(ctx, valid)
		if err != nil {
			var te *ToolError
			if !errors.As(err, &te) && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		if _, err := json.Marshal(out); err != nil {
			t.Fatalf("output not encodable: %v", err)
		}
		if len(input) > 512 {
			return
		}
		// The tool saw the args after a JSON round trip; compare on the same strings.
		if err := json.Unmarshal(valid, &a); err != nil {
			t.Fatal(err)
		}
		prog, err := regexMatchCompile(a.Pattern, a.Flags)
		if err != nil {
			t.Fatalf("compiled in Run but not here: %v", err)
		}
		var got [][]int
		if _, err := prog.each(ctx, a.Input, 1<<20, func(loc []int) error {
			got = append(got, slices.Clone(loc))
			return nil
		}); err != nil {
			return
		}
		want := prog.re.FindAllStringSubmatchIndex(a.Input, -1)
		if !slices.EqualFunc(got, want, slices.Equal[[]int]) {
			t.Fatalf("pattern %q on %q: matches %v, regexp finds %v", prog.re, a.Input, got, want)
		}
		res, _, _, err := prog.replace(ctx, regexMatchArgs{Input: a.Input, Replacement: "[$0]"}, 1<<20)
		if err == nil {
			if w := prog.re.ReplaceAllString(a.Input, "[$0]"); res != w {
				t.Fatalf("pattern %q on %q: replace %q, regexp gives %q", prog.re, a.Input, res, w)
			}
		}
	})
}

// FuzzTimestampParse checks that any accepted input yields self-consistent notations.
func FuzzTimestampParse(f *testing.F) {
	f.Add("2024-02-29T12:30:00Z", false, "", "", "Europe/Paris", "")
	f.Add("1700000000123", true, "unix", "", "", "auto")
	f.Add("-1.5e3", true, "", "", "Asia/Kolkata", "ms")
	f.Add("14/11/2023 22:13", false, "", "02/01/2006 15:04", "America/New_York", "")
	f.Add("Tue, 14 Nov 2023 22:13:20 GMT", false, "rfc1123", "", "UTC", "")
	f.Add("1e999999", false, "unix", "", "", "ns")
	reg, err := NewRegistry(NewTimestampParse())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, input string, asNumber bool, format, layout, tz, unit string) {
		args := map[string]any{"input": input}
		if asNumber {
			if !json.Valid([]byte(input)) || strings.TrimLeft(input, " -0123456789.eE+") != "" {
				return
			}
			args["input"] = json.RawMessage(input)
		}
		for k, v := range map[string]string{"format": format, "layout": layout, "timezone": tz, "unit": unit} {
			if v != "" {
				args[k] = v
			}
		}
		raw, err := json.Marshal(args)
		if err != nil {
			return
		}
		valid, err := reg.Validate("timestamp_parse", raw)
		if err != nil {
			return
		}
		out, err := NewTimestampParse().Run(context.Background(), valid)
		if err != nil {
			var te *ToolError
			if !errors.As(err, &te) {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		o := out.(TimestampParseOutput)
		for _, s := range []string{o.RFC3339, o.ISO8601} {
			ts, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				t.Fatalf("output %q does not parse back: %v", s, err)
			}
			if ts.Unix() != o.Unix || ts.UnixMilli() != o.UnixMs {
				t.Fatalf("%q is %d, output says unix %d ms %d", s, ts.Unix(), o.Unix, o.UnixMs)
			}
		}
	})
}

// FuzzHTTPGetURL drives arbitrary URLs through the URL checks and the dialer. DNS is a fake
// and a fence refuses every connection, so nothing is ever sent; the invariant is that the
// policy only ever lets a public address through.
func FuzzHTTPGetURL(f *testing.F) {
	for _, u := range []string{
		"https://public.test/x", "http://127.0.0.1/", "http://[::ffff:127.0.0.1]/", "http://0x7f.1/",
		"http://loopback.test/", "http://mixed.test/", "http://user@public.test/", "http://[fe80::1%25lo]/",
		"http://public.test:443/", "gopher://public.test/", "http://%31%32%37.0.0.1/", "http://[::]:80/",
	} {
		f.Add(u)
	}
	dns := &httpGetFakeDNS{names: httpGetTestNames}
	var mu sync.Mutex
	var allowed []netip.AddrPort
	h := NewHTTPGet(HTTPGetConfig{Resolver: dns, Observe: func(dst netip.AddrPort, verdict error) {
		if verdict == nil {
			mu.Lock()
			allowed = append(allowed, dst)
			mu.Unlock()
		}
	}})
	h.dialer.fence = func(netip.AddrPort) error { return errors.New("fuzz fence: no connections") }
	f.Fuzz(func(t *testing.T, rawURL string) {
		mu.Lock()
		allowed = allowed[:0]
		mu.Unlock()
		args, _ := json.Marshal(map[string]string{"url": rawURL})
		if _, err := h.Simulate(context.Background(), args); err != nil {
			var te *ToolError
			if !errors.As(err, &te) {
				t.Fatalf("Simulate: unexpected error type %T: %v", err, err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		out, err := h.Run(ctx, args)
		if err == nil {
			t.Fatalf("Run succeeded with every connection fenced: %+v", out)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, dst := range allowed {
			if a := dst.Addr(); !a.IsGlobalUnicast() || a.IsPrivate() || a.Is4In6() || (dst.Port() != 80 && dst.Port() != 443) {
				t.Fatalf("the policy allowed %s for %q", dst, rawURL)
			}
		}
	})
}
