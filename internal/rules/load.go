package rules

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"reflect"
	"strconv"
	"strings"
	"syscall"

	"go.yaml.in/yaml/v3"
)

// Document is a loaded configuration: the model and where its parts stand in the file,
// so that validation errors can cite lines. It is the file's Locator: Locate(path) is
// the file and the line the value at path was written on.
type Document struct {
	File   string
	Hash   string // sha256 of the file's bytes, hex, for reports and metrics
	Config Config
	root   *yaml.Node // nil when the positions are unknown
}

// A Section is a top-level key of the config file that another package owns, such as the
// daemon's settings under daemon: (internal/settings). Parse holds it to the type Into
// points to as strictly as the rest of the file (keys exactly as its yaml tags spell
// them, values of the kind each field wants) and decodes it there. The file stays one
// document, one set of line numbers, one list of errors in the order they stand.
type Section struct {
	Key  string
	Into any // a pointer to the struct the section decodes into
}

// MaxConfigSize is the largest config file sgd reads, 4 MiB. The biggest policy one
// interface can enforce is 1000 rules per direction and family (rules per group × groups
// per interface, SPEC 1.5), 4000 rules; written in block style with a 255-character
// description each (~420 bytes a rule) that is about 1.7 MB, and in the README's flow
// style about 0.5 MB. 4 MiB holds the first twice over, with room for prefix lists and
// members, while a file bigger than that is not a config anyone wrote or reviewed.
// The bound also bounds what a reload can take (measured 2026-11 on the 2-core dev box):
// that 1.6 MB worst real config parses in 64 ms allocating 17 MB; the worst 4 MiB file,
// two million one-byte values, takes 2 s and about 0.5 GB of transient garbage (yaml.v3
// node trees cost ~200 bytes a node), where a 50 MB file used to cost a gigabyte.
const MaxConfigSize = 4 << 20

// LoadFile reads and parses a configuration file (YAML, or JSON when it starts with '{').
// The file must be a regular file (a symlink to one is fine) of at most MaxConfigSize
// bytes: a FIFO would block a reload forever and /dev/zero would grow it without bound.
// Unknown fields are rejected (UnknownParameter): an ignored field could leave the host
// more open than the user wrote.
func LoadFile(path string, sections ...Section) (*Document, error) {
	data, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data, sections...)
}

// readConfig reads path under the rules of LoadFile.
func readConfig(path string) ([]byte, error) {
	// Stat first: opening a FIFO for reading waits for a writer, and opening a device can
	// have effects of its own.
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if err := regularFile(path, st); err != nil {
		return nil, err
	}
	// O_NONBLOCK: should the path become a FIFO between the Stat and the open, the open
	// returns at once instead of waiting, and the Stat of what was opened refuses it. It
	// changes nothing for a regular file.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	if st, err = f.Stat(); err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if err := regularFile(path, st); err != nil {
		return nil, err
	}
	if st.Size() > MaxConfigSize {
		return nil, tooBig(path, st.Size())
	}
	return readCapped(path, f)
}

// readCapped reads r to its end, but never more than MaxConfigSize+1 bytes: a file that
// grows while it is read is refused, not followed.
func readCapped(path string, r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if len(data) > MaxConfigSize {
		return nil, &Error{File: path, Code: CodeMalformedConfig,
			Msg: fmt.Sprintf("grew past the limit of %d bytes (4 MiB) while being read", MaxConfigSize)}
	}
	return data, nil
}

func tooBig(path string, size int64) error {
	return &Error{File: path, Code: CodeMalformedConfig,
		Msg: fmt.Sprintf("is %d bytes; the limit is %d (4 MiB), far above any real config", size, MaxConfigSize)}
}

// regularFile refuses anything but a regular file, saying what it is.
func regularFile(path string, st fs.FileInfo) error {
	m := st.Mode()
	if m.IsRegular() {
		return nil
	}
	what := "not a regular file"
	switch {
	case m.IsDir():
		what = "a directory"
	case m&fs.ModeNamedPipe != 0:
		what = "a FIFO"
	case m&fs.ModeSocket != 0:
		what = "a socket"
	case m&fs.ModeCharDevice != 0:
		what = "a device (character special file)"
	case m&fs.ModeDevice != 0:
		what = "a device (block special file)"
	}
	return &Error{File: path, Code: CodeMalformedConfig,
		Msg: fmt.Sprintf("is %s; sgd reads its config only from a regular file (a symlink to one is fine)", what)}
}

// Parse parses configuration bytes; name is used in messages only. Both formats become one
// node tree — yaml.v3's parser for YAML, jsonTree for JSON — which checkSchema holds
// against Config and the sections (keys exactly as the yaml tags spell them, once each;
// values of the kind the field wants) before yaml.v3 decodes it. encoding/json never
// decodes a config: it matches keys case-insensitively, with Unicode folding. A top-level
// key that is neither Config's nor a section's is an unknown field.
func Parse(name string, data []byte, sections ...Section) (*Document, error) {
	if len(data) > MaxConfigSize {
		return nil, tooBig(name, int64(len(data)))
	}
	sum := sha256.Sum256(data)
	doc := &Document{File: name, Hash: hex.EncodeToString(sum[:])}
	var root *yaml.Node
	var err error
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' {
		root, err = jsonTree(name, data)
	} else {
		root, err = yamlTree(name, data)
	}
	if err != nil {
		return nil, err
	}
	if root == nil {
		return doc, nil // an empty document: the empty config
	}
	if e := awsNative(name, root); e != nil {
		return nil, Errors{e}
	}
	extra := make(map[string]reflect.Type, len(sections))
	for _, sec := range sections {
		extra[sec.Key] = reflect.TypeOf(sec.Into).Elem()
	}
	if errs := checkSchema(name, root, reflect.TypeFor[Config](), extra); len(errs) > 0 {
		return nil, errs
	}
	// yaml.v3 skips the keys Config has no field for: the sections, decoded next.
	if err := root.Decode(&doc.Config); err != nil {
		return nil, yamlError(name, err)
	}
	if err := decodeSections(root, sections); err != nil {
		return nil, yamlError(name, err)
	}
	doc.root = root
	return doc, nil
}

// awsNative recognises AWS's own JSON shape — the output of aws ec2
// describe-security-groups, or one group of it — and says what to run, rather than one
// UnknownParameter for a key that means something to its author. Nil for anything else.
func awsNative(name string, root *yaml.Node) *Error {
	if root.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k := root.Content[i]
		switch k.Value {
		case "SecurityGroups", "IpPermissions", "IpPermissionsEgress":
			what := "describe-security-groups output"
			if k.Value != "SecurityGroups" {
				what = "a security group as describe-security-groups prints it"
			}
			return &Error{File: name, Line: k.Line, Code: CodeMalformedConfig,
				Msg: fmt.Sprintf("this is %s (AWS's JSON, with %s), not an sgd config; run sgd import aws %s to turn it into one", what, k.Value, name)}
		}
	}
	return nil
}

// decodeSections decodes the document's sections into their Into. They are read as the
// fields of one struct made for the purpose, so that yaml.v3 resolves merge keys and
// aliases for them exactly as it does for Config (a section written through `<<:` is
// not lost).
func decodeSections(root *yaml.Node, sections []Section) error {
	if len(sections) == 0 {
		return nil
	}
	fields := make([]reflect.StructField, len(sections))
	for i, sec := range sections {
		fields[i] = reflect.StructField{Name: fmt.Sprintf("Section%d", i), Type: reflect.TypeOf(sec.Into).Elem(),
			Tag: reflect.StructTag(`yaml:"` + sec.Key + `"`)}
	}
	all := reflect.New(reflect.StructOf(fields))
	if err := root.Decode(all.Interface()); err != nil {
		return err
	}
	for i, sec := range sections {
		reflect.ValueOf(sec.Into).Elem().Set(all.Elem().Field(i))
	}
	return nil
}

// yamlTree parses exactly one YAML document; nil for an empty file.
func yamlTree(name string, data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if err == io.EOF {
			return nil, nil
		}
		return nil, yamlSyntax(name, data, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		return nil, &Error{File: name, Code: CodeMalformedConfig, Msg: "more than one YAML document; sgd reads exactly one"}
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) != 1 {
		return nil, nil
	}
	return root.Content[0], nil
}

// yamlError turns a yaml.v3 error into sgd's coded error, one per line the parser
// reported. Unknown fields never get this far (checkSchema reports them), so everything
// here is a malformed config.
func yamlError(file string, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		line, msg := yamlLine(strings.TrimPrefix(err.Error(), "yaml: "))
		return &Error{File: file, Line: line, Code: CodeMalformedConfig, Msg: msg}
	}
	var errs Errors
	for _, e := range te.Errors {
		line, msg := yamlLine(e)
		errs = append(errs, &Error{File: file, Line: line, Code: CodeMalformedConfig, Msg: msg})
	}
	return errs
}

// yamlLine splits yaml.v3's "line N: message".
func yamlLine(msg string) (int, string) {
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, after, ok := strings.Cut(rest, ": "); ok {
			if line, err := strconv.Atoi(n); err == nil {
				return line, after
			}
		}
	}
	return 0, msg
}

func lineAt(data []byte, off int64) int {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	return bytes.Count(data[:off], []byte("\n")) + 1
}

// Locate returns the file and the line of the value at path (Locator). Past what the file
// has, it is the line of the nearest value on the way there.
func (d *Document) Locate(path ...any) Location {
	l := Location{File: d.File, Line: d.line(path...)}
	if n := d.value(path...); n != nil && n.Kind == yaml.ScalarNode && n.Value == "" {
		l.Blank = true
	}
	return l
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
