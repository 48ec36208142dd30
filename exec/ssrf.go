package exec

// The SSRF-safe dialer: the only way a tool reaches the network. A destination is checked
// twice: once when the URL names an IP literal (so that dry-run can refuse it, and real mode
// refuses it without creating a socket), and always at connect time on the resolved address,
// in the net.Dialer's Control hook, which runs after the socket exists but before connect(2).
// Checking at connect time is what defeats DNS rebinding and redirects to internal hosts:
// whatever name or redirect led here, the address the kernel is about to connect to is the one
// that is judged.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"code.dny.dev/ssrf"
)

// ssrfMaxAddrs bounds how many resolved addresses one dial tries, so that a hostile DNS answer
// with hundreds of records cannot turn one call into hundreds of connection attempts.
const ssrfMaxAddrs = 8

// Prefixes the deny reasons name; the guardian already refuses all of them.
var (
	ssrfCGNAT  = netip.MustParsePrefix("100.64.0.0/10")
	ssrf6to4   = netip.MustParsePrefix("2002::/16")
	ssrfTeredo = netip.MustParsePrefix("2001::/32")
	// Cloud metadata endpoints: most clouds' link-local one, AWS's IPv6 one, Alibaba's (in
	// the CGNAT range, which an operator on a Tailscale network may well allow).
	ssrfMetadata = []netip.Addr{netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("fd00:ec2::254"), netip.MustParseAddr("100.100.100.200")}
	ssrfBcast    = netip.MustParseAddr("255.255.255.255")
)

// ssrfWireServer is Azure's WireServer, the platform endpoint of a VM's guest agent (goal
// state, extension settings and their certificates). It is a public address, so the IANA
// lists do not refuse it; check refuses it, as it does the metadata endpoints.
var ssrfWireServer = netip.MustParsePrefix("168.63.129.16/32")

// ssrfDeniedError is a refused destination. It becomes the ToolError destination_not_allowed.
type ssrfDeniedError struct {
	Dest   string // the address, host or URL that was refused
	Reason string // why, e.g. "loopback address"
	Err    error  // the guardian's sentinel when it decided, else nil
}

func (e *ssrfDeniedError) Error() string { return e.Dest + ": " + e.Reason }
func (e *ssrfDeniedError) Unwrap() error { return e.Err }

// ssrfLookupError is a failed name resolution. It becomes the ToolError dns_lookup_failed.
type ssrfLookupError struct {
	Host string
	Err  error
}

// Error leaves out the DNS server that a *net.DNSError names: the operator's resolver
// address is not the caller's to learn.
func (e *ssrfLookupError) Error() string {
	var dnsErr *net.DNSError
	if errors.As(e.Err, &dnsErr) {
		return "resolving " + e.Host + ": " + dnsErr.Err
	}
	return "resolving " + e.Host + ": " + e.Err.Error()
}
func (e *ssrfLookupError) Unwrap() error { return e.Err }

// ssrfPolicy decides which destinations are allowed: the guardian's deny lists (IANA special
// purpose registries, everything outside IPv6 global unicast), a port allow-list, and the
// operator's explicit allow-list of prefixes, which never opens a cloud metadata endpoint.
type ssrfPolicy struct {
	guard *ssrf.Guardian
	ports []uint16
}

func newSSRFPolicy(ports []uint16, allow []netip.Prefix) *ssrfPolicy {
	var v4, v6 []netip.Prefix
	for _, p := range allow {
		if p.Addr().Is4() {
			v4 = append(v4, p.Masked())
		} else {
			v6 = append(v6, p.Masked())
		}
	}
	ports = slices.Clone(ports)
	if len(ports) == 0 {
		// The guardian reads an empty list as "any port"; here it means the web defaults.
		ports = []uint16{80, 443}
	}
	return &ssrfPolicy{
		guard: ssrf.New(ssrf.WithPorts(ports...), ssrf.WithAllowedV4Prefixes(v4...), ssrf.WithAllowedV6Prefixes(v6...)),
		ports: ports,
	}
}

// checkPort refuses a port outside the allow-list before any name is resolved.
func (p *ssrfPolicy) checkPort(host string, port uint16) error {
	if slices.Contains(p.ports, port) {
		return nil
	}
	return &ssrfDeniedError{Dest: net.JoinHostPort(host, strconv.Itoa(int(port))), Reason: fmt.Sprintf("port %d is not allowed (allowed: %s)", port, ssrfPortList(p.ports)), Err: ssrf.ErrProhibitedPort}
}

// checkForm refuses address forms that the operating system would silently translate into
// another address: IPv4-mapped IPv6 (Go dials ::ffff:127.0.0.1 as 127.0.0.1) and scoped
// addresses. It runs before dialing because by connect time the original form is gone.
func (p *ssrfPolicy) checkForm(ap netip.AddrPort) error {
	switch a := ap.Addr(); {
	case a.Is4In6():
		return &ssrfDeniedError{Dest: ap.String(), Reason: "IPv4-mapped IPv6 address", Err: ssrf.ErrProhibitedIP}
	case a.Zone() != "":
		return &ssrfDeniedError{Dest: ap.String(), Reason: "scoped IPv6 address", Err: ssrf.ErrProhibitedIP}
	}
	return nil
}

// check decides one concrete destination.
func (p *ssrfPolicy) check(ap netip.AddrPort) error {
	if err := p.checkForm(ap); err != nil {
		return err
	}
	// The allow-list names private ranges to reach; a cloud metadata endpoint inside one
	// (169.254.169.254 in 169.254.0.0/16, fd00:ec2::254 in fd00::/8) is refused all the same.
	if a := ap.Addr(); slices.Contains(ssrfMetadata, a) || ssrfWireServer.Contains(a) {
		return &ssrfDeniedError{Dest: ap.String(), Reason: ssrfAddrReason(a), Err: ssrf.ErrProhibitedIP}
	}
	err := p.guard.SafeAddrPort(ap)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ssrf.ErrProhibitedPort):
		return p.checkPort(ap.Addr().String(), ap.Port())
	default:
		return &ssrfDeniedError{Dest: ap.String(), Reason: ssrfAddrReason(ap.Addr()), Err: err}
	}
}

// ssrfAddrReason names the class of a refused address for the caller.
func ssrfAddrReason(a netip.Addr) string {
	switch {
	case a.Is4In6():
		return "IPv4-mapped IPv6 address"
	case a.IsUnspecified():
		return "unspecified address"
	case a.IsLoopback():
		return "loopback address"
	case slices.Contains(ssrfMetadata, a.WithZone("")):
		return "cloud metadata endpoint"
	case ssrfWireServer.Contains(a):
		return "cloud platform endpoint (Azure WireServer)"
	case a.IsLinkLocalUnicast():
		return "link-local address"
	case a.IsMulticast():
		return "multicast address"
	case a == ssrfBcast:
		return "broadcast address"
	case a.IsPrivate():
		return "private address"
	case ssrfCGNAT.Contains(a):
		return "shared address space (CGNAT)"
	case ssrf.IPv6NAT64Prefix.Contains(a):
		return "NAT64 address"
	case ssrf6to4.Contains(a):
		return "6to4 address"
	case ssrfTeredo.Contains(a):
		return "Teredo address"
	case a.Is6() && !ssrf.IPv6GlobalUnicast.Contains(a):
		return "IPv6 address outside global unicast"
	default:
		return "special-purpose address"
	}
}

func ssrfPortList(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ", ")
}

// ssrfDialer resolves a name, then connects to each resolved address in turn, letting the
// policy judge every address in the Control hook.
type ssrfDialer struct {
	policy   *ssrfPolicy
	resolver HTTPGetResolver
	observe  func(dst netip.AddrPort, verdict error) // optional; sees every policy decision
	// fence is a second, stricter check after the policy; tests set it so that nothing can
	// leave 127.0.0.1 even if the policy under test were wrong. Nil in production.
	fence  func(dst netip.AddrPort) error
	dialer net.Dialer
}

func newSSRFDialer(policy *ssrfPolicy, resolver HTTPGetResolver, observe func(netip.AddrPort, error)) *ssrfDialer {
	d := &ssrfDialer{policy: policy, resolver: resolver, observe: observe}
	// KeepAlive -1: connections are never reused (the transport disables keep-alives), so
	// TCP keep-alive probes would only keep sockets of finished calls busy.
	d.dialer = net.Dialer{Timeout: 15 * time.Second, KeepAlive: -1, Control: d.control}
	return d
}

// control runs after socket(2) and before connect(2) for every connection attempt.
func (d *ssrfDialer) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	var verdict error
	switch {
	case err != nil:
		verdict = &ssrfDeniedError{Dest: address, Reason: "unparseable socket address", Err: ssrf.ErrInvalidHostPort}
	case network != "tcp4" && network != "tcp6":
		verdict = &ssrfDeniedError{Dest: address, Reason: "network " + network + " is not allowed", Err: ssrf.ErrProhibitedNetwork}
	default:
		verdict = d.policy.check(ap)
	}
	return d.decided(ap, verdict)
}

func (d *ssrfDialer) decided(ap netip.AddrPort, verdict error) error {
	if d.observe != nil {
		d.observe(ap, verdict)
	}
	if verdict == nil && d.fence != nil {
		verdict = d.fence(ap)
	}
	return verdict
}

// ssrfCallKey is the context key under which withSSRFCall keeps the call's own context.
type ssrfCallKey struct{}

// withSSRFCall records ctx as the call that dials. net/http dials on a context detached from
// the request's cancellation and deadline, so that a later request could use the connection;
// none ever will (keep-alives are off), so DialContext ties the dial and the connection to
// the call instead: a lookup, connection attempts or a TLS handshake cannot outlive it.
func withSSRFCall(ctx context.Context) context.Context {
	return context.WithValue(ctx, ssrfCallKey{}, ctx)
}

// ssrfCallConn is a connection closed when its call ends, if nothing closed it before.
type ssrfCallConn struct {
	net.Conn
	stop func() bool
}

func (c *ssrfCallConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

// DialContext has the signature http.Transport wants. Only TCP is dialed.
func (d *ssrfDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	call, ok := ctx.Value(ssrfCallKey{}).(context.Context)
	if !ok {
		return d.dial(ctx, network, address)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(call, cancel)
	defer stop()
	conn, err := d.dial(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return &ssrfCallConn{Conn: conn, stop: context.AfterFunc(call, func() { conn.Close() })}, nil
}

func (d *ssrfDialer) dial(ctx context.Context, network, address string) (net.Conn, error) {
	if network != "tcp" && network != "tcp4" && network != "tcp6" {
		return nil, &ssrfDeniedError{Dest: address, Reason: "network " + network + " is not allowed", Err: ssrf.ErrProhibitedNetwork}
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, &ssrfDeniedError{Dest: address, Reason: "not a host:port pair", Err: ssrf.ErrInvalidHostPort}
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, &ssrfDeniedError{Dest: address, Reason: "invalid port", Err: ssrf.ErrInvalidHostPort}
	}
	if err := d.policy.checkPort(host, uint16(port)); err != nil {
		return nil, err
	}
	addrs, err := d.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	var firstErr error
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a, uint16(port))
		if verdict := d.policy.checkForm(ap); verdict != nil {
			err = d.decided(ap, verdict)
		} else {
			var conn net.Conn
			conn, err = d.dialer.DialContext(ctx, "tcp", ap.String())
			if err == nil {
				return conn, nil
			}
		}
		if ctx.Err() != nil {
			return nil, err
		}
		// A refusal explains more than a connection error on another address.
		var denied *ssrfDeniedError
		if firstErr == nil || (errors.As(err, &denied) && !errors.As(firstErr, &denied)) {
			firstErr = err
		}
	}
	var denied *ssrfDeniedError
	if _, err := netip.ParseAddr(host); err != nil && errors.As(firstErr, &denied) {
		// What a host name resolves to is the operator's network, not the caller's to learn:
		// the refusal names the host and the class of address; Observe still sees the address.
		return nil, &ssrfDeniedError{Dest: net.JoinHostPort(host, portStr), Reason: "resolves to a refused address: " + denied.Reason, Err: denied.Err}
	}
	return nil, firstErr
}

func (d *ssrfDialer) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	addrs, err := d.resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, &ssrfLookupError{Host: host, Err: err}
	}
	if len(addrs) == 0 {
		return nil, &ssrfLookupError{Host: host, Err: errors.New("no addresses")}
	}
	if len(addrs) > ssrfMaxAddrs {
		addrs = addrs[:ssrfMaxAddrs]
	}
	return addrs, nil
}
