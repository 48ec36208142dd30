package client

import (
	"crypto/ecdsa"
	"errors"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

// Signer signs EIP-712 digests for the payer's address. An HSM, a KMS or a remote wallet fits
// behind it. SignDigest returns a 65-byte [R || S || V] signature (V may be 0/1 or 27/28; the
// client normalises it to 27/28 with a low S), or a longer one for an ERC-1271 contract wallet,
// which is sent as is.
type Signer interface {
	// Address is the payer: authorization.from.
	Address() common.Address
	// SignDigest signs a 32-byte digest as is (no message prefix).
	SignDigest(digest common.Hash) ([]byte, error)
}

// keySigner signs with a private key held in memory.
type keySigner struct {
	key  *ecdsa.PrivateKey
	addr common.Address
}

// NewKeySigner returns a Signer for an in-memory secp256k1 private key.
func NewKeySigner(key *ecdsa.PrivateKey) (Signer, error) {
	if key == nil || key.D == nil || key.D.Sign() <= 0 {
		return nil, errors.New("client: no private key")
	}
	if key.Curve != crypto.S256() {
		return nil, errors.New("client: the private key is not on secp256k1")
	}
	return &keySigner{key: key, addr: crypto.PubkeyToAddress(key.PublicKey)}, nil
}

func (s *keySigner) Address() common.Address { return s.addr }

func (s *keySigner) SignDigest(digest common.Hash) ([]byte, error) {
	return crypto.Sign(digest[:], s.key)
}

var (
	secp256k1N     = crypto.S256().Params().N
	secp256k1HalfN = new(big.Int).Rsh(secp256k1N, 1)
)

// normaliseSignature turns an ECDSA signature into the form FiatToken's ecrecover and our
// verifier accept: V in {27, 28} and S in the lower half of the curve order (EIP-2). A signer
// that returns a high S gets the equivalent low-S signature, with V flipped. Longer signatures
// (ERC-1271 wallets) are returned unchanged.
func normaliseSignature(sig []byte) ([]byte, error) {
	if len(sig) > 65 {
		return sig, nil
	}
	if len(sig) != 65 {
		return nil, fmt.Errorf("signature of %d bytes, want 65", len(sig))
	}
	out := append([]byte(nil), sig...)
	v := out[64]
	switch v {
	case 0, 1:
	case 27, 28:
		v -= 27
	default:
		return nil, fmt.Errorf("signature v = %d, want 0, 1, 27 or 28", v)
	}
	s := new(big.Int).SetBytes(out[32:64])
	if s.Sign() == 0 || s.Cmp(secp256k1N) >= 0 {
		return nil, errors.New("signature s out of range")
	}
	if s.Cmp(secp256k1HalfN) > 0 {
		s.Sub(secp256k1N, s)
		s.FillBytes(out[32:64])
		v ^= 1
	}
	out[64] = v + 27
	return out, nil
}
