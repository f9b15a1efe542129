package rules

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxParseErrors bounds the problems one Parse reports; a file of a million unknown keys
// gets this many and a note, not a million errors.
const maxParseErrors = 100

// yaml.v3's short tags for the kinds of scalar checkSchema tells apart.
const (
	tagStr    = "!!str"
	tagInt    = "!!int"
	tagFloat  = "!!float"
	tagBool   = "!!bool"
	tagNull   = "!!null"
	tagBinary = "!!binary"
	tagMerge  = "!!merge"
)

// checkSchema holds a parsed document (YAML, or JSON turned into the same node tree by
// jsonTree) against the Go type it is about to be decoded into, and returns every
// mismatch. It runs before yaml.v3 decodes anything, and it is what makes decoding strict
// by construction for both formats:
//
//   - a key names a field only if it equals the field's yaml tag byte for byte: no case
//     folding, no Unicode folding ("Egress" and "egreſſ" are unknown fields, where
//     encoding/json took both for egress);
//   - a key appears at most once in a mapping, so no value silently replaces another;
//   - a key is a string as written (a !!binary key would be decoded into another name);
//   - a number field holds an integer (yaml.v3 truncates 22.5 to 22) and a bool field
//     true or false (yaml.v3 also takes yes/on/no/off, which YAML 1.2 reads as text);
//   - a mapping, list or single value stands wherever the type wants one.
//
// An error names the key or field and the line. Because every mapping that passes has at
// most as many keys as its struct has fields, yaml.v3's quadratic duplicate-key scan never
// sees a big one.
//
// extra adds top-level keys that t (the root type) has no field for: the sections other
// packages own (Section), each checked against its own type.
func checkSchema(file string, root *yaml.Node, t reflect.Type, extra map[string]reflect.Type) Errors {
	w := &schemaWalk{file: file, root: root, fields: map[reflect.Type]map[string]reflect.Type{}, aliases: map[aliasUse]bool{}}
	if len(extra) > 0 {
		top := map[string]reflect.Type{}
		for name, ft := range w.structFields(t) {
			top[name] = ft
		}
		for name, ft := range extra {
			top[name] = ft
		}
		w.fields[t] = top
	}
	w.rootType = t
	w.value(root, t)
	return w.errs
}

type schemaWalk struct {
	file     string
	root     *yaml.Node
	rootType reflect.Type
	path     []any // where the walk is: keys and list indexes from the root
	errs     Errors
	fields   map[reflect.Type]map[string]reflect.Type // struct → yaml name → field type
	aliases  map[aliasUse]bool                        // anchors already checked as a type
}

// aliasUse is an anchored node read as one type. Checking each once keeps the walk linear
// however many aliases point at one anchor (yaml.v3 bounds alias expansion when decoding).
type aliasUse struct {
	n *yaml.Node
	t reflect.Type
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// add reports a problem with the value the walk is at: the error names its group or
// interface and rule (Where) and its field as validation's errors do.
func (w *schemaWalk) add(line int, code, format string, a ...any) {
	switch {
	case len(w.errs) < maxParseErrors:
		where, field := pathWhere(w.root, w.path)
		w.errs = append(w.errs, &Error{File: w.file, Line: line, Where: where, Field: field, Code: code, Msg: fmt.Sprintf(format, a...)})
	case len(w.errs) == maxParseErrors:
		w.errs = append(w.errs, &Error{File: w.file, Line: line, Code: CodeMalformedConfig,
			Msg: fmt.Sprintf("more than %d problems; stopped looking", maxParseErrors)})
	}
}

func (w *schemaWalk) full() bool { return len(w.errs) > maxParseErrors }

// value checks n, the value at w.path, as a value of type t.
func (w *schemaWalk) value(n *yaml.Node, t reflect.Type) {
	if w.full() {
		return
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil || w.aliases[aliasUse{n.Alias, t}] {
			return
		}
		w.aliases[aliasUse{n.Alias, t}] = true
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == tagNull {
		return // null is the omitted field, for every type
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		w.want(n, yaml.ScalarNode, "a name or a number") // Protocol reads the scalar as written
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if w.want(n, yaml.MappingNode, "a mapping") {
			w.mapping(n, t)
		}
	case reflect.Slice:
		if w.want(n, yaml.SequenceNode, "a list") {
			for i, c := range n.Content {
				w.path = append(w.path, i)
				w.value(c, t.Elem())
				w.path = w.path[:len(w.path)-1]
			}
		}
	case reflect.String:
		if w.want(n, yaml.ScalarNode, "a single value") && n.ShortTag() == tagBinary {
			w.add(n.Line, CodeMalformedConfig, "a !!binary value cannot be read in review; write the text")
		}
	case reflect.Int, reflect.Int64:
		if !w.want(n, yaml.ScalarNode, "a whole number") {
			break
		}
		var x int64
		if n.ShortTag() != tagInt || n.Decode(&x) != nil {
			w.add(n.Line, CodeMalformedConfig, "want a whole number, not %s", describe(n))
		}
	case reflect.Bool:
		if w.want(n, yaml.ScalarNode, "true or false") && n.ShortTag() != tagBool {
			w.add(n.Line, CodeMalformedConfig, "want true or false, not %s", describe(n))
		}
	default:
		// Every field type of Config is one of the above (TestConfigTags walks them all).
		w.add(n.Line, CodeMalformedConfig, "sgd cannot read this field")
	}
}

// want reports n unless it is of kind k; what says what was wanted.
func (w *schemaWalk) want(n *yaml.Node, k yaml.Kind, what string) bool {
	if n.Kind == k {
		return true
	}
	switch {
	case len(w.path) == 0 && n.Kind == yaml.SequenceNode:
		// The file itself: no Go type, no "document", but what a config is.
		w.add(n.Line, CodeMalformedConfig, "the file is a list (it starts with \"- \"); an sgd config is a mapping with the keys %s: write security_groups: on a line of its own and indent the list of groups under it",
			strings.Join(w.topKeys(), ", "))
		return false
	case len(w.path) == 0:
		w.add(n.Line, CodeMalformedConfig, "the file is %s; an sgd config is a mapping with the keys %s", describe(n), strings.Join(w.topKeys(), ", "))
		return false
	}
	w.add(n.Line, CodeMalformedConfig, "want %s, not %s", what, describe(n))
	return false
}

// topKeys are the top-level keys a config may have, in the order of Config's fields,
// sections last.
func (w *schemaWalk) topKeys() []string {
	var keys []string
	for i := range w.rootType.NumField() {
		if name, _, _ := strings.Cut(w.rootType.Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
			keys = append(keys, name)
		}
	}
	var extra []string
	for name := range w.structFields(w.rootType) {
		if !slices.Contains(keys, name) {
			extra = append(extra, name)
		}
	}
	slices.Sort(extra)
	return append(keys, extra...)
}

// mapping checks a mapping read as struct t: each key exactly one of t's fields, once.
func (w *schemaWalk) mapping(n *yaml.Node, t reflect.Type) {
	fields := w.structFields(t)
	first := map[string]int{} // key → its line
	for i := 0; i+1 < len(n.Content) && !w.full(); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			w.add(k.Line, CodeMalformedConfig, "a key must be a field name, not %s", describe(k))
			continue
		}
		name, tag := k.Value, k.ShortTag()
		if line, dup := first[name]; dup {
			w.add(k.Line, CodeMalformedConfig, "key %q appears twice in one mapping (first at line %d); sgd would have to pick one", name, line)
			continue
		}
		first[name] = k.Line
		switch {
		case tag == tagMerge: // YAML's `<<: *anchor`; JSON keys are strings, never merges
			w.merge(v, t)
			continue
		case tag != tagStr && k.Style&yaml.TaggedStyle != 0:
			w.add(k.Line, CodeMalformedConfig, "key %q is tagged %s; field names are written as plain text", name, tag)
			continue
		}
		ft, ok := fields[name]
		if !ok {
			w.add(k.Line, CodeUnknownParameter, "unknown field %q%s", name, hint(name, fields))
			continue
		}
		w.path = append(w.path, name)
		w.value(v, ft)
		w.path = w.path[:len(w.path)-1]
	}
}

// merge checks the value of a YAML merge key: a mapping, or a list of them, each read as t.
func (w *schemaWalk) merge(v *yaml.Node, t reflect.Type) {
	if v.Kind == yaml.SequenceNode {
		for _, c := range v.Content {
			w.value(c, t)
		}
		return
	}
	w.value(v, t)
}

// structFields maps the yaml names of t's fields to their types.
func (w *schemaWalk) structFields(t reflect.Type) map[string]reflect.Type {
	if m, ok := w.fields[t]; ok {
		return m
	}
	m := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if f.IsExported() && name != "" && name != "-" {
			m[name] = f.Type
		}
	}
	w.fields[t] = m
	return m
}

// hint names the field an unknown key folds to, if any: "Egress" and "egreſſ" are not
// egress, and the person reading the error should see why.
func hint(key string, fields map[string]reflect.Type) string {
	for name := range fields {
		if strings.EqualFold(key, name) {
			return fmt.Sprintf(" (field names match exactly: did you mean %q?)", name)
		}
	}
	return ""
}

// describe says what a node is, for messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	switch n.ShortTag() {
	case tagStr:
		return fmt.Sprintf("the text %q", n.Value)
	case tagInt, tagFloat:
		return "the number " + n.Value
	case tagBool:
		return n.Value
	}
	return fmt.Sprintf("%s %q", n.ShortTag(), n.Value)
}

// pathWhere names the place path points to in the terms of validation's errors: the
// group, rule, interface, prefix list or member (Where), and the field within it (Field),
// e.g. ("group sg-web ingress[0]", "from_port") or ("interface eth0",
// "connection_tracking.udp_timeout"). A group or interface is named by its id or name
// when the file gives one, by its index otherwise.
func pathWhere(root *yaml.Node, path []any) (where, field string) {
	if len(path) < 2 {
		if len(path) == 1 {
			return "", fmt.Sprint(path[0])
		}
		return "", ""
	}
	top, _ := path[0].(string)
	i, ok := path[1].(int)
	if !ok {
		return top, fieldPath(path[1:])
	}
	item := (&Document{root: root}).value(top, i)
	named := func(key, prefix string) string {
		if v := scalarField(item, key); v != "" {
			return prefix + " " + v
		}
		return fmt.Sprintf("%s[%d]", top, i)
	}
	rest := path[2:]
	switch top {
	case "security_groups":
		where = named("group_id", "group")
		if len(rest) >= 2 {
			if dir, _ := rest[0].(string); dir == "ingress" || dir == "egress" {
				if j, ok := rest[1].(int); ok {
					return fmt.Sprintf("%s %s[%d]", where, dir, j), fieldPath(rest[2:])
				}
			}
		}
	case "interfaces":
		where = named("name", "interface")
	case "ports":
		where = named("name", "port")
	case "prefix_lists":
		where = named("prefix_list_id", "prefix list")
	default:
		where = fmt.Sprintf("%s[%d]", top, i)
	}
	return where, fieldPath(rest)
}

// fieldPath writes path as a field: keys joined by dots, indexes in brackets.
func fieldPath(path []any) string {
	var b strings.Builder
	for _, p := range path {
		switch k := p.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", k)
		default:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			fmt.Fprint(&b, k)
		}
	}
	return b.String()
}

// scalarField is the text of the scalar under key in mapping n, or "".
func scalarField(n *yaml.Node, key string) string {
	if n == nil || n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key && n.Content[i+1].Kind == yaml.ScalarNode {
			return n.Content[i+1].Value
		}
	}
	return ""
}
