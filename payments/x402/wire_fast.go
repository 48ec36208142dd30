package x402

import "unicode/utf8"

// A decoder for the one shape every reference client sends, so that the common payment skips
// encoding/json's reflection (half the cost of decoding). It accepts a strict subset of JSON:
// objects with the known keys, each at most once, plain strings (no escapes) and integers; on
// anything else it reports false and DecodePaymentPayload takes encoding/json's path. On what
// it accepts it produces exactly what encoding/json produces, which FuzzFastPayload checks.

// scanner walks valid UTF-8 (its callers check it) and stops at the first surprise.
type scanner struct {
	b  []byte
	i  int
	ok bool
}

func (s *scanner) space() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\n' || s.b[s.i] == '\r') {
		s.i++
	}
}

// next consumes c, after whitespace, if it comes next.
func (s *scanner) next(c byte) bool {
	s.space()
	if s.ok && s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str reads a string without escapes or control characters.
func (s *scanner) str() string { return string(s.raw()) }

// raw reads such a string in place.
func (s *scanner) raw() []byte {
	if !s.next('"') {
		s.ok = false
		return nil
	}
	for j := s.i; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			v := s.b[s.i:j]
			s.i = j + 1
			return v
		case c == '\\' || c < 0x20:
			s.ok = false
			return nil
		}
	}
	s.ok = false
	return nil
}

// integer reads -?(0|[1-9][0-9]*) that fits an int64; fractions and exponents are refused.
func (s *scanner) integer() int64 {
	s.space()
	neg := s.i < len(s.b) && s.b[s.i] == '-'
	if neg {
		s.i++
	}
	start := s.i
	var n uint64
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		if n > (1<<63-1)/10 {
			s.ok = false
			return 0
		}
		n = n*10 + uint64(s.b[s.i]-'0')
		s.i++
	}
	digits := s.i - start
	if digits == 0 || (digits > 1 && s.b[start] == '0') || n > 1<<63-1 ||
		(s.i < len(s.b) && (s.b[s.i] == '.' || s.b[s.i] == 'e' || s.b[s.i] == 'E')) {
		s.ok = false
		return 0
	}
	if neg {
		return -int64(n)
	}
	return int64(n)
}

// first opens an object whose keys must be among keys, each at most once, and returns the
// index of its first key (-1 for an empty object or on a surprise). seen tracks the keys met.
func (s *scanner) first(keys []string, seen *uint32) int {
	if !s.next('{') {
		s.ok = false
		return -1
	}
	if s.next('}') {
		return -1
	}
	return s.key(keys, seen)
}

// following moves past a member's value to the next key, or closes the object (-1).
func (s *scanner) following(keys []string, seen *uint32) int {
	if s.next(',') {
		return s.key(keys, seen)
	}
	if !s.next('}') {
		s.ok = false
	}
	return -1
}

func (s *scanner) key(keys []string, seen *uint32) int {
	name := s.raw()
	for k, want := range keys {
		if string(name) == want && *seen&(1<<k) == 0 && s.next(':') {
			*seen |= 1 << k
			return k
		}
	}
	s.ok = false
	return -1
}

var (
	payloadKeys       = []string{"x402Version", "scheme", "network", "resource", "accepted", "payload"}
	resourceKeys      = []string{"url", "description", "mimeType"}
	requirementKeys   = []string{"scheme", "network", "amount", "asset", "payTo", "maxTimeoutSeconds", "extra"}
	extraKeys         = []string{"name", "version"}
	exactPayloadKeys  = []string{"signature", "authorization"}
	authorizationKeys = []string{"from", "to", "value", "validAfter", "validBefore", "nonce"}
)

// fastPayload decodes raw if it has the reference client's shape.
func fastPayload(raw []byte) (*PaymentPayload, bool) {
	s := scanner{b: raw, ok: true}
	p := &PaymentPayload{}
	var seen uint32
	for k := s.first(payloadKeys, &seen); k >= 0; k = s.following(payloadKeys, &seen) {
		switch k {
		case 0:
			p.X402Version = int(s.integer())
		case 1:
			p.Scheme = s.str()
		case 2:
			p.Network = s.str()
		case 3:
			p.Resource = &ResourceInfo{}
			s.resource(p.Resource)
		case 4:
			p.Accepted = &PaymentRequirements{}
			s.requirements(p.Accepted)
		case 5:
			s.exactPayload(&p.Payload)
		}
	}
	s.space()
	return p, s.ok && s.i == len(raw)
}

func (s *scanner) resource(r *ResourceInfo) {
	var seen uint32
	for k := s.first(resourceKeys, &seen); k >= 0; k = s.following(resourceKeys, &seen) {
		switch k {
		case 0:
			r.URL = s.str()
		case 1:
			r.Description = s.str()
		case 2:
			r.MimeType = s.str()
		}
	}
}

func (s *scanner) requirements(r *PaymentRequirements) {
	var seen uint32
	for k := s.first(requirementKeys, &seen); k >= 0; k = s.following(requirementKeys, &seen) {
		switch k {
		case 0:
			r.Scheme = s.str()
		case 1:
			r.Network = s.str()
		case 2:
			r.Amount = s.str()
		case 3:
			r.Asset = s.str()
		case 4:
			r.PayTo = s.str()
		case 5:
			r.MaxTimeoutSeconds = s.integer()
		case 6:
			var seenExtra uint32
			for k := s.first(extraKeys, &seenExtra); k >= 0; k = s.following(extraKeys, &seenExtra) {
				if k == 0 {
					r.Extra.Name = s.str()
				} else {
					r.Extra.Version = s.str()
				}
			}
		}
	}
}

func (s *scanner) exactPayload(e *ExactEVMPayload) {
	var seen uint32
	for k := s.first(exactPayloadKeys, &seen); k >= 0; k = s.following(exactPayloadKeys, &seen) {
		if k == 0 {
			e.Signature = s.str()
			continue
		}
		a := &e.Authorization
		var seenAuth uint32
		for k := s.first(authorizationKeys, &seenAuth); k >= 0; k = s.following(authorizationKeys, &seenAuth) {
			v := s.str()
			switch k {
			case 0:
				a.From = v
			case 1:
				a.To = v
			case 2:
				a.Value = v
			case 3:
				a.ValidAfter = v
			case 4:
				a.ValidBefore = v
			case 5:
				a.Nonce = v
			}
		}
	}
}

// plainExtra decodes an `extra` of name and version alone, the shape every reference client
// sends, for Extra.UnmarshalJSON; ok is false for anything else, which then takes the general
// path.
func plainExtra(b []byte) (Extra, bool) {
	var e Extra
	if !utf8.Valid(b) {
		return e, false
	}
	s := scanner{b: b, ok: true}
	var seen uint32
	for k := s.first(extraKeys, &seen); k >= 0; k = s.following(extraKeys, &seen) {
		if k == 0 {
			e.Name = s.str()
		} else {
			e.Version = s.str()
		}
	}
	s.space()
	return e, s.ok && s.i == len(b)
}
