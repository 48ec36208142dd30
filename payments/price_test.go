package payments

import "testing"

func TestFormatAndParseAtomic(t *testing.T) {
	for _, tc := range []struct {
		atomic uint64
		text   string
	}{
		{0, "0"}, {1, "0.000001"}, {10_000, "0.01"}, {50_000, "0.05"}, {100_000, "0.1"},
		{1_000_000, "1"}, {1_234_567, "1.234567"}, {18446744073709551615, "18446744073709.551615"},
	} {
		if got := FormatAtomic(tc.atomic, USDCDecimals); got != tc.text {
			t.Errorf("FormatAtomic(%d) = %q, want %q", tc.atomic, got, tc.text)
		}
		if got, err := ParseAtomic(tc.text, USDCDecimals); err != nil || got != tc.atomic {
			t.Errorf("ParseAtomic(%q) = %d, %v; want %d", tc.text, got, err, tc.atomic)
		}
	}
	for _, bad := range []string{"", ".5", "1.", "1.0000001", "-1", "1e3", "0x10", "1,5", "18446744073709.551616"} {
		if _, err := ParseAtomic(bad, USDCDecimals); err == nil {
			t.Errorf("ParseAtomic(%q) accepted", bad)
		}
	}
}

func TestPriceTable(t *testing.T) {
	tbl := DefaultPrices
	tbl.Tools = map[string]map[Mode]uint64{"http_get": {ModeDryRun: 20_000, ModeSimulate: 1}}
	for _, tc := range []struct {
		tool string
		mode Mode
		want uint64
	}{
		{"json_parse", ModeSimulate, 0},
		{"json_parse", ModeDryRun, 10_000},
		{"json_parse", ModeReal, 50_000},
		{"json_parse", ModeBatch, 100_000},
		{"http_get", ModeDryRun, 20_000},
		{"http_get", ModeSimulate, 0}, // simulation is free whatever the overrides say
		{"http_get", ModeReal, 50_000},
	} {
		if got := tbl.Price(tc.tool, tc.mode, "/exec/tool").Amount; got != tc.want {
			t.Errorf("%s %s = %d, want %d", tc.tool, tc.mode, got, tc.want)
		}
	}
}
