package exec

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/secureexec/secureexec/internal/jsonstr"
)

// AppendJSON appends o as json.Marshal encodes it (a test compares the two on every output the
// fuzzer finds): the fields in declaration order, the omitempty ones left out when empty,
// strings in encoding/json's escaping, and the value HTML-escaped as json.Marshal escapes a
// json.RawMessage.
func (o JSONParseOutput) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"valid":`...)
	dst = strconv.AppendBool(dst, o.Valid)
	if o.Type != "" {
		dst = append(dst, `,"type":`...)
		dst = jsonstr.Append(dst, o.Type, jsonstr.EncodingJSON)
	}
	if len(o.Value) > 0 {
		dst = append(dst, `,"value":`...)
		dst = appendHTMLEscaped(dst, o.Value)
	}
	if o.Keys != nil {
		dst = append(dst, `,"keys":[`...)
		for i, k := range o.Keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = jsonstr.Append(dst, k, jsonstr.EncodingJSON)
		}
		dst = append(dst, ']')
	}
	if o.Length != nil {
		dst = append(dst, `,"length":`...)
		dst = strconv.AppendInt(dst, int64(*o.Length), 10)
	}
	if o.Depth != nil {
		dst = append(dst, `,"depth":`...)
		dst = strconv.AppendInt(dst, int64(*o.Depth), 10)
	}
	dst = append(dst, `,"bytes":`...)
	dst = strconv.AppendInt(dst, int64(o.Bytes), 10)
	if e := o.Error; e != nil {
		dst = append(dst, `,"error":{"code":`...)
		dst = jsonstr.Append(dst, e.Code, jsonstr.EncodingJSON)
		dst = append(dst, `,"message":`...)
		dst = jsonstr.Append(dst, e.Message, jsonstr.EncodingJSON)
		dst = append(dst, `,"offset":`...)
		dst = strconv.AppendInt(dst, int64(e.Offset), 10)
		dst = append(dst, `,"line":`...)
		dst = strconv.AppendInt(dst, int64(e.Line), 10)
		dst = append(dst, `,"column":`...)
		dst = strconv.AppendInt(dst, int64(e.Column), 10)
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

// EncodedSizeHint is AppendJSON's length when nothing needs escaping: the value, the keys
// with their quotes and commas, and the rest's longest form.
func (o JSONParseOutput) EncodedSizeHint() int {
	n := len(o.Value) + 160
	for _, k := range o.Keys {
		n += len(k) + 3
	}
	if o.Error != nil {
		n += len(o.Error.Message) + len(o.Error.Code) + 60
	}
	return n
}

// appendHTMLEscaped appends a compact JSON value with <, >, &, U+2028 and U+2029 escaped, as
// json.Marshal writes a json.RawMessage. The parser's values rarely hold any of them.
func appendHTMLEscaped(dst, v []byte) []byte {
	if !bytes.ContainsAny(v, "<>&\u2028\u2029") {
		return append(dst, v...)
	}
	var b bytes.Buffer
	json.HTMLEscape(&b, v)
	return append(dst, b.Bytes()...)
}
