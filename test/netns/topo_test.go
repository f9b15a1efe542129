package netns

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// nsPrefix starts the name of every namespace this suite creates; the pid after it lets a
// later run recognise (and remove) the leftovers of a run that died.
const nsPrefix = "sgdt"

var (
	sgdBin   string // the sgd binary TestMain built; "" when the environment cannot run the suite
	buildErr error  // why building sgd failed
	skipWhy  string // why the environment cannot run the suite
	nsSeq    atomic.Int32
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	skipWhy = environmentProblem()
	if skipWhy == "" {
		sweepStale()
		dir, err := os.MkdirTemp("", "sgd-e2e-bin-")
		if err != nil {
			buildErr = err
		} else {
			defer os.RemoveAll(dir)
			sgdBin, buildErr = buildSGD(dir)
		}
	}
	code := m.Run()
	if skipWhy == "" {
		// Belt and braces: every test deletes its namespaces in t.Cleanup already.
		removeNamespaces(func(pid int) bool { return pid == os.Getpid() })
	}
	return code
}

// environmentProblem says why the suite cannot run here ("" when it can).
func environmentProblem() string {
	if os.Geteuid() != 0 {
		return "netns end-to-end tests need root (network namespaces, iptables, NFQUEUE); run as root"
	}
	for _, tool := range []string{"ip", "iptables", "ip6tables", "iptables-save", "ip6tables-save"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("netns end-to-end tests need %q in PATH (iproute2, iptables)", tool)
		}
	}
	if _, err := os.Stat("/proc/thread-self/ns/net"); err != nil {
		return "netns end-to-end tests need /proc/thread-self/ns/net: " + err.Error()
	}
	return ""
}

// buildSGD builds ./cmd/sgd of this module into dir, once for the whole suite.
func buildSGD(dir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(dir, "sgd")
	cmd := exec.Command(goBin, "build", "-o", out, "./cmd/sgd")
	cmd.Dir = filepath.Join("..", "..")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/sgd: %v\n%s", err, b)
	}
	return out, nil
}

// requireEnv skips the test when the machine cannot run the suite and fails it when sgd
// did not build.
func requireEnv(t *testing.T) {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
	if testing.Short() {
		t.Skip("netns end-to-end tests take seconds; skipped in -short mode")
	}
	if buildErr != nil {
		t.Fatalf("cannot build sgd: %v", buildErr)
	}
}

// sweepStale deletes the namespaces of earlier runs of this suite whose process is gone
// (a run killed by -timeout runs no cleanup), stopping the sgd daemons they left running.
func sweepStale() {
	removeNamespaces(func(pid int) bool {
		_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
		return pid != os.Getpid() && os.IsNotExist(err)
	})
}

// removeNamespaces deletes every namespace named nsPrefix+PID-… for which match(PID) holds,
// after killing the sgd processes (only those: identified by their executable's name)
// still running in it.
func removeNamespaces(match func(pid int) bool) {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		digits, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(digits)
		if !ok || err != nil || !match(pid) {
			continue
		}
		out, _ := exec.Command("ip", "netns", "pids", e.Name()).Output()
		for _, f := range strings.Fields(string(out)) {
			p, err := strconv.Atoi(f)
			if err != nil {
				continue
			}
			if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p)); err == nil && filepath.Base(exe) == "sgd" {
				_ = unix.Kill(p, unix.SIGKILL)
			}
		}
		_ = exec.Command("ip", "netns", "del", e.Name()).Run()
	}
}

// run executes a command (an argument list, never a shell) and returns its combined
// output; it fails the test when the command fails.
func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := runErr(args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var b bytes.Buffer
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return b.String(), err
}

// nsExec runs a command inside namespace ns.
func nsExec(t testing.TB, ns string, args ...string) string {
	t.Helper()
	return run(t, append([]string{"ip", "netns", "exec", ns}, args...)...)
}

// newNamespace creates a namespace named nsPrefix+pid-seq+role with loopback up; t.Cleanup
// deletes it (also when the test fails or panics).
func newNamespace(t *testing.T, role string) string {
	t.Helper()
	name := fmt.Sprintf("%s%d-%d%s", nsPrefix, os.Getpid(), nsSeq.Add(1), role)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := runErr("ip", "netns", "del", name); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// node is one namespace on the bridge, with its eth0 addresses.
type node struct {
	ns     string
	v4, v6 netip.Addr
}

// topology is the lab: namespaces host (protected, runs sgd), client, stranger and member,
// each with an eth0 that is one end of a veth pair whose other end is a port of br0 in the
// bridge namespace.
type topology struct {
	bridge                         string
	host, client, stranger, member node
}

const hostIf = "eth0" // the protected interface's name inside host

// newTopology builds the lab, waits until every link is up and checks that TCP works
// host←client over both families before any sgd runs (then flushes the neighbour caches,
// so that the tests also prove ARP and NDP work while sgd filters).
func newTopology(t *testing.T) *topology {
	t.Helper()
	tp := &topology{bridge: newBridge(t, "br")}
	for _, n := range []struct {
		dst  *node
		role string
		last string
	}{{&tp.host, "h", "10"}, {&tp.client, "c", "20"}, {&tp.stranger, "s", "30"}, {&tp.member, "m", "40"}} {
		*n.dst = plugIn(t, tp.bridge, "p-"+n.role, n.role, n.last)
	}
	for _, n := range tp.nodes() {
		waitLinkUp(t, n.ns, hostIf)
	}
	for _, a := range []netip.Addr{tp.host.v4, tp.host.v6} {
		ln := listenEcho(t, tp.host.ns, ":0", peerFirst)
		port := ln.port()
		conn, _, err := dialFrom(t, tp.client.ns, netip.AddrPortFrom(a, port), netip.AddrPort{}, 5*time.Second)
		if err != nil {
			t.Fatalf("topology check (no sgd running): dial %v from client: %v", netip.AddrPortFrom(a, port), err)
		}
		roundTrip(t, conn, []byte("topology check\n"))
		conn.Close()
		ln.Close()
	}
	for _, n := range tp.nodes() {
		run(t, "ip", "-n", n.ns, "neigh", "flush", "all")
	}
	return tp
}

// newBridge creates a namespace (named for role) holding bridge br0, up, with STP,
// forwarding delay and multicast snooping off.
func newBridge(t *testing.T, role string) string {
	t.Helper()
	ns := newNamespace(t, role)
	run(t, "ip", "-n", ns, "link", "add", "br0", "type", "bridge",
		"stp_state", "0", "forward_delay", "0", "mcast_snooping", "0")
	run(t, "ip", "-n", ns, "link", "set", "br0", "up")
	return ns
}

// plugIn creates a namespace (named for role) whose eth0 is one end of a veth pair, the
// other end port in bridge's br0, with addresses 192.0.2.LAST/24 and 2001:db8::LAST/64.
func plugIn(t *testing.T, bridge, port, role, last string) node {
	t.Helper()
	ns := newNamespace(t, role)
	n := node{ns: ns, v4: netip.MustParseAddr("192.0.2." + last), v6: netip.MustParseAddr("2001:db8::" + last)}
	run(t, "ip", "-n", bridge, "link", "add", port, "type", "veth", "peer", "name", hostIf, "netns", ns)
	run(t, "ip", "-n", bridge, "link", "set", port, "master", "br0", "up")
	run(t, "ip", "-n", ns, "addr", "add", n.v4.String()+"/24", "dev", hostIf)
	run(t, "ip", "-n", ns, "addr", "add", n.v6.String()+"/64", "dev", hostIf, "nodad")
	run(t, "ip", "-n", ns, "link", "set", hostIf, "up")
	return n
}

func (tp *topology) nodes() []node { return []node{tp.host, tp.client, tp.stranger, tp.member} }

// waitLinkUp waits until the interface reports LOWER_UP (both veth ends up).
func waitLinkUp(t *testing.T, ns, ifname string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out := run(t, "ip", "-n", ns, "link", "show", "dev", ifname)
		if strings.Contains(out, "LOWER_UP") && strings.Contains(out, "state UP") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s in %s is not up after 5s:\n%s", ifname, ns, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// inNS runs f on an OS thread switched into network namespace ns, so that the sockets f
// creates live there (a socket keeps its namespace for life, whichever thread uses it
// later). The thread is switched back before it is released; if that fails, the thread
// stays locked and dies with this goroutine rather than serve others in the wrong namespace.
func inNS(t testing.TB, ns string, f func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("open own network namespace: %v", err)
	}
	target, err := unix.Open(filepath.Join("/run/netns", ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(orig)
		runtime.UnlockOSThread()
		t.Fatalf("open namespace %s: %v", ns, err)
	}
	defer func() {
		unix.Close(target)
		err := unix.Setns(orig, unix.CLONE_NEWNET)
		unix.Close(orig)
		if err != nil {
			t.Fatalf("setns back from %s: %v (thread left locked)", ns, err)
		}
		runtime.UnlockOSThread()
	}()
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		t.Fatalf("setns %s: %v", ns, err)
	}
	f()
}
