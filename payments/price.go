package payments

import (
	"fmt"
	"strconv"
)

// USDCDecimals is the number of decimals of USDC: 1 USDC = 1_000_000 atomic units.
const USDCDecimals = 6

// Mode is what a call does, and so what it costs.
type Mode string

// The billable modes, from the seed's pricing table.
const (
	ModeSimulate Mode = "simulate" // POST /exec/simulate: always free
	ModeDryRun   Mode = "dry_run"  // POST /exec/tool with dryRun true
	ModeReal     Mode = "real"     // POST /exec/tool with dryRun false
	ModeBatch    Mode = "batch"    // multi-tool execution
)

// Price is what one call costs, in USDC atomic units.
type Price struct {
	Tool     string
	Mode     Mode
	Amount   uint64 // atomic units (6 decimals)
	Currency string // "USDC"
	Resource string // the request path being paid for, e.g. "/exec/tool"
}

// Free reports whether the call needs no payment.
func (p Price) Free() bool { return p.Amount == 0 }

// Decimal renders the amount as the seed shows it: "0.01", "0.05", "1".
func (p Price) Decimal() string { return FormatAtomic(p.Amount, USDCDecimals) }

// FormatAtomic renders an integer amount of atomic units as a decimal string with no
// trailing zeros, exactly (no floating point).
func FormatAtomic(amount uint64, decimals int) string {
	s := strconv.FormatUint(amount, 10)
	if decimals == 0 {
		return s
	}
	for len(s) <= decimals {
		s = "0" + s
	}
	whole, frac := s[:len(s)-decimals], s[len(s)-decimals:]
	for len(frac) > 0 && frac[len(frac)-1] == '0' {
		frac = frac[:len(frac)-1]
	}
	if frac == "" {
		return whole
	}
	return whole + "." + frac
}

// ParseAtomic parses a non-negative decimal string ("0.01") into atomic units, refusing more
// fractional digits than decimals and anything that is not a plain decimal.
func ParseAtomic(s string, decimals int) (uint64, error) {
	whole, frac := s, ""
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			whole, frac = s[:i], s[i+1:]
			break
		}
	}
	if whole == "" || len(frac) > decimals || (len(s) > len(whole) && frac == "") {
		return 0, fmt.Errorf("amount %q: want a decimal with at most %d fractional digits", s, decimals)
	}
	for _, part := range []string{whole, frac} {
		for i := 0; i < len(part); i++ {
			if part[i] < '0' || part[i] > '9' {
				return 0, fmt.Errorf("amount %q: not a plain decimal", s)
			}
		}
	}
	for len(frac) < decimals {
		frac += "0"
	}
	v, err := strconv.ParseUint(whole+frac, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("amount %q: %w", s, err)
	}
	return v, nil
}

// PriceTable maps a mode, and optionally a tool, to a price.
type PriceTable struct {
	DryRun uint64                     // atomic units per dry-run call
	Real   uint64                     // atomic units per real call
	Batch  uint64                     // atomic units per batch call
	Tools  map[string]map[Mode]uint64 // per-tool overrides
}

// DefaultPrices is the seed's pricing: dry-run $0.01, real $0.05, batch $0.10.
var DefaultPrices = PriceTable{DryRun: 10_000, Real: 50_000, Batch: 100_000}

// Price returns the price of one call of tool in mode, for the given resource path.
func (t PriceTable) Price(tool string, mode Mode, resource string) Price {
	p := Price{Tool: tool, Mode: mode, Currency: "USDC", Resource: resource}
	if mode == ModeSimulate {
		return p // always free, whatever the overrides say
	}
	if o, ok := t.Tools[tool][mode]; ok {
		p.Amount = o
		return p
	}
	switch mode {
	case ModeDryRun:
		p.Amount = t.DryRun
	case ModeReal:
		p.Amount = t.Real
	case ModeBatch:
		p.Amount = t.Batch
	}
	return p
}
