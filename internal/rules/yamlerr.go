package rules

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// yaml.v3 reports a file that does not parse with the words of libyaml's scanner or
// parser and a line that is not always the one to look at: a scanner error's line is
// right (1-based), but a parser error's is the 0-based line of its context — one too
// small — and an error on the first line has none. The functions here put the line right
// and say the common mistakes in words a person can act on.

// yamlParserProblems are the problems yaml.v3's parser (parserc.go) reports; all the other
// problems that come with a line are the scanner's.
var yamlParserProblems = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"found undefined tag handle":             true,
	"did not find expected node content":     true,
	"did not find expected '-' indicator":    true,
	"did not find expected key":              true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found duplicate %TAG directive":         true,
}

// yamlSyntax turns the error yaml.v3 returned for data, a file that does not parse, into
// sgd's coded error: the line the problem is on and what to do about it.
func yamlSyntax(file string, data []byte, err error) *Error {
	line, problem := yamlLine(strings.TrimPrefix(err.Error(), "yaml: "))
	src := splitLines(data)
	e := &Error{File: file, Line: line, Code: CodeMalformedConfig, Msg: problem}
	switch {
	case yamlParserProblems[problem]:
		e.Line = line + 1 // the context's 0-based line; none means line 1
	case line == 0 && isScannerProblem(problem):
		e.Line = 1 // a scanner error on the first line comes without one
	}
	if words, ok := yamlPlainWords[problem]; ok {
		e.Msg = words
	}
	switch problem {
	case "found character that cannot start any token":
		e.Msg = badTokenStart(at(src, e.Line))
	case "found a tab character that violates indentation", "found a tab character where an indentation space is expected":
		// The line is that of the value before the tab; the tab is on the first line from
		// there indented with one.
		for i := max(e.Line, 1); i <= len(src); i++ {
			if strings.Contains(indentation(src[i-1]), "\t") {
				e.Line = i
				break
			}
		}
		e.Msg = tabIndent
	case "did not find expected node content":
		if v := colonValue(at(src, e.Line)); v != "" {
			e.Msg = fmt.Sprintf("the value %s starts with ':', which in flow style ({…} or […]) separates a key from its value; quote it: %q", v, v)
		} else {
			e.Msg = "a value is missing or cannot start here (YAML: did not find expected node content)"
		}
	case "did not find expected key", "did not find expected '-' indicator":
		if n := misindented(src, e.Line); n > 0 {
			e.Line = n
			e.Msg = "this line is indented to none of the levels of the lines above it: line it up with the keys or list items it belongs to"
		} else if problem == "did not find expected key" {
			e.Msg = "a line in the mapping that starts here is not a key: value at the keys' indentation (a list item, or text without a key?)"
		} else {
			e.Msg = "a line in the list that starts here is not a '- ' item at the items' indentation (a key: value among list items?)"
		}
	case "control characters are not allowed":
		e.Line, e.Msg = controlLine(data), "a control character (not a tab or a line break) is in the file: YAML text cannot hold one"
	case "invalid leading UTF-8 octet", "invalid trailing UTF-8 octet", "incomplete UTF-8 octet sequence", "invalid length of a UTF-8 sequence", "invalid Unicode character":
		e.Line, e.Msg = invalidUTF8Line(data), "not valid UTF-8: save the file as UTF-8 text"
	}
	return e
}

// yamlPlainWords say the problems whose line is right as it is.
var yamlPlainWords = map[string]string{
	"did not find expected ',' or '}'": "the flow mapping {…} that starts on this line is not closed with '}', or two of its entries have no ',' between them",
	"did not find expected ',' or ']'": "the flow list […] that starts on this line is not closed with ']', or two of its items have no ',' between them",
	"mapping values are not allowed in this context": "a ':' where YAML cannot take a new key: a value that holds ': ' must be quoted, " +
		"and a nested mapping goes on its own, more indented lines",
	"block sequence entries are not allowed in this context": "a '- ' list item where YAML cannot start a list: put the list on its own lines, more indented than its key",
}

const tabIndent = "a tab is used for indentation; YAML indents with spaces only: replace the tab with spaces"

func isScannerProblem(p string) bool {
	return strings.HasPrefix(p, "found ") || strings.HasPrefix(p, "did not find ") || strings.HasPrefix(p, "could not find ") ||
		strings.HasSuffix(p, "not allowed in this context")
}

// splitLines returns data's lines without their line breaks.
func splitLines(data []byte) []string {
	return strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
}

// at returns line n (1-based) of src, or "".
func at(src []string, n int) string {
	if n < 1 || n > len(src) {
		return ""
	}
	return src[n-1]
}

// indentation is the leading blanks of s.
func indentation(s string) string { return s[:len(s)-len(strings.TrimLeft(s, " \t"))] }

// badTokenStart says what cannot start a token on line s.
func badTokenStart(s string) string {
	switch {
	case strings.Contains(indentation(s), "\t"):
		return tabIndent
	case strings.Contains(unquoted(s), "\t"):
		return "a tab where YAML takes only spaces (between a '- ' or ': ' and the value, say): replace the tab with spaces"
	}
	if m := reservedStart.FindStringSubmatch(unquoted(s)); m != nil {
		return fmt.Sprintf("a value cannot start with %q in YAML (it is reserved): quote the value", m[1])
	}
	return "a character YAML does not take here (YAML: found character that cannot start any token): quote the value"
}

var reservedStart = regexp.MustCompile("(?:^|[\\s:,\\[{-])([@`])")

// colonValue returns the first plain value on line s that starts with ':' (an unquoted
// IPv6 prefix such as ::/0), or "".
func colonValue(s string) string {
	if m := colonValueRe.FindStringSubmatch(unquoted(s)); m != nil {
		return m[1]
	}
	return ""
}

var colonValueRe = regexp.MustCompile(`(?:^|[\s\[{,])(:[^\s,\]}#]+)`)

// unquoted returns s with its quoted strings blanked out and its comment cut, so that
// what is inside quotes is never taken for YAML.
func unquoted(s string) string {
	b := []byte(s)
	var q byte
	for i := 0; i < len(b); i++ {
		switch {
		case q != 0:
			if b[i] == q {
				q = 0
			}
			b[i] = ' '
		case b[i] == '"' || b[i] == '\'':
			q = b[i]
			b[i] = ' '
		case b[i] == '#' && (i == 0 || b[i-1] == ' ' || b[i-1] == '\t'):
			return string(b[:i])
		}
	}
	return string(b)
}

// misindented returns the first line from line from (1-based) on whose indentation is
// none of the levels open above it — deeper than the enclosing key or item but not as
// deep as its siblings, or deeper than a line that opens nothing — or 0. It reads block
// style only: lines inside a flow collection that spans lines are skipped.
func misindented(src []string, from int) int {
	var levels []int
	opens, depth := true, 0 // the line before opens a block; flow brackets still open
	for i, s := range src {
		text := unquoted(s)
		body := strings.TrimSpace(text)
		if body == "" || body == "---" {
			continue
		}
		if depth > 0 {
			depth += strings.Count(text, "[") + strings.Count(text, "{") - strings.Count(text, "]") - strings.Count(text, "}")
			continue
		}
		d := len(indentation(s))
		for len(levels) > 0 && levels[len(levels)-1] > d {
			levels = levels[:len(levels)-1]
		}
		if len(levels) == 0 || levels[len(levels)-1] < d {
			if !opens && len(levels) > 0 {
				if i+1 >= from {
					return i + 1
				}
			}
			levels = append(levels, d)
		}
		item := body
		for strings.HasPrefix(item, "- ") || item == "-" {
			// A list item whose content is a key: the mapping's keys line up with it.
			rest := strings.TrimLeft(strings.TrimPrefix(item, "-"), " ")
			if strings.Contains(rest, ": ") || strings.HasSuffix(rest, ":") {
				levels = append(levels, d+len(item)-len(rest))
			}
			d += len(item) - len(rest)
			item = rest
		}
		opens = item == "" || strings.HasSuffix(item, ":") || strings.HasSuffix(item, "|") || strings.HasSuffix(item, ">")
		depth = strings.Count(text, "[") + strings.Count(text, "{") - strings.Count(text, "]") - strings.Count(text, "}")
	}
	return 0
}

// controlLine is the line of the first character YAML does not take (C0 controls other
// than tab and line breaks, DEL, C1 controls other than NEL), or 0.
func controlLine(data []byte) int {
	for off, r := range string(data) {
		if (r < 0x20 && r != '\t' && r != '\n' && r != '\r') || (r >= 0x7f && r < 0xa0 && r != 0x85) || r == 0xfffe || r == 0xffff {
			return lineAt(data, int64(off))
		}
	}
	return 0
}

// invalidUTF8Line is the line of the first byte that is not UTF-8, or 0.
func invalidUTF8Line(data []byte) int {
	if off := invalidUTF8(data); off >= 0 {
		return lineAt(data, int64(off))
	}
	return 0
}

// invalidUTF8 is the offset of the first byte of data that is not UTF-8, or -1.
func invalidUTF8(data []byte) int {
	if utf8.Valid(data) {
		return -1
	}
	off := 0
	for off < len(data) {
		r, size := utf8.DecodeRune(data[off:])
		if r == utf8.RuneError && size <= 1 {
			break
		}
		off += size
	}
	return off
}
