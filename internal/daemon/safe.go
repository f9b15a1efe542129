package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/sgd-firewall/sgd/internal/filter"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// Safe to switch on (SPEC 4.8): what `sgd run` checks and does before it enforces, so
// that starting it neither silently protects nothing nor cuts off the person starting it.

// ErrFiltersNothing is a config that lists no interface: sgd would run, look healthy and
// filter nothing.
var ErrFiltersNothing = errors.New("the config filters nothing: it lists no interfaces; " +
	"name this host's devices under interfaces: (or its instances' under ports:; sgd check shows what the config holds)")

// CheckInterfaces is the check `sgd run` makes of p's interfaces against this host
// before it touches anything: p must list at least one (ErrFiltersNothing), and each must
// exist, unless allowMissing (daemon.allow_missing_interfaces), in which case the missing
// ones are returned to be warned about. A refusal names the missing devices and the ones
// this host has, for the typo it usually is.
func CheckInterfaces(p *rules.Policy, allowMissing bool) (missing []string, err error) {
	names := p.DeviceNames()
	if len(names) == 0 {
		return nil, ErrFiltersNothing
	}
	have, err := hostDevices()
	if err != nil {
		return nil, fmt.Errorf("list this host's network devices: %w", err)
	}
	for _, n := range names {
		if !have[n] {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 || allowMissing {
		return missing, nil
	}
	var here []string
	for n := range have {
		if n != "lo" {
			here = append(here, n)
		}
	}
	slices.Sort(here)
	which, verb := "interface "+missing[0], "does"
	if len(missing) > 1 {
		which, verb = "interfaces "+strings.Join(missing, ", "), "do"
	}
	list := "none but lo"
	if len(here) > 0 {
		list = strings.Join(here, ", ")
	}
	return missing, fmt.Errorf("%s %s not exist on this host (its devices: %s), so sgd would not filter it; "+
		"fix the name, or set daemon.allow_missing_interfaces: true (--allow-missing-interfaces) "+
		"to start anyway and filter it once it appears", which, verb, list)
}

// hostDevices returns the names of this host's network devices (in the caller's network
// namespace).
func hostDevices() (map[string]bool, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	have := make(map[string]bool, len(ifs))
	for _, ifi := range ifs {
		have[ifi.Name] = true
	}
	return have, nil
}

// missingInterfaces returns the interfaces the running policy lists that this host does
// not have (none when the host's devices cannot be read: nothing is known missing).
func (d *Daemon) missingInterfaces() []string {
	have, err := hostDevices()
	if err != nil {
		return nil
	}
	var missing []string
	for _, n := range d.ctl.Running().Policy.DeviceNames() {
		if !have[n] {
			missing = append(missing, n)
		}
	}
	return missing
}

// guard refuses, at every reload, a config that lists no interface: an emptied or
// truncated file would otherwise unhook every interface, and sgd would protect nothing
// while looking healthy. The running rules stay in force; stop sgd to stop filtering.
// It is a publisher that publishes nothing, so that the controller asks it with the
// others before any publishes.
type guard struct{}

func (guard) Name() string { return "interfaces" }
func (guard) Check(p *rules.Policy) error {
	if len(p.DeviceNames()) == 0 {
		return fmt.Errorf("%w (to stop filtering, stop sgd)", ErrFiltersNothing)
	}
	return nil
}
func (guard) Publish(context.Context, *rules.Policy) error { return nil }

// adopt tracks the host's established TCP connections (SPEC 4.8) before the hooks go in,
// and logs how many, per interface.
func (d *Daemon) adopt() {
	conns, err := filter.ReadEstablished()
	if err != nil {
		// What was read is adopted; a connection whose route is unknown is not.
		d.log.Warn("reading the host's established TCP connections", zap.Error(err))
	}
	d.adopted = d.engine.Adopt(conns)
	total, by := 0, []zap.Field{}
	for _, name := range slices.Sorted(maps.Keys(d.adopted)) {
		total += d.adopted[name]
		by = append(by, zap.Int(name, d.adopted[name]))
	}
	d.log.Info("adopted the host's established TCP connections as tracked flows",
		zap.Int("connections", total), zap.Dict("by_interface", by...))
}

// LockoutWarning says, in words a person acts on, whether p would cut off the SSH
// session a command runs in: sshConnection is its $SSH_CONNECTION (nothing to say when
// empty), the interface is the one the kernel routes the session's replies through, and
// adopt says whether open connections are adopted at start (filter.Lockout). It returns
// "" when the session's client is allowed, or the session crosses no filtered interface.
func LockoutWarning(p *rules.Policy, exemptDHCP, adopt bool, sshConnection string) string {
	s, ok := filter.ParseSSHConnection(sshConnection)
	if !ok {
		return ""
	}
	h := filter.ReadHost(p.InterfaceNames())
	if !slices.Contains(h.Local, s.Server.Addr()) {
		// The session ends on another host, or in another network namespace than this
		// sgd's (a lab started from an SSH session): not this sgd's to cut.
		return ""
	}
	idx, err := filter.RouteDev(s.Server.Addr(), s.Client.Addr())
	if err != nil {
		return ""
	}
	ifi, err := net.InterfaceByIndex(int(idx))
	if err != nil {
		return ""
	}
	return filter.Lockout(p, h, exemptDHCP, s, ifi.Name, adopt)
}

// warnLockout prints and logs the lock-out warning for the session sgd was started
// from, if any, before the hooks go in. It does not refuse to start: the person may mean
// it (a console at hand), and --audit is the way to look first.
func (d *Daemon) warnLockout(p *rules.Policy) {
	w := LockoutWarning(p, d.set.ExemptDHCP, d.set.AdoptEstablished, d.opt.SSHConnection)
	if w == "" {
		return
	}
	if d.set.Audit {
		w = "AUDIT MODE: nothing is dropped now; once this config is enforced:\n" + w
	}
	if d.opt.Stderr != nil {
		fmt.Fprintln(d.opt.Stderr, w)
	}
	d.log.Warn("lock-out warning: this SSH session's client would be denied", zap.String("ssh_connection", d.opt.SSHConnection),
		zap.Bool("audit", d.set.Audit), zap.Bool("session_survives", d.set.AdoptEstablished || d.set.Audit))
}
