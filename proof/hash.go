package proof

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/go-json-experiment/json/jsontext"
)

// ErrMismatch is returned by Verify when a record does not hash to the claimed proof hash.
var ErrMismatch = errors.New("proof_hash_mismatch")

// ErrMalformedHash is returned by Verify when the claimed hash is not "0x" + 64 hex digits.
var ErrMalformedHash = errors.New("malformed_proof_hash")

// Canonicalize returns the RFC 8785 canonical form of a JSON document. Documents that are
// not I-JSON (RFC 7493: duplicate member names, invalid UTF-8, lone surrogates, a number
// beyond a double's range) have no canonical form and are refused. The input is not modified.
func Canonicalize(doc []byte) ([]byte, error) {
	v := jsontext.Value(append([]byte(nil), doc...))
	if err := v.Canonicalize(); err != nil {
		return nil, fmt.Errorf("canonicalize: %w", err)
	}
	if err := checkNumberRange(doc, v); err != nil {
		return nil, err
	}
	return v, nil
}

// maxDoubleText is how jsontext writes the largest double, and also every number that
// rounds to ±Infinity.
var maxDoubleText = []byte("1.7976931348623157e+308")

// checkNumberRange refuses doc when it holds a number that rounds to ±Infinity as a double:
// RFC 8785 (§3.2.2.3) requires an error for it, and every independent implementation gives
// one, but jsontext writes it as ±1.7976931348623157e+308, a hash nobody else could
// recompute. Only a canonical form holding that text can come from such a number, so the
// exact check runs on the rare document whose canonical form does.
func checkNumberRange(doc, canonical []byte) error {
	if !bytes.Contains(canonical, maxDoubleText) {
		return nil
	}
	dec := jsontext.NewDecoder(bytes.NewReader(doc))
	for {
		tok, err := dec.ReadToken()
		if err != nil {
			return nil // doc canonicalised, so this is its end
		}
		if tok.Kind() == '0' {
			if _, err := tok.Float(); err != nil {
				return fmt.Errorf("canonicalize: the number %s is beyond the range of a double", tok.String())
			}
		}
	}
}

// HashCanonical returns the proof hash of bytes that are already canonical.
func HashCanonical(canonical []byte) string {
	sum := sha256.Sum256(canonical)
	var h [2 + 2*sha256.Size]byte
	h[0], h[1] = '0', 'x'
	hex.Encode(h[2:], sum[:])
	return string(h[:])
}

// Hash returns the proof hash of a JSON document: "0x" + hex(SHA-256(JCS(doc))).
func Hash(doc []byte) (string, error) {
	c, err := Canonicalize(doc)
	if err != nil {
		return "", err
	}
	return HashCanonical(c), nil
}

// Seal marshals v to JSON, canonicalises it and returns the canonical bytes and their hash.
func Seal(v any) (canonical []byte, hash string, err error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, "", fmt.Errorf("seal: %w", err)
	}
	c, err := Canonicalize(raw)
	if err != nil {
		return nil, "", err
	}
	return c, HashCanonical(c), nil
}

// Verify recomputes the hash of doc and compares it with want (case-insensitive hex, "0x"
// prefix required). It returns nil on a match, ErrMismatch (wrapped, with both hashes) on a
// mismatch, and another error when either input is malformed.
func Verify(doc []byte, want string) error {
	if !wellFormed(want) {
		return fmt.Errorf("%w: %q", ErrMalformedHash, want)
	}
	got, err := Hash(doc)
	if err != nil {
		return err
	}
	if !strings.EqualFold(got, want) {
		return fmt.Errorf("%w: record hashes to %s, claimed %s", ErrMismatch, got, strings.ToLower(want))
	}
	return nil
}

func wellFormed(h string) bool {
	if len(h) != 66 || (h[:2] != "0x" && h[:2] != "0X") {
		return false
	}
	_, err := hex.DecodeString(h[2:])
	return err == nil
}
