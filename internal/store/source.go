package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/sgd-firewall/sgd/internal/controller"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// Source is a Store as a source of desired state for the controller (controller.Source),
// and the one way the API changes the store (Applier): a change is proposed to the
// controller, validated with every other source's state and checked by every publisher,
// committed, and only then published. So a change the store refuses (etcd unreachable, a
// lost race) is never in force, not even for the moment the commit takes. Safe for use
// by several goroutines.
type Source struct {
	st   Store
	host string // fleet mode's host id: whose attachments are proposed (Snapshot.ConfigFor)

	write sync.Mutex // serialises Apply

	mu        sync.Mutex // guards the fields below
	committed *Snapshot  // what the store holds

	applied func(*Snapshot, error) // OnApplied's; nil: none
}

// OnApplied sets fn to be called each time a committed state was put to the controller:
// after a change applied through Apply (err nil), and after each reload with a state that
// came from the store (Follow, or a re-read on a conflict), with the reload's error. fn is
// called with Apply's lock held, one call at a time, and must not call Apply. Set it
// before the source is used.
func (s *Source) OnApplied(fn func(snap *Snapshot, err error)) { s.applied = fn }

func (s *Source) notify(snap *Snapshot, err error) {
	if s.applied != nil {
		s.applied(snap, err)
	}
}

// NewSource loads the store's state and returns it as a source.
func NewSource(ctx context.Context, st Store) (*Source, error) {
	s, err := st.Load(ctx)
	if err != nil {
		return nil, err
	}
	return &Source{st: st, committed: s}, nil
}

// NewSourceAt returns st as a source holding snap as its committed state, without reading
// st: fleet mode's start from its cache while etcd is unreachable (Follow catches up).
func NewSourceAt(st Store, snap *Snapshot) *Source {
	return &Source{st: st, committed: snap.Clone()}
}

// ForHost makes s propose the attachments in force on host (its daemon.etcd.host_id in
// fleet mode) instead of a single host's. Call it before the source is used.
func (s *Source) ForHost(host string) { s.host = host }

// Host is the host ForHost set ("" on a single host).
func (s *Source) Host() string { return s.host }

// Revision is the revision of the committed state.
func (s *Source) Revision() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.committed.Revision
}

// Name is "api", as logs show the source.
func (s *Source) Name() string { return "api" }

// Propose returns the state to put in force: the committed one, or, to the check of a
// change being applied (Applier, through ctx), that change. Its locator names API objects
// (group, rule, prefix list, interface ids), not lines.
func (s *Source) Propose(ctx context.Context) (controller.Proposal, error) {
	s.mu.Lock()
	snap := s.committed
	s.mu.Unlock()
	if c, ok := ctx.Value(candidate{s}).(*Snapshot); ok {
		snap = c
	}
	return controller.Proposal{Config: snap.ConfigFor(s.host), Locator: locator{snap, snap.attachments(s.host)}, Version: Version(snap)}, nil
}

// Snapshot returns a copy of the committed state, for reading (Describe*).
func (s *Source) Snapshot() *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.committed.Clone()
}

// Version names a snapshot's content (not its revision, so that two stores holding the
// same state agree): a sha256 of its objects.
func Version(snap *Snapshot) string {
	c := *snap
	c.Revision = 0
	b, _ := json.Marshal(&c)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Reloader is the controller (controller.Controller.Reload): it reads every source,
// validates the whole, and publishes it or nothing.
type Reloader interface {
	Reload(ctx context.Context, why string) error
	// Check validates and compiles every source's state and asks every publisher,
	// publishing nothing (controller.Controller.Check).
	Check(ctx context.Context) error
}

// candidate is the context key under which Applier hands the change it checks to its
// own source's Propose.
type candidate struct{ s *Source }

// ApplyFunc changes the API's state: change edits a copy of the committed snapshot, and the
// result is in force and committed when ApplyFunc returns nil. An error from change, from
// validation (rules.Errors) or from the store leaves everything as it was. why names the
// change in the controller's log (the API action).
type ApplyFunc func(ctx context.Context, why string, change func(*Snapshot) error) error

// Applier returns the ApplyFunc that runs changes through r (the daemon's controller,
// whose sources include s).
//
// The order is: change a copy; stage it, so that s proposes it; reload (the controller
// validates it with the config file's state, compiles and publishes it — or changes
// nothing); commit it to the store; unstage. A reload that fails leaves the running policy
// and the store as they were. A commit that fails after a good reload is undone by a
// second reload with the committed state, so the policy in force is never one the store
// would not give back after a restart. A crash between the reload and the commit loses the
// change, which the caller was never told had succeeded.
//
// A commit that loses a race (ErrConflict: another host's API wrote first, in fleet mode)
// is retried on the state re-read from the store, change run again on it, up to
// applyAttempts times in all; then the conflict is returned. change must therefore be
// safe to run more than once, each run on a fresh copy.
func (s *Source) Applier(r Reloader) ApplyFunc {
	return func(ctx context.Context, why string, change func(*Snapshot) error) error {
		s.write.Lock()
		defer s.write.Unlock()
		for attempt := 1; ; attempt++ {
			err := s.apply(ctx, r, why, change)
			if !errors.Is(err, ErrConflict) || attempt == applyAttempts {
				return err
			}
			fresh, lerr := s.st.Load(ctx)
			if lerr != nil {
				return errors.Join(err, lerr)
			}
			if s.update(fresh) {
				// In force now, whatever becomes of the retry: Follow will skip it.
				s.reloadWith(ctx, r, fresh, "re-read after a conflict")
			}
		}
	}
}

// applyAttempts bounds Applier's tries of one change that keeps losing commit races.
const applyAttempts = 4

// apply is one try of Applier's, with s.write held: check, commit, then put in force.
func (s *Source) apply(ctx context.Context, r Reloader, why string, change func(*Snapshot) error) error {
	next := s.Snapshot()
	if err := change(next); err != nil {
		return err
	}
	if err := r.Check(context.WithValue(ctx, candidate{s}, next)); err != nil {
		return err
	}
	// Commit sets the revision of what it is given.
	if err := s.st.Commit(ctx, next); err != nil {
		return err
	}
	s.mu.Lock()
	s.committed = next
	s.mu.Unlock()
	if err := r.Reload(ctx, why); err != nil {
		// Committed and checked, yet not in force here (a publisher failed, say
		// iptables): the running rules stay, the next reload tries again.
		s.notify(next, err)
		return fmt.Errorf("committed, but not yet in force on this host: %w", err)
	}
	s.notify(next, nil)
	return nil
}

// reloadWith has r put snap, just made the committed state, in force.
func (s *Source) reloadWith(ctx context.Context, r Reloader, snap *Snapshot, how string) {
	err := r.Reload(ctx, fmt.Sprintf("etcd revision %d (%s)", snap.Revision, how))
	s.notify(snap, err)
}

// update makes snap the committed state if it is newer than the one held; it says whether
// it was.
func (s *Source) update(snap *Snapshot) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if snap.Revision <= s.committed.Revision {
		return false
	}
	s.committed = snap
	return true
}

// Follow puts in force each state reported on states (Etcd.Watch) that is newer than the
// one s holds: it becomes the committed state and r reloads with why "etcd revision N".
// Updates are serialised with Apply, so a change being applied is never mixed with a
// state that arrived meanwhile (its commit will conflict and retry on it). A state
// the controller refuses (it clashes with this host's file) leaves the running policy as
// it was, fail-static, and is tried again with the next reload. Each reload is reported
// to OnApplied's function. Follow returns when states is closed.
func (s *Source) Follow(ctx context.Context, states <-chan *Snapshot, r Reloader) {
	for snap := range states {
		s.write.Lock()
		if s.update(snap) {
			s.reloadWith(ctx, r, snap, "watch")
		}
		s.write.Unlock()
	}
}

// locator places the config's parts at the API objects they came from; attached are the
// snapshot's attachments the config lists, in its order.
type locator struct {
	s        *Snapshot
	attached []Attachment
}

func (l locator) Locate(path ...any) rules.Location {
	key, _ := at[string](path, 0)
	i, ok := at[int](path, 1)
	if !ok {
		return rules.Location{File: "api"}
	}
	switch key {
	case "security_groups":
		if i >= len(l.s.Groups) {
			break
		}
		g := &l.s.Groups[i]
		dir, _ := at[string](path, 2)
		j, ok := at[int](path, 3)
		list := g.Ingress
		if dir == "egress" {
			list = g.Egress
		}
		if ok && j < len(list) {
			return rules.Location{File: "api: security group " + g.ID + " rule " + list[j].ID}
		}
		return rules.Location{File: "api: security group " + g.ID}
	case "prefix_lists":
		if i < len(l.s.PrefixLists) {
			return rules.Location{File: "api: prefix list " + l.s.PrefixLists[i].ID}
		}
	case "interfaces":
		if i < len(l.attached) {
			return rules.Location{File: "api: interface " + l.attached[i].Interface}
		}
	}
	return rules.Location{File: "api"}
}

func at[T any](path []any, i int) (T, bool) {
	var zero T
	if i >= len(path) {
		return zero, false
	}
	v, ok := path[i].(T)
	return v, ok
}
