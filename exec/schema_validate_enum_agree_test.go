package exec

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// enumRandValue is a random small JSON value, rich in numbers JSON Schema calls equal under
// different spellings (1, 1.0, 1e0, 10e-1) and in objects written in different key orders.
func enumRandValue(r *rand.Rand, depth int) string {
	nums := []string{"1", "1.0", "1e0", "10e-1", "-0", "0", "0.0", "2", "-1", "1.5", "15e-1", "100", "1e2", "0.1", "1e-1", "9007199254740993", "9007199254740992"}
	strs := []string{`"a"`, `"b"`, `"1"`, `""`, `"é"`, `"e\u0301"`}
	switch k := r.Intn(7); {
	case k == 0:
		return []string{"true", "false", "null"}[r.Intn(3)]
	case k <= 2:
		return nums[r.Intn(len(nums))]
	case k == 3:
		return strs[r.Intn(len(strs))]
	case k == 4 && depth < 2:
		n := r.Intn(3)
		parts := make([]string, n)
		for i := range parts {
			parts[i] = enumRandValue(r, depth+1)
		}
		return "[" + strings.Join(parts, ",") + "]"
	case k == 5 && depth < 2:
		keys := []string{"a", "b", "c"}
		n := r.Intn(3)
		parts := []string{}
		for i := 0; i < n; i++ {
			parts = append(parts, `"`+keys[i]+`":`+enumRandValue(r, depth+1))
		}
		if r.Intn(2) == 0 {
			for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
				parts[i], parts[j] = parts[j], parts[i]
			}
		}
		return "{" + strings.Join(parts, ",") + "}"
	default:
		return nums[r.Intn(len(nums))]
	}
}

// TestSchemaValidateEnumAgreesWithTheLibrary: the tool checks enum and const itself (keyed, to
// bound the work); on 3,000 random schemas and values its verdict is the library's own.
func TestSchemaValidateEnumAgreesWithTheLibrary(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	tool := NewSchemaValidate()
	mismatch := 0
	for i := 0; i < 3000; i++ {
		var schema string
		if r.Intn(2) == 0 {
			n := 1 + r.Intn(4)
			vals := make([]string, n)
			for j := range vals {
				vals[j] = enumRandValue(r, 0)
			}
			schema = `{"enum":[` + strings.Join(vals, ",") + `]}`
		} else {
			schema = `{"const":` + enumRandValue(r, 0) + `}`
		}
		if r.Intn(3) == 0 {
			schema = `{"items":` + schema + `}`
		}
		data := enumRandValue(r, 0)
		if strings.HasPrefix(schema, `{"items"`) {
			data = "[" + enumRandValue(r, 1) + "," + enumRandValue(r, 1) + "]"
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(schema)))
		if err != nil {
			t.Fatal(err)
		}
		c := newSchemaCompiler()
		if err := c.AddResource("mem://s.json", doc); err != nil {
			continue
		}
		sch, err := c.Compile("mem://s.json")
		if err != nil {
			continue
		}
		inst, _ := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(data)))
		libValid := sch.Validate(inst) == nil
		out, err := tool.Run(context.Background(), json.RawMessage(`{"schema":`+schema+`,"data":`+data+`}`))
		if err != nil {
			t.Errorf("%s / %s: %v", schema, data, err)
			continue
		}
		if got := out.(SchemaValidateOutput).Valid; got != libValid {
			mismatch++
			if mismatch < 10 {
				t.Errorf("schema %s data %s: tool %v, library %v", schema, data, got, libValid)
			}
		}
	}
	if mismatch > 0 {
		t.Errorf("%d mismatches", mismatch)
	}
}
