// Package lab builds and tears down small topologies of Linux network namespaces for
// `sgd demo` and `sgd bench`: namespaces with unique names, veth pairs and bridges,
// documentation addresses, commands and background processes inside a namespace, packet
// captures on an interface inside one (Capture), and one Cleanup that removes all of it.
//
// Everything goes through iproute2 ("ip netns add", "ip -n NS link ...", "ip netns exec
// NS argv...") with argument lists, never a shell. Sockets are opened inside a namespace
// by Do, which moves a locked OS thread into it (see Do); background programs run under
// "ip netns exec", which execs the program in place, so the PID Start returns is the
// program's own.
//
// Names are Prefix-PID-role, so that concurrent labs never collide and Sweep can remove
// the leftovers of a lab whose process died without cleaning up (SIGKILL).
package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Lab is a set of network namespaces and the processes running in them, owned by this
// process. Its methods are safe for concurrent use. Cleanup (idempotent) removes all of
// it; call it on every way out — defer, signal, panic.
type Lab struct {
	prefix string
	pid    int
	dir    string // scratch directory: configs, process logs
	swept  []string

	mu    sync.Mutex
	netns []string // created, in order
	procs []*Proc
	kept  bool
}

// ErrNotRoot is returned by New when the process lacks root: namespaces need CAP_SYS_ADMIN.
var ErrNotRoot = errors.New("lab: network namespaces need root (run as root, or with sudo)")

// New checks that the process is root and that iproute2 is installed, removes the
// leftovers of dead labs with the same prefix (Sweep) and returns an empty lab with a
// fresh scratch directory. prefix should be short, e.g. "sgd-demo".
func New(prefix string) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("lab: the ip command (iproute2) is not installed: %w", err)
	}
	swept, err := Sweep(prefix)
	if err != nil {
		return nil, err
	}
	pid := os.Getpid()
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s-%d-", prefix, pid))
	if err != nil {
		return nil, fmt.Errorf("lab: scratch directory: %w", err)
	}
	return &Lab{prefix: prefix, pid: pid, dir: dir, swept: swept}, nil
}

// Swept lists the leftovers of dead labs New removed.
func (l *Lab) Swept() []string { return l.swept }

// Dir is the lab's scratch directory (removed by Cleanup).
func (l *Lab) Dir() string { return l.dir }

// Name returns the namespace name for a role: Prefix-PID-role.
func (l *Lab) Name(role string) string { return fmt.Sprintf("%s-%d-%s", l.prefix, l.pid, role) }

// Namespaces lists the namespaces the lab created and has not removed, in creation order.
func (l *Lab) Namespaces() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.netns...)
}

// AddNamespace creates the namespace for role, brings its loopback up and returns its name.
func (l *Lab) AddNamespace(ctx context.Context, role string) (string, error) {
	name := l.Name(role)
	l.mu.Lock()
	if l.kept {
		l.mu.Unlock()
		return "", errors.New("lab: already handed over with Keep")
	}
	l.mu.Unlock()
	if _, err := run(ctx, "ip", "netns", "add", name); err != nil {
		return "", err
	}
	l.mu.Lock()
	l.netns = append(l.netns, name)
	l.mu.Unlock()
	if _, err := run(ctx, "ip", "-n", name, "link", "set", "lo", "up"); err != nil {
		return "", err
	}
	return name, nil
}

// Veth creates a veth pair with one end, ifA, in namespace nsA and the other, ifB, in nsB,
// and brings both up. The pair is created inside nsA, so the names never appear in the
// host's namespace and only need to be unique within nsA and nsB.
func (l *Lab) Veth(ctx context.Context, nsA, ifA, nsB, ifB string) error {
	if _, err := run(ctx, "ip", "-n", nsA, "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", nsB); err != nil {
		return err
	}
	if _, err := run(ctx, "ip", "-n", nsA, "link", "set", ifA, "up"); err != nil {
		return err
	}
	_, err := run(ctx, "ip", "-n", nsB, "link", "set", ifB, "up")
	return err
}

// Bridge creates bridge br in namespace ns, enslaves ports (interfaces already in ns) and
// brings everything up.
func (l *Lab) Bridge(ctx context.Context, ns, br string, ports ...string) error {
	if _, err := run(ctx, "ip", "-n", ns, "link", "add", br, "type", "bridge"); err != nil {
		return err
	}
	for _, p := range ports {
		if _, err := run(ctx, "ip", "-n", ns, "link", "set", p, "master", br, "up"); err != nil {
			return err
		}
	}
	_, err := run(ctx, "ip", "-n", ns, "link", "set", br, "up")
	return err
}

// AddAddr assigns p (address and prefix length, like 192.0.2.10/24) to dev in ns. IPv6
// addresses are added with nodad, so they are usable at once instead of after duplicate
// address detection.
func (l *Lab) AddAddr(ctx context.Context, ns, dev string, p netip.Prefix) error {
	args := []string{"ip", "-n", ns, "addr", "add", p.String(), "dev", dev}
	if p.Addr().Is6() {
		args = append(args, "nodad")
	}
	_, err := run(ctx, args...)
	return err
}

// Run executes argv inside namespace ns ("ip netns exec NS argv...") and returns its
// standard output. A failure carries the command and its standard error.
func (l *Lab) Run(ctx context.Context, ns string, argv ...string) (string, error) {
	return run(ctx, append([]string{"ip", "netns", "exec", ns}, argv...)...)
}

// RunInput is Run with stdin fed from input (for iptables-restore).
func (l *Lab) RunInput(ctx context.Context, ns string, input []byte, argv ...string) (string, error) {
	full := append([]string{"ip", "netns", "exec", ns}, argv...)
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.Stdin = bytes.NewReader(input)
	return output(cmd, full)
}

// Host is one end of a topology: a namespace, the interface inside it and its addresses.
type Host struct {
	Role  string
	NS    string // filled in by Pair and Star
	Dev   string // interface name inside NS
	Port  string // Star: the veth end on the bridge (a hypervisor's "vnet0"); Role when empty
	Addrs []netip.Prefix
}

// Pair creates namespaces for a and b joined by one veth pair (a.Dev, b.Dev) and assigns
// their addresses.
func (l *Lab) Pair(ctx context.Context, a, b *Host) error {
	for _, h := range []*Host{a, b} {
		ns, err := l.AddNamespace(ctx, h.Role)
		if err != nil {
			return err
		}
		h.NS = ns
	}
	if err := l.Veth(ctx, a.NS, a.Dev, b.NS, b.Dev); err != nil {
		return err
	}
	return l.addAddrs(ctx, a, b)
}

// Star creates a namespace for the switch role holding a bridge "br0", and a namespace
// for each host joined to the bridge by a veth pair (h.Dev on the host, h.Port — or
// h.Role when Port is empty — on the bridge), then assigns the hosts' addresses.
func (l *Lab) Star(ctx context.Context, switchRole string, hosts ...*Host) error {
	sw, err := l.AddNamespace(ctx, switchRole)
	if err != nil {
		return err
	}
	var ports []string
	for _, h := range hosts {
		ns, err := l.AddNamespace(ctx, h.Role)
		if err != nil {
			return err
		}
		h.NS = ns
		port := h.Port
		if port == "" {
			port = h.Role
		}
		if err := l.Veth(ctx, ns, h.Dev, sw, port); err != nil {
			return err
		}
		ports = append(ports, port)
	}
	if err := l.Bridge(ctx, sw, "br0", ports...); err != nil {
		return err
	}
	return l.addAddrs(ctx, hosts...)
}

func (l *Lab) addAddrs(ctx context.Context, hosts ...*Host) error {
	for _, h := range hosts {
		for _, p := range h.Addrs {
			if err := l.AddAddr(ctx, h.NS, h.Dev, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// Keep hands the lab over to the user: after it, Cleanup removes nothing, and the
// processes keep running after this program exits (their output goes to files in Dir).
// It returns the commands that remove everything by hand.
func (l *Lab) Keep() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.kept = true
	if l.dir != "" {
		// Sweep leaves kept labs alone (their creator exits on purpose).
		_ = os.WriteFile(filepath.Join(l.dir, keptMarker), []byte("kept by the user\n"), 0o600)
	}
	var cmds []string
	var pids []string
	for _, p := range l.procs {
		if !p.exited() {
			pids = append(pids, strconv.Itoa(p.PID()))
		}
	}
	if len(pids) > 0 {
		cmds = append(cmds, "kill "+strings.Join(pids, " ")+"; sleep 1")
	}
	for i := len(l.netns) - 1; i >= 0; i-- {
		cmds = append(cmds, "ip netns del "+l.netns[i])
	}
	cmds = append(cmds, "rm -r "+l.dir)
	return cmds
}

// Cleanup stops every process the lab started (SIGTERM, then SIGKILL after 5 s), kills
// anything else still running in its namespaces, deletes the namespaces (which removes
// their interfaces and netfilter rules) and the scratch directory. It is idempotent and
// safe to call from several goroutines; it does nothing after Keep. Errors are joined;
// Cleanup carries on past them.
func (l *Lab) Cleanup() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kept {
		return nil
	}
	// Stop the processes first (in parallel: each may take its grace period), so that
	// sgd removes its own rules before its namespace goes.
	stopErrs := make([]error, len(l.procs))
	var wg sync.WaitGroup
	for i, p := range l.procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stopErrs[i] = p.Stop(5 * time.Second)
		}()
	}
	wg.Wait()
	l.procs = nil
	errs := stopErrs
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := len(l.netns) - 1; i >= 0; i-- {
		if err := removeNamespace(ctx, l.netns[i]); err != nil {
			errs = append(errs, err)
			continue
		}
		l.netns = l.netns[:i]
	}
	if l.dir != "" {
		if err := os.RemoveAll(l.dir); err != nil {
			errs = append(errs, err)
		} else {
			l.dir = ""
		}
	}
	return errors.Join(errs...)
}

// removeNamespace kills what still runs in ns and deletes it; a namespace that is already
// gone is not an error.
func removeNamespace(ctx context.Context, ns string) error {
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if out, err := run(ctx, "ip", "netns", "pids", ns); err == nil {
		for _, f := range strings.Fields(out) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	_, err := run(ctx, "ip", "netns", "del", ns)
	return err
}

// Sweep removes the namespaces named prefix-PID-* whose PID no longer runs — the leftovers
// of a lab killed before it could clean up — with the processes still running in them.
// Labs handed over with Keep are left alone. It returns the names it removed.
func Sweep(prefix string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := run(ctx, "ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		name := f[0]
		rest, ok := strings.CutPrefix(name, prefix+"-")
		if !ok {
			continue
		}
		pidS, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidS)
		if !ok || err != nil || pid <= 0 || alive(pid) || kept(prefix, pid) {
			continue
		}
		if err := removeNamespace(ctx, name); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, name)
	}
	// Their scratch directories.
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"-*-*"))
	for _, d := range dirs {
		rest := strings.TrimPrefix(filepath.Base(d), prefix+"-")
		pidS, _, _ := strings.Cut(rest, "-")
		if pid, err := strconv.Atoi(pidS); err == nil && pid > 0 && !alive(pid) && !kept(prefix, pid) {
			_ = os.RemoveAll(d)
		}
	}
	return removed, errors.Join(errs...)
}

// keptMarker, in a lab's directory, marks a lab handed over with Keep.
const keptMarker = "KEPT"

func kept(prefix string, pid int) bool {
	m, _ := filepath.Glob(filepath.Join(os.TempDir(), fmt.Sprintf("%s-%d-*", prefix, pid), keptMarker))
	return len(m) > 0
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Exists reports whether a network namespace of that name exists.
func Exists(ns string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", ns))
	return err == nil
}

// run executes argv (no shell) and returns its standard output.
func run(ctx context.Context, argv ...string) (string, error) {
	return output(exec.CommandContext(ctx, argv[0], argv[1:]...), argv)
}

func output(cmd *exec.Cmd, argv []string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		if msg != "" {
			return stdout.String(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, msg)
		}
		return stdout.String(), fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	return stdout.String(), nil
}
