package rules

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Document is a loaded configuration: the model and where its parts stand in the file,
// so that validation errors can cite lines.
type Document struct {
	File   string
	Hash   string // sha256 of the file's bytes, hex, for reports and metrics
	Config Config
	root   *yaml.Node // nil when the positions are unknown
}

// LoadFile reads and parses a configuration file (YAML, or JSON when it starts with '{').
// Unknown fields are rejected (UnknownParameter): an ignored field could leave the host more
// open than the user wrote.
func LoadFile(path string) (*Document, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse parses configuration bytes; name is used in messages only.
func Parse(name string, data []byte) (*Document, error) {
	sum := sha256.Sum256(data)
	doc := &Document{File: name, Hash: hex.EncodeToString(sum[:])}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&doc.Config); err != nil {
			return nil, jsonError(name, data, err)
		}
		if _, err := dec.Token(); err != io.EOF {
			return nil, &Error{File: name, Code: CodeMalformedConfig, Msg: "trailing data after the JSON object"}
		}
		switch key, off, problem := jsonKeyProblem(data); problem {
		case keyDuplicate:
			return nil, &Error{File: name, Line: lineAt(data, off), Code: CodeMalformedConfig,
				Msg: fmt.Sprintf("key %q appears twice in one object; sgd would keep only the last", key)}
		case keyCase:
			return nil, &Error{File: name, Line: lineAt(data, off), Code: CodeUnknownParameter,
				Msg: fmt.Sprintf("unknown field %q (field names are lower-case snake_case, like cidr_ipv4)", key)}
		}
	} else {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&doc.Config); err != nil && err != io.EOF {
			return nil, yamlError(name, err)
		}
		var extra yaml.Node
		if err := dec.Decode(&extra); err != io.EOF {
			return nil, &Error{File: name, Code: CodeMalformedConfig, Msg: "more than one YAML document; sgd reads exactly one"}
		}
	}
	// Positions for validation messages; JSON is YAML for this purpose when it parses.
	var root yaml.Node
	if yaml.Unmarshal(data, &root) == nil && len(root.Content) == 1 {
		doc.root = root.Content[0]
	}
	return doc, nil
}

// yamlError turns a yaml.v3 error into sgd's coded error, one per line the parser
// reported. Unknown fields are UnknownParameter; anything else is a malformed config.
func yamlError(file string, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		line := 0
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if rest, ok := strings.CutPrefix(msg, "line "); ok {
			if n, after, ok := strings.Cut(rest, ": "); ok {
				line, _ = strconv.Atoi(n)
				msg = after
			}
		}
		return &Error{File: file, Line: line, Code: CodeMalformedConfig, Msg: msg}
	}
	var errs Errors
	for _, e := range te.Errors {
		code := CodeMalformedConfig
		if strings.Contains(e, "not found in type") {
			code = CodeUnknownParameter
		}
		line := 0
		if rest, ok := strings.CutPrefix(e, "line "); ok {
			if n, after, ok := strings.Cut(rest, ": "); ok {
				line, _ = strconv.Atoi(n)
				e = after
			}
		}
		if code == CodeUnknownParameter {
			// "field foo not found in type rules.Rule" → name the field, not Go's type.
			if f, _, ok := strings.Cut(strings.TrimPrefix(e, "field "), " not found"); ok {
				e = fmt.Sprintf("unknown field %q", f)
			}
		}
		errs = append(errs, &Error{File: file, Line: line, Code: code, Msg: e})
	}
	return errs
}

func jsonError(file string, data []byte, err error) error {
	var se *json.SyntaxError
	var ue *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return &Error{File: file, Line: lineAt(data, se.Offset), Code: CodeMalformedConfig, Msg: se.Error()}
	case errors.As(err, &ue):
		return &Error{File: file, Line: lineAt(data, ue.Offset), Code: CodeMalformedConfig,
			Msg: fmt.Sprintf("field %s: cannot use JSON %s as %s", ue.Field, ue.Value, ue.Type)}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.TrimPrefix(err.Error(), "json: unknown field ")
		return &Error{File: file, Code: CodeUnknownParameter, Msg: "unknown field " + f}
	}
	return &Error{File: file, Code: CodeMalformedConfig, Msg: err.Error()}
}

// Problems jsonKeyProblem finds.
const (
	keyOK = iota
	keyDuplicate
	keyCase
)

// jsonKeyProblem finds a key that appears twice in one JSON object, or one that is not
// lower case, and the offset just past it. encoding/json silently keeps the last value of
// a repeated key and matches keys case-insensitively, so "cidr_ipv4" followed by
// "CIDR_IPV4" would quietly replace the first — and an ignored field can leave the host
// more open than the user wrote (SPEC 1.5). YAML input gets the same checks from yaml.v3
// (exact keys, no repeats). data is known to be well-formed JSON.
func jsonKeyProblem(data []byte) (key string, off int64, problem int) {
	type object struct {
		keys      map[string]bool
		expectKey bool
	}
	var stack []*object // nil entries are arrays
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	value := func() { // a value ended: the enclosing object expects a key next
		if n := len(stack); n > 0 && stack[n-1] != nil {
			stack[n-1].expectKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", 0, keyOK
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, &object{keys: map[string]bool{}, expectKey: true})
			case '[':
				stack = append(stack, nil)
			default:
				stack = stack[:len(stack)-1]
				value()
			}
		case string:
			if n := len(stack); n > 0 && stack[n-1] != nil && stack[n-1].expectKey {
				o := stack[n-1]
				if t != strings.ToLower(t) {
					return t, dec.InputOffset(), keyCase
				}
				if o.keys[t] {
					return t, dec.InputOffset(), keyDuplicate
				}
				o.keys[t] = true
				o.expectKey = false
				continue
			}
			value()
		default:
			value()
		}
	}
}

func lineAt(data []byte, off int64) int {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	return bytes.Count(data[:off], []byte("\n")) + 1
}

// line returns the line of the node reached by following path from the document root:
// strings are mapping keys, ints are sequence indexes. 0 when unknown.
func (d *Document) line(path ...any) int {
	n := d.root
	if n == nil {
		return 0
	}
	for _, p := range path {
		switch k := p.(type) {
		case string:
			if n.Kind != yaml.MappingNode {
				return n.Line
			}
			var next *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == k {
					next = n.Content[i+1]
					if k != "" {
						// A key's own line is the better place for scalar fields.
						if next.Kind == yaml.ScalarNode {
							next = n.Content[i]
						}
					}
					break
				}
			}
			if next == nil {
				return n.Line
			}
			n = next
		case int:
			if n.Kind != yaml.SequenceNode || k >= len(n.Content) {
				return n.Line
			}
			n = n.Content[k]
		}
	}
	return n.Line
}

// value returns the node at path (mapping keys and sequence indexes from the root), or
// nil when the document has no such node or its positions are unknown.
func (d *Document) value(path ...any) *yaml.Node {
	n := d.root
	for _, p := range path {
		if n == nil {
			return nil
		}
		var next *yaml.Node
		switch k := p.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == k {
						next = n.Content[i+1]
						break
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && k < len(n.Content) {
				next = n.Content[k]
			}
		}
		n = next
	}
	return n
}
