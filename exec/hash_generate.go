package exec

import (
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"hash"

	"github.com/ethereum/go-ethereum/crypto/blake2b"
	"github.com/ethereum/go-ethereum/crypto/keccak"
	"github.com/gowebpki/jcs"
)

// hashGenerateAlgorithms maps each supported name to its constructor. md5 and sha1 are broken
// for collision resistance; they are offered for checksums and legacy identifiers only.
var hashGenerateAlgorithms = map[string]func() hash.Hash{
	"sha256":      sha256.New,
	"sha512":      sha512.New,
	"sha1":        sha1.New,
	"md5":         md5.New,
	"sha3-256":    func() hash.Hash { return sha3.New256() },
	"keccak256":   keccak.NewLegacyKeccak256, // Ethereum's pre-standard Keccak, not SHA3-256
	"blake2b-256": func() hash.Hash { h, _ := blake2b.New256(nil); return h },
}

// hashGenerateMaxCanonical is the longest canonical form echoed back; longer ones are hashed
// but not repeated, so that the output stays small.
const hashGenerateMaxCanonical = 4096

// HashGenerate is the hash_generate tool. Hashing is pure, so dry-run returns the real digest.
type HashGenerate struct{}

// NewHashGenerate returns the hash_generate tool.
func NewHashGenerate() *HashGenerate { return &HashGenerate{} }

// Name implements Tool.
func (*HashGenerate) Name() string { return "hash_generate" }

// Description implements Tool.
func (*HashGenerate) Description() string {
	return "Hash a string (utf8, hex or base64) or any JSON value (over its RFC 8785 canonical form); SHA-256 by default"
}

// Schema implements Tool.
func (*HashGenerate) Schema() json.RawMessage { return hashGenerateSchema }

var hashGenerateSchema = json.RawMessage(`{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "oneOf": [{"required": ["input"]}, {"required": ["value"]}],
  "properties": {
    "input":     {"type": "string", "maxLength": 1048576, "description": "bytes to hash, in the given encoding"},
    "encoding":  {"type": "string", "enum": ["utf8", "hex", "base64"], "default": "utf8"},
    "value":     {"type": ["object", "array", "string", "number", "boolean", "null"], "maxLength": 1048576,
                  "description": "any JSON value, hashed over its RFC 8785 (JCS) canonical form"},
    "algorithm": {"type": "string", "enum": ["sha256", "sha512", "sha1", "md5", "sha3-256", "keccak256", "blake2b-256"], "default": "sha256"}
  }
}`)

type hashGenerateArgs struct {
	Input     *string         `json:"input"`
	Encoding  string          `json:"encoding"`
	Value     json.RawMessage `json:"value"`
	Algorithm string          `json:"algorithm"`
}

// HashGenerateOutput is the digest in two encodings. Hex is lower-case without a 0x prefix.
type HashGenerateOutput struct {
	Algorithm  string `json:"algorithm"`
	Hex        string `json:"hex"`
	Base64     string `json:"base64"`
	InputBytes int    `json:"inputBytes"`          // length of the bytes that were hashed
	Canonical  string `json:"canonical,omitempty"` // the JCS form hashed, for a JSON value up to 4 KiB
}

// Simulate returns the real digest: hashing has no side effect.
func (h *HashGenerate) Simulate(ctx context.Context, raw json.RawMessage) (any, error) {
	return h.Run(ctx, raw)
}

// Run computes the digest.
func (*HashGenerate) Run(_ context.Context, raw json.RawMessage) (any, error) {
	var a hashGenerateArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, Failf("invalid_args", "%v", err)
	}
	if a.Algorithm == "" {
		a.Algorithm = "sha256"
	}
	newHash, ok := hashGenerateAlgorithms[a.Algorithm]
	if !ok {
		return nil, Failf("unsupported_algorithm", "algorithm %q is not supported", a.Algorithm)
	}
	data, canonical, err := hashGenerateBytes(a)
	if err != nil {
		return nil, err
	}
	hh := newHash()
	hh.Write(data)
	sum := hh.Sum(nil)
	return HashGenerateOutput{
		Algorithm:  a.Algorithm,
		Hex:        hex.EncodeToString(sum),
		Base64:     base64.StdEncoding.EncodeToString(sum),
		InputBytes: len(data),
		Canonical:  canonical,
	}, nil
}

// hashGenerateBytes returns the bytes to hash and, for a JSON value, their canonical text.
func hashGenerateBytes(a hashGenerateArgs) ([]byte, string, error) {
	switch {
	case a.Input != nil && len(a.Value) > 0:
		return nil, "", Failf("invalid_args", "give either input or value, not both")
	case a.Input != nil:
		switch a.Encoding {
		case "", "utf8":
			return []byte(*a.Input), "", nil
		case "hex":
			b, err := hex.DecodeString(*a.Input)
			if err != nil {
				return nil, "", Failf("invalid_input", "input is not valid hex: %v", err)
			}
			return b, "", nil
		case "base64":
			// Accept padded or unpadded, standard or URL-safe: callers rarely say which they hold.
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
				if b, err := enc.DecodeString(*a.Input); err == nil {
					return b, "", nil
				}
			}
			return nil, "", Failf("invalid_input", "input is not valid base64")
		default:
			return nil, "", Failf("invalid_args", "encoding %q is not supported", a.Encoding)
		}
	case len(a.Value) > 0:
		c, err := jcs.Transform(a.Value)
		if err != nil {
			return nil, "", Failf("invalid_input", "value cannot be canonicalised: %v", err)
		}
		if len(c) > hashGenerateMaxCanonical {
			return c, "", nil
		}
		return c, string(c), nil
	default:
		return nil, "", Failf("invalid_args", "give input or value")
	}
}
