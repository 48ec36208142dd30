package exec

// data_filter's fields: dotted paths, decoding and looking them up in a document, and projecting them.

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
)

// datafilterMaxPathSegments bounds a dotted field path.
const datafilterMaxPathSegments = 16

func datafilterPath(field string) ([]string, error) {
	if field == "" || len(field) > 256 {
		return nil, Failf("invalid_field", "a field path has 1 to 256 characters")
	}
	path := strings.Split(field, ".")
	if len(path) > datafilterMaxPathSegments {
		return nil, Failf("invalid_field", "field %q has more than %d segments", field, datafilterMaxPathSegments)
	}
	for _, seg := range path {
		if seg == "" {
			return nil, Failf("invalid_field", "field %q has an empty segment", field)
		}
	}
	return path, nil
}

// datafilterIndex reads a path segment as an array index: only the canonical decimal form
// ("0", "7", "12"), so that each element has exactly one name ("a.01", "a.+1" name no element
// of an array, though they may be keys of an object): otherwise a select list (uniqueItems)
// could repeat one value under 64 spellings. An index too large for an int names no element.
func datafilterIndex(seg string) (int, bool) {
	if seg == "" || (seg[0] == '0' && len(seg) > 1) || strings.Trim(seg, "0123456789") != "" {
		return 0, false
	}
	i, err := strconv.Atoi(seg)
	if err != nil {
		return math.MaxInt, true
	}
	return i, true
}

func datafilterDecode(raw json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// datafilterLookup follows path through objects and arrays.
func datafilterLookup(doc any, path []string) (any, bool) {
	cur := doc
	for _, seg := range path {
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[seg]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			i, ok := datafilterIndex(seg)
			if !ok || i >= len(c) {
				return nil, false
			}
			cur = c[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

// datafilterProject builds an object with one key per selected path, in select order; it stops
// with output_too_large once the object passes room bytes.
func datafilterProject(doc any, names []string, paths [][]string, room int) (json.RawMessage, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	first := true
	for i, path := range paths {
		v, ok := datafilterLookup(doc, path)
		if !ok {
			continue
		}
		k, err := json.Marshal(names[i])
		if err != nil {
			return nil, Failf("output_not_encodable", "%v", err)
		}
		val, err := json.Marshal(v)
		if err != nil {
			return nil, Failf("output_not_encodable", "%v", err)
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.Write(k)
		b.WriteByte(':')
		b.Write(val)
		if b.Len() > room {
			return nil, errOutputTooLarge(room)
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}
