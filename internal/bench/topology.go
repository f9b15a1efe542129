package bench

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/sgd-firewall/sgd/internal/controller"
	"github.com/sgd-firewall/sgd/internal/lab"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// topology is one of the two labs the paths run on: the server and client namespaces, the
// namespace the filter runs in (the server's on the veth pair, the hypervisor's on the
// bridge), sgd's config for it and the receiving servers.
type topology struct {
	server, client *lab.Host
	judge          string                // namespace of the filter: iptables rules, ipsets, sgd
	configs        map[int]sgdConfigFile // sgd's config per number of rules in front
	untracked      map[int]sgdConfigFile // the same, open to 0.0.0.0/0 (sgd-untracked)
	load           *loadServers
}

// config is sgd's config for s.
func (t *topology) config(s session) sgdConfigFile {
	if s.path.kind() == sgdUntracked {
		return t.untracked[s.rules]
	}
	return t.configs[s.rules]
}

// sgdConfigFile is one of sgd's configs in the lab's directory, and the number of rules it
// compiles to (what sgd's "started" line must say).
type sgdConfigFile struct {
	path  string
	rules int
}

// The bridge topology's names: the hypervisor's namespace role and the server's and
// client's ports on its bridge (what a hypervisor would call vnet0, vnet1).
const (
	hvRole     = "hv"
	serverPort = "vserver"
	clientPort = "vclient"
)

// buildDirect joins the server and client namespaces by one veth pair.
func (b *bencher) buildDirect(ctx context.Context) (*topology, error) {
	t := &topology{
		server: &lab.Host{Role: "server", Dev: serverDev, Addrs: []netip.Prefix{netip.PrefixFrom(serverAddr, 24)}},
		client: &lab.Host{Role: "client", Dev: serverDev, Addrs: []netip.Prefix{netip.PrefixFrom(clientAddr, 24)}},
	}
	b.progress("setting up: namespaces %s and %s joined by one veth pair", b.l.Name("server"), b.l.Name("client"))
	if err := b.l.Pair(ctx, t.server, t.client); err != nil {
		return nil, err
	}
	t.judge = t.server.NS
	return t, b.finishTopology(ctx, t, "sgd-bench", false)
}

// buildForwarded puts the server and client namespaces on one bridge in the hypervisor's
// namespace, as two ports (serverPort, clientPort). It needs br_netfilter for the
// filtering paths; it does not load it (that would change the host).
func (b *bencher) buildForwarded(ctx context.Context) (*topology, error) {
	t := &topology{
		server: &lab.Host{Role: "fwd-server", Dev: serverDev, Port: serverPort, Addrs: []netip.Prefix{netip.PrefixFrom(serverAddr, 24)}},
		client: &lab.Host{Role: "fwd-client", Dev: serverDev, Port: clientPort, Addrs: []netip.Prefix{netip.PrefixFrom(clientAddr, 24)}},
	}
	b.progress("setting up: namespaces %s and %s as ports %s and %s of a bridge in %s",
		b.l.Name(t.server.Role), b.l.Name(t.client.Role), serverPort, clientPort, b.l.Name(hvRole))
	if err := b.l.Star(ctx, hvRole, t.server, t.client); err != nil {
		return nil, err
	}
	t.judge = b.l.Name(hvRole)
	if slices.ContainsFunc(b.o.Paths, func(p Path) bool { return p.Forwarded() && p.filters() }) {
		if _, err := os.Stat("/proc/sys/net/bridge"); err != nil {
			return nil, fmt.Errorf("the forwarded paths need br_netfilter, which is not loaded (modprobe br_netfilter): %w", err)
		}
	}
	return t, b.finishTopology(ctx, t, "sgd-bench-fwd", true)
}

// finishTopology tunes the client, writes sgd's configs (name-N.yaml, one per number of
// rules in front) and starts the receiving servers.
func (b *bencher) finishTopology(ctx context.Context, t *topology, name string, forwarded bool) error {
	// The client opens tens of thousands of connections: a wide port range, and reuse of
	// its TIME_WAIT ports (it closes first). Per-namespace settings; the host's stay.
	for _, s := range [][2]string{{"net.ipv4.ip_local_port_range", "1024 65535"}, {"net.ipv4.tcp_tw_reuse", "1"}} {
		if err := lab.Sysctl(t.client.NS, s[0], s[1]); err != nil {
			return err
		}
	}
	t.configs, t.untracked = map[int]sgdConfigFile{}, map[int]sgdConfigFile{}
	for _, n := range b.o.Rules {
		for _, untracked := range []bool{false, true} {
			if untracked && (forwarded || !slices.Contains(b.o.Paths, SGDUntracked)) {
				continue
			}
			file, configs := fmt.Sprintf("%s-%d.yaml", name, n), t.configs
			if untracked {
				file, configs = fmt.Sprintf("%s-untracked-%d.yaml", name, n), t.untracked
			}
			path := filepath.Join(b.l.Dir(), file)
			nrules, err := writeSGDConfig(ctx, path, sgdConfig(forwarded, n, untracked))
			if err != nil {
				return err
			}
			configs[n] = sgdConfigFile{path, nrules}
		}
	}
	load, err := startLoadServers(ctx, b.l, t.server.NS, slices.Contains(b.o.Figures, TCP))
	if err != nil {
		return err
	}
	t.load = load
	return nil
}

// writeSGDConfig writes one of sgd's configs and loads it as `sgd run` will (the
// controller's own read, validation and compile), returning the number of rules it
// compiles to; a config sgd would refuse fails here, before any sgd starts.
func writeSGDConfig(ctx context.Context, path, text string) (int, error) {
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		return 0, err
	}
	st, err := controller.Load(ctx, rules.Env{}, controller.NewFile(path))
	if err != nil {
		return 0, fmt.Errorf("the benchmark's own sgd config %s: %w", filepath.Base(path), err)
	}
	return len(st.Policy.Rules) - 1, nil // Rules[0] is unused
}

// bridgeCalls sets br_netfilter's iptables and ip6tables calls in the hypervisor's
// namespace: on for fwd-kernel, off for fwd-raw (so that the bridge alone is measured);
// sgd turns them on itself for fwd-sgd and puts back what it found.
func (b *bencher) bridgeCalls(on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	for _, key := range []string{"net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"} {
		err := lab.Sysctl(b.t.judge, key, v)
		if err != nil && !(errors.Is(err, fs.ErrNotExist) && !on) { // off: no br_netfilter is off too
			return err
		}
	}
	return nil
}
