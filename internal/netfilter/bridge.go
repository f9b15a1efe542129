package netfilter

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// BridgeSysctlDir is where br_netfilter's switches live, per network namespace; it
// exists only while br_netfilter is loaded (or built in).
const BridgeSysctlDir = "/proc/sys/net/bridge"

// bridgeCalls are the switches that make bridged IPv4 and IPv6 traverse iptables and
// ip6tables (and so sgd's FORWARD chain, where physdev matches the bridge ports). ARP has
// its own (arptables) and never reaches sgd.
var bridgeCalls = [...]string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables"}

// ErrNoBridgeNetfilter: br_netfilter is not loaded, so bridged traffic never reaches
// iptables (modprobe br_netfilter).
var ErrNoBridgeNetfilter = errors.New("br_netfilter is not loaded (no " + BridgeSysctlDir + "): bridged traffic does not reach iptables; modprobe br_netfilter")

// Bridge turns br_netfilter's iptables calls on for ports on a bridge, and puts back what
// it found. Dir is the sysctl directory ("" is BridgeSysctlDir; tests use another). The
// zero value is ready to use; it is not safe for concurrent use (the controller, its one
// caller, publishes one policy at a time).
type Bridge struct {
	Dir  string
	prev map[string]string // switch → the value Enable found, for Restore; nil: untouched
}

func (b *Bridge) dir() string {
	if b.Dir == "" {
		return BridgeSysctlDir
	}
	return b.Dir
}

// Loaded reports whether br_netfilter is there to be turned on.
func (b *Bridge) Loaded() bool {
	_, err := os.Stat(b.dir())
	return err == nil
}

// Enable sets bridge-nf-call-iptables and -ip6tables to 1 and returns the names of those
// it changed, remembering their values for Restore. Enabling again changes nothing.
func (b *Bridge) Enable() (changed []string, err error) {
	if !b.Loaded() {
		return nil, ErrNoBridgeNetfilter
	}
	if b.prev == nil {
		b.prev = map[string]string{}
	}
	for _, name := range bridgeCalls {
		path := filepath.Join(b.dir(), name)
		v, err := os.ReadFile(path)
		if err != nil {
			return changed, fmt.Errorf("netfilter: read %s: %w", path, err)
		}
		cur := strings.TrimSpace(string(v))
		if cur == "1" {
			continue
		}
		if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
			return changed, fmt.Errorf("netfilter: turn on %s: %w", path, err)
		}
		if _, seen := b.prev[name]; !seen {
			b.prev[name] = cur
		}
		changed = append(changed, name+"="+cur+"→1")
	}
	return changed, nil
}

// Restore writes back the values Enable changed, and forgets them.
func (b *Bridge) Restore() error {
	var errs []error
	for name, v := range b.prev {
		path := filepath.Join(b.dir(), name)
		if err := os.WriteFile(path, []byte(v+"\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("netfilter: restore %s to %s: %w", path, v, err))
		}
	}
	b.prev = nil
	return errors.Join(errs...)
}
