package offload

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// switches are the conntrack sysctls the fast path needs while it runs, and the value it
// needs: nf_conntrack_acct, so that every entry created from then on counts its packets
// and bytes (offloaded packets never reach sgd: these counters are how it counts them);
// nf_conntrack_events 1, so that every entry gets the event extension and reports its
// destruction (the default 2 gives it only to entries created while a listener exists,
// so a listener's restart would lose some for good).
var switches = [...]struct{ name, want string }{
	{"nf_conntrack_acct", "1"},
	{"nf_conntrack_events", "1"},
}

// Sysctls turns on the conntrack sysctls the fast path needs in the namespace of the
// calling thread, and puts back what it found. Dir is the sysctl directory ("" is
// SysctlDir; tests may use another). Turn them on before the rules that offload, so that
// every offloaded entry has its counters. The zero value is ready to use; it is not safe
// for concurrent use.
type Sysctls struct {
	Dir  string
	prev map[string]string // sysctl → the value Enable found, for Restore
}

func (s *Sysctls) dir() string {
	if s.Dir == "" {
		return SysctlDir
	}
	return s.Dir
}

// Enable sets the switches and returns those it changed as "name=old→new", remembering
// the old values for Restore. Enabling again changes nothing.
func (s *Sysctls) Enable() (changed []string, err error) {
	if s.prev == nil {
		s.prev = map[string]string{}
	}
	for _, sw := range switches {
		cur, err := readSysctl(s.dir(), sw.name)
		if err != nil {
			return changed, err
		}
		if cur == sw.want {
			continue
		}
		path := filepath.Join(s.dir(), sw.name)
		if err := os.WriteFile(path, []byte(sw.want+"\n"), 0o644); err != nil {
			return changed, fmt.Errorf("offload: set %s to %s: %w", path, sw.want, err)
		}
		if _, seen := s.prev[sw.name]; !seen {
			s.prev[sw.name] = cur
		}
		changed = append(changed, sw.name+"="+cur+"→"+sw.want)
	}
	return changed, nil
}

// Restore writes back the values Enable changed, and forgets them. Entries created
// meanwhile keep their counters.
func (s *Sysctls) Restore() error {
	var errs []error
	for name, v := range s.prev {
		path := filepath.Join(s.dir(), name)
		if err := os.WriteFile(path, []byte(v+"\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("offload: restore %s to %s: %w", path, v, err))
		}
	}
	s.prev = nil
	return errors.Join(errs...)
}
