package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/sgd-firewall/sgd/internal/controller"
	"github.com/sgd-firewall/sgd/internal/daemon"
	"github.com/sgd-firewall/sgd/internal/filter"
	"github.com/sgd-firewall/sgd/internal/rules"
	"github.com/sgd-firewall/sgd/internal/settings"
)

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", "--config FILE",
		`Validate a config file (YAML, or JSON) against AWS's Security Group rules: every
mistake is reported with the group, rule, field and the AWS error code the EC2 API would
give. Never touches the firewall.

It also warns, on stderr, about what would not filter: no interfaces, listed interfaces
this host does not have (sgd run refuses them unless daemon.allow_missing_interfaces is
set), and — when run from an SSH session — a config that would drop a new connection like
yours (a lock-out).

Exit 0 when valid (warnings or not); 1 when rejected, or when the file is empty or only
comments (it would filter nothing); 2 on a usage error or a --config that does not exist
or cannot be opened.`, stderr)
	config := fs.String("config", "", "config file `path` (required)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if *config == "" {
		fmt.Fprintln(stderr, "sgd check: --config is required")
		return exitUsage
	}
	// The controller's own load (read, validate, compile), as `sgd run` does it.
	file := controller.NewFile(*config)
	st, err := controller.Load(context.Background(), rules.Env{LocalAddrs: daemon.LocalAddrs}, file)
	if err != nil {
		return configFailed("check", *config, err, stderr)
	}
	m, pol := st.Model, st.Policy
	if len(m.Groups) == 0 && len(m.Interfaces) == 0 && len(m.PrefixLists) == 0 && len(m.Members) == 0 {
		fmt.Fprintf(stderr, "sgd check: %s is empty (no security_groups, no interfaces): it would filter nothing\n", *config)
		return exitNo
	}
	// What `sgd run` checks before it touches netfilter (interface names it can put in a
	// rule), so that a config check passes exactly when run would accept it.
	if err := daemon.CheckNetfilter(pol, file.Settings()); err != nil {
		fmt.Fprintf(stderr, "%s: %s: %v\n", *config, rules.CodeParameterValue, err)
		return exitNo
	}
	for _, w := range m.Warnings() {
		fmt.Fprintln(stderr, "warning:", w)
	}
	host := filter.ReadHost(pol.DeviceNames())
	for _, w := range filterWarnings(pol, host) {
		fmt.Fprintln(stderr, "warning:", w)
	}
	if w := lockout(pol, host, file.Settings(), os.Getenv("SSH_CONNECTION")); w != "" {
		fmt.Fprintln(stderr, w)
	}
	nrules := 0
	for _, g := range m.Groups {
		nrules += len(g.Ingress) + len(g.Egress)
	}
	fmt.Fprintf(stdout, "%s: OK: %s, %s, %s, %s, %s\n", *config, plural(len(m.Groups), "group"), plural(nrules, "rule"),
		plural(len(m.Interfaces), "interface")+ports(len(m.Ports)), plural(len(m.PrefixLists), "prefix list"), plural(len(m.Members), "member"))
	return exitOK
}

// ports counts a config's ports for check's summary, and says nothing of a config with
// none (whose summary stays as it was before ports).
func ports(n int) string {
	if n == 0 {
		return ""
	}
	return ", " + plural(n, "port")
}

// filterWarnings says what of pol would filter nothing on this host: no interfaces at all,
// or listed interfaces the host does not have (h, as filter.ReadHost read it).
func filterWarnings(pol *rules.Policy, h filter.Host) []string {
	names := pol.DeviceNames()
	if len(names) == 0 {
		return []string{"no interfaces: this config filters nothing (sgd run refuses it); list this host's interfaces under interfaces:"}
	}
	var missing []string
	for _, n := range names {
		if _, ok := h.Index[n]; !ok {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	what := "interface " + missing[0] + " does not exist"
	if len(missing) > 1 {
		what = "interfaces " + strings.Join(missing, ", ") + " do not exist"
	}
	return []string{what + " on this host: nothing is filtered there (sgd run refuses to start unless daemon.allow_missing_interfaces is true; then it hooks each one when it appears)"}
}

// routeInterface names the interface the kernel sends packets from src to dst through.
// A variable so that the CLI test can put an SSH session on a filtered interface: the
// test's own session address is routed over lo, which is never filtered.
var routeInterface = func(src, dst netip.Addr) (string, error) {
	idx, err := filter.RouteDev(src, dst)
	if err != nil {
		return "", err
	}
	ifi, err := net.InterfaceByIndex(int(idx))
	if err != nil {
		return "", err
	}
	return ifi.Name, nil
}

// lockout returns the lock-out warning for the SSH session sshConnection ($SSH_CONNECTION)
// when pol would drop a new connection like it on the interface it crosses, or "".
func lockout(pol *rules.Policy, h filter.Host, sec settings.Section, sshConnection string) string {
	s, ok := filter.ParseSSHConnection(sshConnection)
	if !ok {
		return ""
	}
	iface, err := routeInterface(s.Server.Addr(), s.Client.Addr())
	if err != nil {
		return ""
	}
	// adopt: sgd run adopts established connections unless told not to (SPEC 4.8).
	return filter.Lockout(pol, h, settings.Resolve(sec, settings.Section{}).ExemptDHCP, s, iface, true)
}
