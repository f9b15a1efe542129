package rules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxJSONDepth bounds nesting in a JSON config. The deepest sgd object is five levels down
// (security_groups, a group, ingress, a rule, a field); the bound keeps a file of a million
// '[' from growing the parser's stack without limit.
const maxJSONDepth = 32

// jsonTree parses a JSON document into the node tree yaml.v3 builds for YAML, so that both
// formats take one path from there: checkSchema, then yaml.v3's decoder. encoding/json
// does the parsing, token by token, so every valid JSON text is read as JSON means it
// (including \/ escapes, surrogate pairs and a key whose colon is on the next line, which
// yaml.v3's parser refuses); it never decodes into sgd's types itself, because its key
// matching folds case and Unicode ("egreſſ" is egress to it). Strings become !!str, numbers
// !!int or !!float as written, true/false !!bool, null !!null; every node has its line.
func jsonTree(file string, data []byte) (*yaml.Node, error) {
	if off := invalidUTF8(data); off >= 0 {
		return nil, &Error{File: file, Line: lineAt(data, int64(off)), Code: CodeMalformedConfig, Msg: "not valid UTF-8 (RFC 8259 JSON is UTF-8)"}
	}
	p := &jsonParser{file: file, data: data, dec: json.NewDecoder(bytes.NewReader(data)), line: 1}
	p.dec.UseNumber()
	tok, err := p.dec.Token()
	if err != nil {
		return nil, p.syntax(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, &Error{File: file, Code: CodeMalformedConfig, Msg: "a JSON config is one object"}
	}
	root, err := p.value(tok, 0)
	if err != nil {
		return nil, err
	}
	if _, err := p.dec.Token(); err != io.EOF {
		return nil, &Error{File: file, Code: CodeMalformedConfig, Msg: "trailing data after the JSON object"}
	}
	return root, nil
}

type jsonParser struct {
	file string
	data []byte
	dec  *json.Decoder
	line int   // the line at offset at
	at   int64 // newlines before it are counted
}

// tokenLine is the line of the token just read. No JSON token spans lines, and offsets
// only grow, so counting from the last call keeps the whole parse linear.
func (p *jsonParser) tokenLine() int {
	off := min(p.dec.InputOffset(), int64(len(p.data)))
	p.line += bytes.Count(p.data[p.at:off], []byte("\n"))
	p.at = off
	return p.line
}

func (p *jsonParser) next() (json.Token, error) {
	tok, err := p.dec.Token()
	if err != nil {
		return nil, p.syntax(err)
	}
	return tok, nil
}

// value builds the node for tok, which has just been read, and for everything in it.
func (p *jsonParser) value(tok json.Token, depth int) (*yaml.Node, error) {
	line := p.tokenLine()
	scalar := func(tag, v string) *yaml.Node {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: v, Line: line}
	}
	switch t := tok.(type) {
	case json.Delim:
		if depth >= maxJSONDepth {
			return nil, &Error{File: p.file, Line: line, Code: CodeMalformedConfig, Msg: fmt.Sprintf("nested deeper than %d levels", maxJSONDepth)}
		}
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle, Line: line}
		if t == '{' {
			n.Kind, n.Tag = yaml.MappingNode, "!!map"
		}
		for p.dec.More() {
			if t == '{' {
				k, err := p.next() // the grammar makes it a string
				if err != nil {
					return nil, err
				}
				key, _ := k.(string)
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: tagStr, Style: yaml.DoubleQuotedStyle, Value: key, Line: p.tokenLine()})
			}
			v, err := p.next()
			if err != nil {
				return nil, err
			}
			c, err := p.value(v, depth+1)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, c)
		}
		if _, err := p.next(); err != nil { // the closing delimiter
			return nil, err
		}
		return n, nil
	case string:
		n := scalar(tagStr, t)
		n.Style = yaml.DoubleQuotedStyle
		return n, nil
	case json.Number:
		if strings.ContainsAny(string(t), ".eE") {
			return scalar(tagFloat, string(t)), nil
		}
		return scalar(tagInt, string(t)), nil
	case bool:
		return scalar(tagBool, fmt.Sprint(t)), nil
	case nil:
		return scalar(tagNull, "null"), nil
	}
	return nil, &Error{File: p.file, Line: line, Code: CodeMalformedConfig, Msg: fmt.Sprintf("unexpected JSON token %v", tok)}
}

func (p *jsonParser) syntax(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return &Error{File: p.file, Line: lineAt(p.data, se.Offset), Code: CodeMalformedConfig, Msg: se.Error()}
	}
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		return &Error{File: p.file, Line: lineAt(p.data, int64(len(p.data))), Code: CodeMalformedConfig, Msg: "the JSON ends early"}
	}
	return &Error{File: p.file, Code: CodeMalformedConfig, Msg: err.Error()}
}
