// Package proof seals call records so that anyone can verify them: a record is serialised
// to JSON, canonicalised with RFC 8785 (JSON Canonicalization Scheme), and hashed with
// SHA-256. The proof hash is "0x" followed by the 64 lowercase hex digits of that hash.
//
// Verification needs nothing but the record as JSON: recompute Hash over it and compare.
// Key order, whitespace and number spelling do not matter, because canonicalisation
// removes them; any change to a value does.
package proof
