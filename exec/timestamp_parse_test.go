package exec

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestTimestampParse(t *testing.T) {
	reg, err := NewRegistry(NewTimestampParse())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		args    string
		unix    int64
		rfc3339 string
		iso     string
		weekday string
		format  string
		unit    string
	}{
		{"rfc3339 to Paris", `{"input":"2024-02-29T12:30:00Z","timezone":"Europe/Paris"}`, 1709209800, "2024-02-29T12:30:00Z", "2024-02-29T13:30:00+01:00", "Thursday", "rfc3339", ""},
		{"rfc3339 with offset", `{"input":"2024-02-29T13:30:00+01:00"}`, 1709209800, "2024-02-29T12:30:00Z", "2024-02-29T12:30:00Z", "Thursday", "rfc3339", ""},
		{"summer time", `{"input":"2024-07-01T00:00:00Z","timezone":"America/New_York"}`, 1719792000, "2024-07-01T00:00:00Z", "2024-06-30T20:00:00-04:00", "Sunday", "rfc3339", ""},
		{"unix seconds", `{"input":1700000000}`, 1700000000, "2023-11-14T22:13:20Z", "2023-11-14T22:13:20Z", "Tuesday", "unix", "s"},
		{"unix ms", `{"input":1700000000123}`, 1700000000, "2023-11-14T22:13:20.123Z", "2023-11-14T22:13:20.123Z", "Tuesday", "unix", "ms"},
		{"unix us", `{"input":1700000000123456}`, 1700000000, "2023-11-14T22:13:20.123456Z", "2023-11-14T22:13:20.123456Z", "Tuesday", "unix", "us"},
		{"unix ns exact", `{"input":1700000000123456789}`, 1700000000, "2023-11-14T22:13:20.123456789Z", "2023-11-14T22:13:20.123456789Z", "Tuesday", "unix", "ns"},
		{"unix explicit unit", `{"input":1700000000,"unit":"ms"}`, 1700000, "1970-01-20T16:13:20Z", "1970-01-20T16:13:20Z", "Tuesday", "unix", "ms"},
		{"unix fraction as string", `{"input":"1700000000.5"}`, 1700000000, "2023-11-14T22:13:20.5Z", "2023-11-14T22:13:20.5Z", "Tuesday", "unix", "s"},
		{"unix with exponent", `{"input":1.7e9}`, 1700000000, "2023-11-14T22:13:20Z", "2023-11-14T22:13:20Z", "Tuesday", "unix", "s"},
		{"before the epoch", `{"input":-1.5}`, -2, "1969-12-31T23:59:58.5Z", "1969-12-31T23:59:58.5Z", "Wednesday", "unix", "s"},
		{"rfc1123", `{"input":"Tue, 14 Nov 2023 22:13:20 GMT"}`, 1700000000, "2023-11-14T22:13:20Z", "2023-11-14T22:13:20Z", "Tuesday", "rfc1123", ""},
		{"rfc1123z", `{"input":"Tue, 14 Nov 2023 23:13:20 +0100"}`, 1700000000, "2023-11-14T22:13:20Z", "2023-11-14T22:13:20Z", "Tuesday", "rfc1123z", ""},
		{"iso date in UTC", `{"input":"2023-11-14"}`, 1699920000, "2023-11-14T00:00:00Z", "2023-11-14T00:00:00Z", "Tuesday", "iso_date", ""},
		{"iso date in its own zone", `{"input":"2023-11-14","format":"iso_date","inputTimezone":"America/New_York","timezone":"America/New_York"}`, 1699938000, "2023-11-14T05:00:00Z", "2023-11-14T00:00:00-05:00", "Tuesday", "iso_date", ""},
		{"iso datetime without zone", `{"input":"2023-11-14 22:13:20"}`, 1700000000, "2023-11-14T22:13:20Z", "2023-11-14T22:13:20Z", "Tuesday", "iso_datetime", ""},
		{"Go layout", `{"input":"14/11/2023 22:13","layout":"02/01/2006 15:04"}`, 1699999980, "2023-11-14T22:13:00Z", "2023-11-14T22:13:00Z", "Tuesday", "layout", ""},
		{"last second of 9999", `{"input":253402300799,"unit":"s"}`, 253402300799, "9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z", "Friday", "unix", "s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args, err := reg.Validate("timestamp_parse", json.RawMessage(tc.args))
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			tool := NewTimestampParse()
			out, err := tool.Run(context.Background(), args)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			o := out.(TimestampParseOutput)
			if o.Unix != tc.unix || o.RFC3339 != tc.rfc3339 || o.ISO8601 != tc.iso || o.Weekday != tc.weekday || o.Format != tc.format || o.Unit != tc.unit {
				t.Errorf("got %+v", o)
			}
			if o.UnixMs/1000 != o.Unix && o.Unix >= 0 {
				t.Errorf("unixMs %d disagrees with unix %d", o.UnixMs, o.Unix)
			}
			sim, err := tool.Simulate(context.Background(), args)
			if err != nil || sim != out {
				t.Errorf("Simulate differs from Run: %+v, %v", sim, err)
			}
		})
	}
	// The zone's name, abbreviation and offset.
	out, err := NewTimestampParse().Run(context.Background(), json.RawMessage(`{"input":"2024-01-15T12:00:00Z","timezone":"Asia/Kolkata"}`))
	if err != nil {
		t.Fatal(err)
	}
	if o := out.(TimestampParseOutput); o.Timezone != "Asia/Kolkata" || o.OffsetSeconds != 19800 || o.Abbreviation != "IST" {
		t.Errorf("zone fields %+v", o)
	}
}

func TestTimestampParseErrors(t *testing.T) {
	for _, tc := range []struct {
		args string
		code string
	}{
		{`{"input":"2024-01-01","timezone":"Mars/Olympus_Mons"}`, "unknown_timezone"},
		{`{"input":"2024-01-01","timezone":"Local"}`, "unknown_timezone"},
		{`{"input":"2024-01-01","timezone":"../../etc/passwd"}`, "unknown_timezone"},
		{`{"input":"not a date"}`, "parse_failed"},
		{`{"input":"2024-13-01"}`, "parse_failed"},
		{`{"input":"2024-01-01","format":"rfc1123"}`, "parse_failed"},
		{`{"input":1700000000,"format":"rfc3339"}`, "parse_failed"},
		{`{"input":"0x10","format":"unix"}`, "parse_failed"},
		{`{"input":"1/3","format":"unix"}`, "parse_failed"},
		{`{"input":"NaN","format":"unix"}`, "parse_failed"},
		{`{"input":"   "}`, "invalid_input"},
		{`{"input":1e30}`, "out_of_range"},
		{`{"input":"999999999999999999999"}`, "out_of_range"},
		{`{"input":"99999999999999999999999"}`, "out_of_range"},
		{`{"input":1e-400}`, "out_of_range"},
		{`{"input":"1e999999999"}`, "out_of_range"},
		{`{"input":253402300800,"unit":"s"}`, "out_of_range"},
		{`{"input":253402300799,"unit":"s","timezone":"Pacific/Kiritimati"}`, "out_of_range"},
		{`{"input":-62167219201}`, "out_of_range"},
		{`{"input":"x","layout":"2006"}`, "parse_failed"},
	} {
		_, err := NewTimestampParse().Run(context.Background(), json.RawMessage(tc.args))
		var te *ToolError
		if err == nil {
			t.Errorf("%s: no error", tc.args)
			continue
		}
		if te, _ = err.(*ToolError); te == nil || te.Code != tc.code {
			t.Errorf("%s: err %v, want %s", tc.args, err, tc.code)
		}
	}
}

// The schema's maxLength 128 bounds strings only; a numeric input went to big.Rat whatever
// its length, at a cost quadratic in it, and nothing watched ctx: 400k digits took most of a
// second. Its literal is held to 128 characters before any parsing.
func TestTimestampParseLongNumberRefused(t *testing.T) {
	reg, err := NewRegistry(NewTimestampParse())
	if err != nil {
		t.Fatal(err)
	}
	args := json.RawMessage(`{"input":1.` + strings.Repeat("7", 400000) + `,"unit":"s"}`)
	if _, err := reg.Validate("timestamp_parse", args); err != nil {
		t.Fatalf("args should be valid: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	took, ok := runWithin(stretched(10*time.Second), func() { _, err = NewTimestampParse().Run(ctx, args) })
	if !ok || took > stretched(200*time.Millisecond) {
		t.Fatalf("ran %v (finished: %v) with a 20ms deadline", took, ok)
	}
	if te, _ := err.(*ToolError); te == nil || te.Code != "invalid_input" || !strings.Contains(te.Message, "128") {
		t.Fatalf("error %v, want invalid_input naming the limit", err)
	}
	// 128 characters are fine, as a number or as a numeric string (where the schema applies).
	n := "1700000000." + strings.Repeat("5", 117)
	for _, in := range []string{n, `"` + n + `"`} {
		if _, err := NewTimestampParse().Run(context.Background(), json.RawMessage(`{"input":`+in+`}`)); err != nil {
			t.Fatalf("%d characters: %v", len(n), err)
		}
	}
	// A numeric string longer than that is refused too when the schema was not applied.
	if _, err := NewTimestampParse().Run(context.Background(), json.RawMessage(`{"input":"`+n+`5"}`)); err == nil || err.(*ToolError).Code != "invalid_input" {
		t.Fatalf("129-character numeric string: %v", err)
	}
}
