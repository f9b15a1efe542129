package netns

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// portConfig protects the interface %s with a group that allows tcp/%d from the lab's
// network.
const portConfig = `
security_groups:
  - group_id: sg-d
    ingress:
      - {ip_protocol: tcp, from_port: %[2]d, to_port: %[2]d, cidr_ipv4: 192.0.2.0/24}
interfaces:
  - {name: %[1]s, security_groups: [sg-d]}
`

// sgdExit runs cmd (an sgd that is expected to exit by itself) and returns its exit
// code and output; it fails the test when it runs for more than 10 s.
func sgdExit(t *testing.T, cmd *exec.Cmd) (int, string) {
	t.Helper()
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
		}
		return cmd.ProcessState.ExitCode(), out.String()
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-done
		t.Fatalf("%s still running after 10s:\n%s", strings.Join(cmd.Args, " "), &out)
		return 0, ""
	}
}

// TestEnslavedInterfaceRefused: a bridge port's IP traffic reaches netfilter as the
// bridge's, so an interface that is a bridge port would be filtered not at all. sgd run
// refuses it (exit 1, as for any config error, naming the bridge to use instead, nothing
// installed), sgd check fails on it, and a reload to it is rejected with the running
// hooks left in force. A bond member likewise, where the kernel builds bonds.
func TestEnslavedInterfaceRefused(t *testing.T) {
	requireEnv(t)
	h := newNamespace(t, "h")
	run(t, "ip", "-n", h, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", h, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
	run(t, "ip", "-n", h, "link", "set", "veth0", "master", "br0")
	for _, dev := range []string{"br0", "veth0", "veth1"} {
		run(t, "ip", "-n", h, "link", "set", dev, "up")
	}
	const want = "interface veth0 is a port of bridge br0: its IP traffic is filtered on br0; name br0 in interfaces"
	port := writeConfig(t, fmt.Sprintf(portConfig, "veth0", 8080))

	t.Run("run", func(t *testing.T) {
		cmd, _, _ := sgdCommand(t, h, port, nextQueue())
		code, out := sgdExit(t, cmd)
		if code != 1 {
			t.Errorf("sgd run naming a bridge port: exit code %d; want 1 (a config error)\n%s", code, out)
		}
		if !strings.Contains(out, want) || !strings.Contains(out, "rejected; nothing was changed") {
			t.Errorf("sgd run's output does not say %q and that nothing was changed:\n%s", want, out)
		}
		assertNoRules(t, h)
	})
	t.Run("check", func(t *testing.T) {
		code, out := sgdExit(t, exec.Command("ip", "netns", "exec", h, sgdBin, "check", "--config", port))
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("sgd check naming a bridge port: exit code %d; want 1 and %q:\n%s", code, want, out)
		}
	})
	t.Run("reload", func(t *testing.T) {
		cfg := writeConfig(t, fmt.Sprintf(portConfig, "br0", 8080))
		d := startSGD(t, h, cfg, nextQueue())
		replaceFile(t, cfg, fmt.Sprintf(portConfig, "veth0", 8080))
		waitReloads(t, d, 0, 1)
		d.waitLog("reload rejected", 1)
		if out := d.out.String(); !strings.Contains(out, want) {
			t.Errorf("the rejected reload's log line does not say %q:\n%s", want, out)
		}
		rs := nsExec(t, h, "iptables", "-t", "mangle", "-S", "SGD-INPUT")
		if !strings.Contains(rs, "-i br0 -j NFQUEUE") || strings.Contains(rs, "veth0") {
			t.Errorf("after the rejected reload SGD-INPUT is\n%s\nwant br0 still queued and no rule for veth0", rs)
		}
	})
	t.Run("bond", func(t *testing.T) {
		if out, err := runErr("ip", "-n", h, "link", "add", "bond0", "type", "bond"); err != nil {
			t.Skipf("this kernel cannot make a bond (%s); the bond message is unit-tested (internal/controller TestEnslaved)", strings.TrimSpace(out))
		}
		run(t, "ip", "-n", h, "link", "add", "eth5", "type", "veth", "peer", "name", "eth6")
		run(t, "ip", "-n", h, "link", "set", "eth5", "master", "bond0")
		cmd, _, _ := sgdCommand(t, h, writeConfig(t, fmt.Sprintf(portConfig, "eth5", 8080)), nextQueue())
		code, out := sgdExit(t, cmd)
		if want := "interface eth5 is a member of bond bond0"; code != 1 || !strings.Contains(out, want) {
			t.Errorf("sgd run naming a bond member: exit code %d; want 1 and %q:\n%s", code, want, out)
		}
		assertNoRules(t, h)
	})
}

// TestConfigSymlinkTargetWatched: the config path is a symlink to a file in another
// directory. Replacing the target (write + rename) and rewriting it in place each reload;
// pointing the link at a new file (atomically, as `ln -sfn` and Kubernetes do) reloads
// it, and from then on the new file is watched and the old one is not.
func TestConfigSymlinkTargetWatched(t *testing.T) {
	requireEnv(t)
	h := newNamespace(t, "h")
	run(t, "ip", "-n", h, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	run(t, "ip", "-n", h, "link", "set", "eth0", "up")
	cfg := func(port int) string { return fmt.Sprintf(portConfig, "eth0", port) }
	oldTarget := filepath.Join(t.TempDir(), "real.yaml")
	newTarget := filepath.Join(t.TempDir(), "next.yaml")
	if err := os.WriteFile(oldTarget, []byte(cfg(8000)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(newTarget, []byte(cfg(9000)), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "sgd.yaml")
	if err := os.Symlink(oldTarget, link); err != nil {
		t.Fatal(err)
	}
	d := startSGD(t, h, link, nextQueue())
	hash := scrape(t, d).label("sgd_config_info", "hash")
	reloaded := func(what string, n float64) {
		t.Helper()
		waitReloads(t, d, n, 0)
		// A fresh scrape for the hash (see TestReloadLoopUnderTraffic).
		now := scrape(t, d).label("sgd_config_info", "hash")
		if now == hash {
			t.Errorf("%s: sgd_config_info hash still %s; want the new file's", what, hash)
		}
		hash = now
	}

	replaceFile(t, oldTarget, cfg(8001))
	reloaded("target replaced by rename", 1)
	if err := os.WriteFile(oldTarget, []byte(cfg(8002)), 0o600); err != nil {
		t.Fatal(err)
	}
	reloaded("target rewritten in place", 2)

	tmp := link + ".tmp"
	if err := os.Symlink(newTarget, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
	reloaded("link pointed at a new target", 3)
	if err := os.WriteFile(newTarget, []byte(cfg(9001)), 0o600); err != nil {
		t.Fatal(err)
	}
	reloaded("new target rewritten in place", 4)

	// The old target is nothing to sgd now: writing it must not reload (4× the debounce).
	if err := os.WriteFile(oldTarget, []byte(cfg(8003)), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	waitReloads(t, d, 4, 0)
	if n := strings.Count(d.out.String(), `"trigger": "file change"`); n != 4 {
		t.Errorf("sgd logged %d reloads on a file change; want 4", n)
	}
}

// TestWatchdogPingsFromLiveReaders runs sgd as systemd would with a watchdog (NOTIFY_SOCKET,
// WATCHDOG_USEC) and checks the real queue reader's heartbeat keeps the pings coming, both
// while it idles in its receive and while it judges a stream of packets; a stopping sgd
// says so. (That a wedged reader stops them is unit-tested: internal/daemon
// TestWatchdogPings.)
func TestWatchdogPingsFromLiveReaders(t *testing.T) {
	requireEnv(t)
	h := newNamespace(t, "h")
	run(t, "ip", "-n", h, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	run(t, "ip", "-n", h, "addr", "add", "192.0.2.10/24", "dev", "eth0")
	run(t, "ip", "-n", h, "link", "set", "eth1", "up")
	run(t, "ip", "-n", h, "link", "set", "eth0", "up")
	// A neighbour that is never asked (a permanent entry) and never answers: the stream
	// below leaves eth0 without ARP failures turning into socket errors.
	run(t, "ip", "-n", h, "neigh", "add", "192.0.2.99", "lladdr", "02:00:00:00:00:99", "dev", "eth0", "nud", "permanent")

	sock := filepath.Join(shortDir(t), "notify")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var states []string
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		buf := make([]byte, 4096)
		for {
			n, err := nc.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			states = append(states, strings.Fields(string(buf[:n]))...)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { nc.Close(); <-readerDone })
	count := func(state string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, s := range states {
			if s == state {
				n++
			}
		}
		return n
	}
	waitCount := func(state string, n int, what string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); count(state) < n; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d %s messages after 5s; want %d", what, count(state), state, n)
			}
		}
	}
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "200000") // a look every 100 ms
	// Every packet through the queue, so that the reader is busy under the stream below.
	d := startSGD(t, h, writeConfig(t, fmt.Sprintf(portConfig, "eth0", 8080)), nextQueue(), "--fast-path=false")
	waitCount("READY=1", 1, "start")

	idle := count("WATCHDOG=1")
	waitCount("WATCHDOG=1", idle+5, "idle reader")

	// A stream out of eth0: every datagram crosses the queue on OUTPUT (the group's default
	// egress lets it out; no fast path).
	var uc *net.UDPConn
	inNS(t, h, func() { uc, err = net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(192, 0, 2, 99), Port: 9}) })
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	judged := func() float64 {
		v, _ := scrape(t, d).sum("sgd_packets_total", "direction", "egress")
		return v
	}
	before, busy := judged(), count("WATCHDOG=1")
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
		_, _ = uc.Write([]byte("watchdog test"))
		time.Sleep(100 * time.Microsecond)
	}
	t.Logf("during the stream: %v packets judged, %d pings", judged()-before, count("WATCHDOG=1")-busy)
	if n := judged() - before; n < 500 {
		t.Errorf("sgd judged %v egress packets during the stream; want ≥ 500 (the reader was not busy)", n)
	}
	if n := count("WATCHDOG=1") - busy; n < 5 {
		t.Errorf("%d watchdog pings during 1.5 s of traffic; want ≥ 5 (a look every 100 ms)", n)
	}
	if code := d.stop(); code != 0 {
		t.Errorf("sgd exit code after SIGTERM = %d; want 0", code)
	}
	waitCount("STOPPING=1", 1, "stop")
	assertNoRules(t, h)
}
