package filter

import "sync"

// RuleKey names a rule across reloads: its group and its security group rule id.
type RuleKey struct{ Group, Rule string }

// ruleRefs numbers rules by their RuleKey for the connection table, which stores a number
// with each flow, not a name: a rule keeps its number across reloads, so a flow's number
// always names the rule that let it in. Numbers are never reused (a rule changed in
// content has a new id, hence a new number); 0 is never given out. Safe for concurrent use.
type ruleRefs struct {
	mu    sync.Mutex
	byKey map[RuleKey]uint32
	keys  []RuleKey // keys[n-1] is number n
}

func (r *ruleRefs) of(k RuleKey) uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n, ok := r.byKey[k]; ok {
		return n
	}
	if r.byKey == nil {
		r.byKey = map[RuleKey]uint32{}
	}
	r.keys = append(r.keys, k)
	n := uint32(len(r.keys))
	r.byKey[k] = n
	return n
}

func (r *ruleRefs) key(n uint32) (RuleKey, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n == 0 || int(n) > len(r.keys) {
		return RuleKey{}, false
	}
	return r.keys[n-1], true
}

// FlowRule returns the rule that let a tracked flow in, from the number the connection
// table holds for it (conntrack.Meta.Rule); ok is false for 0 or a number this engine did
// not give out.
func (e *Engine) FlowRule(n uint32) (RuleKey, bool) { return e.refs.key(n) }
