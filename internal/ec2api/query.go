package ec2api

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// query reads the parameters of one EC2 Query request (AWS's "query protocol": flat
// names, lists as Name.1, Name.2, structures as Name.1.Member). Every parameter an action
// reads is marked used; what is left unread afterwards is an unknown parameter, refused
// (SPEC 1.5: a field ignored could leave the host more open than the user wrote).
//
// A query is a view: members(prefix) returns views of the same parameters under
// "prefix.N.", sharing the account of what was read.
type query struct {
	vals   url.Values
	prefix string
	used   map[string]bool
}

func newQuery(v url.Values) *query { return &query{vals: v, used: map[string]bool{}} }

// has says whether the parameter is present (not marking it read).
func (q *query) has(name string) bool {
	_, ok := q.vals[q.prefix+name]
	return ok
}

// str returns the parameter's value ("" when absent). A parameter given twice is refused
// by unread (the second value would be ignored).
func (q *query) str(name string) string {
	k := q.prefix + name
	v, ok := q.vals[k]
	if !ok {
		return ""
	}
	q.used[k] = true
	return v[0]
}

// required returns the parameter's value, or MissingParameter.
func (q *query) required(name string) (string, error) {
	if !q.has(name) {
		return "", errf(codeMissingParameter, "The request must contain the parameter %s", q.prefix+name)
	}
	return q.str(name), nil
}

// integer returns the parameter as an int; nil when absent.
func (q *query) integer(name string) (*int, error) {
	if !q.has(name) {
		return nil, nil
	}
	s := q.str(name)
	n, err := strconv.Atoi(s)
	if err != nil || n < -1<<31 || n > 1<<31-1 {
		return nil, errf(codeInvalidParameterValue, "Invalid value '%s' for %s: not an integer", s, q.prefix+name)
	}
	return &n, nil
}

// long returns the parameter as an int64 (the service model's Long); nil when absent.
func (q *query) long(name string) (*int64, error) {
	if !q.has(name) {
		return nil, nil
	}
	s := q.str(name)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return nil, errf(codeInvalidParameterValue, "Invalid value '%s' for %s: not an integer", s, q.prefix+name)
	}
	return &n, nil
}

// boolean returns the parameter as a bool (false when absent).
func (q *query) boolean(name string) (bool, error) {
	if !q.has(name) {
		return false, nil
	}
	switch s := strings.ToLower(q.str(name)); s {
	case "true":
		return true, nil
	case "false":
		return false, nil
	default:
		return false, errf(codeInvalidParameterValue, "Invalid value '%s' for %s: true or false", s, q.prefix+name)
	}
}

// indexes returns the list indexes N present under name (name.N or name.N.…), in order.
func (q *query) indexes(name string) ([]int, error) {
	p := q.prefix + name + "."
	seen := map[int]bool{}
	var out []int
	for k := range q.vals {
		rest, ok := strings.CutPrefix(k, p)
		if !ok {
			continue
		}
		num, _, _ := strings.Cut(rest, ".")
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || n > maxListLen || strconv.Itoa(n) != num {
			return nil, errf(codeInvalidParameterValue, "Invalid list index in parameter %s", k)
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// maxListLen bounds list indexes, so that a request cannot make sgd build huge lists.
const maxListLen = 1000

// strings returns the list name.1, name.2, … of plain values.
func (q *query) strs(name string) ([]string, error) {
	idx, err := q.indexes(name)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range idx {
		k := fmt.Sprintf("%s.%d", name, n)
		if !q.has(k) {
			return nil, errf(codeInvalidParameterValue, "The parameter %s%s is a list of values", q.prefix, k)
		}
		out = append(out, q.str(k))
	}
	return out, nil
}

// members returns a view of each structure name.N (its fields read as "Field").
func (q *query) members(name string) ([]*query, error) {
	idx, err := q.indexes(name)
	if err != nil {
		return nil, err
	}
	out := make([]*query, 0, len(idx))
	for _, n := range idx {
		out = append(out, &query{vals: q.vals, prefix: fmt.Sprintf("%s%s.%d.", q.prefix, name, n), used: q.used})
	}
	return out, nil
}

// member returns a view of the structure name (its fields read as "name.Field").
func (q *query) member(name string) *query {
	return &query{vals: q.vals, prefix: q.prefix + name + ".", used: q.used}
}

// unread returns UnknownParameter for the first parameter (in name order) nothing read,
// or given more than once.
func (q *query) unread() error {
	keys := make([]string, 0, len(q.vals))
	for k := range q.vals {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !q.used[k] {
			return errf(codeUnknownParameter, "The parameter %s is not recognized", k)
		}
		if len(q.vals[k]) > 1 {
			return errf(codeInvalidParameterValue, "The parameter %s is given more than once", k)
		}
	}
	return nil
}

// tags reads a list of Tag.N.Key / Tag.N.Value under name.
func (q *query) tags(name string) ([]tag, error) {
	ms, err := q.members(name)
	if err != nil {
		return nil, err
	}
	var out []tag
	for _, m := range ms {
		k, err := m.required("Key")
		if err != nil {
			return nil, err
		}
		out = append(out, tag{Key: k, Value: m.str("Value")})
	}
	return out, nil
}

// selection reads what a Describe call picks: the ids listed as idParam.N, and Filter.N.
func (q *query) selection(idParam string) ([]string, []queryFilter, error) {
	ids, err := q.strs(idParam)
	if err != nil {
		return nil, nil, err
	}
	filters, err := q.filters()
	return ids, filters, err
}

// paging reads MaxResults and NextToken.
func (q *query) paging() (*int, string, error) {
	max, err := q.integer("MaxResults")
	return max, q.str("NextToken"), err
}

// queryFilter is one Filter.N: a name and the values any of which may match.
type queryFilter struct {
	Name   string
	Values []string
}

func (q *query) filters() ([]queryFilter, error) {
	ms, err := q.members("Filter")
	if err != nil {
		return nil, err
	}
	var out []queryFilter
	for _, m := range ms {
		name, err := m.required("Name")
		if err != nil {
			return nil, err
		}
		vals, err := m.strs("Value")
		if err != nil {
			return nil, err
		}
		out = append(out, queryFilter{Name: name, Values: vals})
	}
	return out, nil
}

// match says whether s matches one of the filter's values, which may hold AWS's
// wildcards: * any run of characters, ? any one.
func (f queryFilter) match(s string) bool {
	for _, v := range f.Values {
		if glob(v, s) {
			return true
		}
	}
	return false
}

// glob matches s against a pattern of * and ? (no escapes), iteratively.
func glob(p, s string) bool {
	px, sx := 0, 0
	nextP, nextS := -1, -1
	for px < len(p) || sx < len(s) {
		if px < len(p) {
			switch c := p[px]; c {
			case '*':
				nextP, nextS = px, sx+1
				px++
				continue
			case '?':
				if sx < len(s) {
					px++
					sx++
					continue
				}
			default:
				if sx < len(s) && s[sx] == c {
					px++
					sx++
					continue
				}
			}
		}
		if nextS > 0 && nextS <= len(s) {
			px, sx = nextP, nextS
			continue
		}
		return false
	}
	return true
}
