package netns

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// SPEC 4.8, safe to switch on: sgd run refuses a config that filters nothing, filters a
// device that appears after it started, judges without dropping in audit mode, and keeps
// the host's open connections. Each test has its own two namespaces: host (runs sgd,
// 192.0.2.10 on eth0) and client (192.0.2.20 on eth0), one veth pair between them.

// safeConfig lets the client reach tcp/8080 on eth0, nothing else; %s is appended (a
// daemon: section).
const safeConfig = `
security_groups:
  - group_id: sg-safe
    ingress:
      - {ip_protocol: tcp, from_port: 8080, to_port: 8080, cidr_ipv4: 192.0.2.20/32}
interfaces:
  - {name: %s, security_groups: [sg-safe]}
%s`

var (
	safeHost   = netip.MustParseAddr("192.0.2.10")
	safeClient = netip.MustParseAddr("192.0.2.20")
)

// safePair returns new host and client namespaces, linked by eth0 unless unlinked.
func safePair(t *testing.T, linked bool) (h, c string) {
	t.Helper()
	h, c = newNamespace(t, "h"), newNamespace(t, "c")
	if linked {
		linkPair(t, h, c)
	}
	return h, c
}

// linkPair creates the veth pair eth0 (host) — eth0 (client) with their addresses, up.
func linkPair(t *testing.T, h, c string) {
	t.Helper()
	run(t, "ip", "-n", c, "link", "add", hostIf, "type", "veth", "peer", "name", hostIf, "netns", h)
	for _, n := range []struct {
		ns   string
		addr netip.Addr
	}{{h, safeHost}, {c, safeClient}} {
		run(t, "ip", "-n", n.ns, "addr", "add", n.addr.String()+"/24", "dev", hostIf)
		run(t, "ip", "-n", n.ns, "link", "set", hostIf, "up")
	}
	waitLinkUp(t, h, hostIf)
	waitLinkUp(t, c, hostIf)
}

// waitMetrics scrapes until ok holds of a scrape (5 s at most).
func waitMetrics(t *testing.T, d *sgd, what string, ok func(metricSet) bool) metricSet {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m := scrape(t, d)
		if ok(m) {
			return m
		}
		if time.Now().After(deadline) || !d.running() {
			t.Fatalf("after 5s (running %v) the metrics do not show %s", d.running(), what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// echoes sends payload on c and says whether it came back within wait (the nil error).
func echoes(c net.Conn, payload []byte, wait time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write(payload); err != nil {
		return err
	}
	got := make([]byte, len(payload))
	_, err := io.ReadFull(c, got)
	return err
}

// TestStartRefusesWhatFiltersNothing: a config naming a device this host lacks, or none
// at all, is refused at start with exit code 1, the names in the message, and nothing
// installed; a reload to a config naming none is rejected, the running hooks kept.
func TestStartRefusesWhatFiltersNothing(t *testing.T) {
	t.Parallel()
	requireEnv(t)
	h, _ := safePair(t, true)
	for _, tc := range []struct {
		name, config, want string
	}{
		{"typo", fmt.Sprintf(safeConfig, "ens5", ""),
			"interface ens5 does not exist on this host (its devices: eth0), so sgd would not filter it"},
		{"no interfaces", "security_groups:\n  - group_id: sg-safe\n", "the config filters nothing: it lists no interfaces"},
		{"comment only", "# to be written\n", "the config filters nothing: it lists no interfaces"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd, _, _ := sgdCommand(t, h, writeConfig(t, tc.config), nextQueue())
			code, out := sgdExit(t, cmd)
			if code != 1 || !strings.Contains(out, tc.want) || !strings.Contains(out, "rejected; nothing was changed") {
				t.Errorf("sgd run: exit code %d; want 1, %q and that nothing was changed:\n%s", code, tc.want, out)
			}
			if strings.Contains(out, "\tstarted\t") {
				t.Errorf("sgd run logged that it started:\n%s", out)
			}
			assertNoRules(t, h)
		})
	}
	t.Run("reload to none", func(t *testing.T) {
		cfg := writeConfig(t, fmt.Sprintf(safeConfig, hostIf, ""))
		d := startSGD(t, h, cfg, nextQueue())
		replaceFile(t, cfg, "security_groups:\n  - group_id: sg-safe\n")
		waitReloads(t, d, 0, 1)
		d.waitLog("reload rejected", 1)
		if out := d.out.String(); !strings.Contains(out, "the config filters nothing") {
			t.Errorf("the rejected reload's log does not say the config filters nothing:\n%s", out)
		}
		if rs := nsExec(t, h, "iptables", "-t", "mangle", "-S", "SGD-INPUT"); !strings.Contains(rs, "-i eth0 -j NFQUEUE") {
			t.Errorf("after the rejected reload eth0 is no longer queued:\n%s", rs)
		}
	})
}

// TestMissingInterfaceFilteredWhenItAppears: with allow_missing_interfaces sgd starts
// although eth0 does not exist, says so in its log and in sgd_interfaces; once the device
// is created, its packets are judged: the allowed port works, another one with a
// listener times out and is counted as a drop.
func TestMissingInterfaceFilteredWhenItAppears(t *testing.T) {
	t.Parallel()
	requireEnv(t)
	h, c := safePair(t, false)
	d := startSGD(t, h, writeConfig(t, fmt.Sprintf(safeConfig, hostIf, "")), nextQueue(), "--allow-missing-interfaces")
	d.waitLog("configured interfaces do not exist", 1)
	if m := scrape(t, d); m.val("sgd_interfaces", "interface", hostIf, "state", "missing") != 1 {
		t.Fatalf("sgd_interfaces{interface=%q,state=\"missing\"} is not 1 before the device exists", hostIf)
	}

	listenEcho(t, h, ":8080", peerFirst)
	listenEcho(t, h, ":8081", peerFirst)
	linkPair(t, h, c)
	d.waitLog("interface appeared; sgd filters it", 1)
	waitMetrics(t, d, "eth0 present", func(m metricSet) bool {
		return m.val("sgd_interfaces", "interface", hostIf, "state", "present") == 1 &&
			m.val("sgd_interfaces", "state", "missing") == 0
	})
	checkTCP(t, c, netip.AddrPortFrom(safeHost, 8080), works)
	checkTCP(t, c, netip.AddrPortFrom(safeHost, 8081), timeout)
	m := scrape(t, d)
	if v := m.val("sgd_packets_total", "direction", "ingress", "verdict", "drop", "reason", "no_rule"); v < 1 {
		t.Errorf("sgd_packets_total{ingress,drop,no_rule} = %v after a denied SYN on the new device; want ≥ 1", v)
	}
	if v := m.val("sgd_packets_total", "direction", "ingress", "verdict", "accept", "reason", "rule"); v < 1 {
		t.Errorf("sgd_packets_total{ingress,accept,rule} = %v after an allowed connection on the new device; want ≥ 1", v)
	}
	st := run(t, sgdBin, "status", "--socket", d.socket)
	if strings.Contains(st, "MISSING") {
		t.Errorf("sgd status still says an interface is missing:\n%s", st)
	}
}

// TestAuditMode: with --audit a connection the rules deny goes through, and is counted
// as would_drop (never drop), logged as "would drop" and flow-logged as REJECT; sgd
// status says AUDIT on its first line; the hooks fail open.
func TestAuditMode(t *testing.T) {
	t.Parallel()
	requireEnv(t)
	h, c := safePair(t, true)
	flows := filepath.Join(t.TempDir(), "flows.log")
	d := startSGD(t, h, writeConfig(t, fmt.Sprintf(safeConfig, hostIf, "")), nextQueue(), "--audit", "--flow-log", flows)
	d.waitLog("AUDIT MODE", 1)
	if rs := nsExec(t, h, "iptables", "-t", "mangle", "-S", "SGD-INPUT"); !strings.Contains(rs, "--queue-bypass") {
		t.Errorf("audit mode's queue rule fails closed (no --queue-bypass): a stopped sgd would drop:\n%s", rs)
	}
	listenEcho(t, h, ":8081", peerFirst)
	checkTCP(t, c, netip.AddrPortFrom(safeHost, 8081), works)
	checkTCP(t, c, netip.AddrPortFrom(safeHost, 9), refused) // nothing listens: the host's own RST

	m := scrape(t, d)
	if v := m.val("sgd_packets_total", "direction", "ingress", "verdict", "would_drop", "reason", "no_rule"); v < 2 {
		t.Errorf("sgd_packets_total{ingress,would_drop,no_rule} = %v; want ≥ 2 (two denied SYNs at least)", v)
	}
	if v, ok := m.sum("sgd_packets_total", "verdict", "drop"); ok {
		t.Errorf("sgd_packets_total{verdict=\"drop\"} = %v in audit mode; want no such series", v)
	}
	d.waitLog("would drop", 1)
	st := run(t, sgdBin, "status", "--socket", d.socket)
	if first, _, _ := strings.Cut(st, "\n"); !strings.HasPrefix(first, "AUDIT MODE") {
		t.Errorf("sgd status's first line is %q; want it to say AUDIT MODE", first)
	}
	if !strings.Contains(st, "ingress/would_drop/no_rule") {
		t.Errorf("sgd status does not count ingress/would_drop/no_rule:\n%s", st)
	}

	if code := d.stop(); code != 0 {
		t.Fatalf("sgd exit code after SIGTERM = %d; want 0", code)
	}
	assertNoRules(t, h)
	data, err := os.ReadFile(flows)
	if err != nil {
		t.Fatal(err)
	}
	rejected := false
	for _, l := range strings.Split(string(data), "\n") {
		// version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status
		f := strings.Fields(l)
		if len(f) == 14 && f[3] == safeClient.String() && f[6] == "8081" && f[12] == "REJECT" {
			rejected = true
		}
	}
	if !rejected {
		t.Errorf("the flow log has no REJECT record of the client's packets to 8081:\n%s", data)
	}
}

// TestAdoptEstablished: a TCP connection open before sgd starts, under a config that
// does not allow it, survives the start (adopted, and counted in the log and in sgd
// status) while a new one like it times out; with adopt_established: false it is cut.
// sgd, started from an SSH session (SSH_CONNECTION) whose client the config denies,
// warns so on stderr, saying whether the session survives.
func TestAdoptEstablished(t *testing.T) {
	t.Parallel()
	requireEnv(t)
	for _, tc := range []struct {
		name, daemon string
		adopt        bool
		warning      string
	}{
		{"adopted", "", true, "This session is open, so sgd adopts it at start and it stays"},
		{"not adopted", "daemon: {adopt_established: false}\n", false, "adopt_established is off: this session hangs as soon as sgd starts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h, c := safePair(t, true)
			srv := listenEcho(t, h, ":2222", peerFirst)
			dst := netip.AddrPortFrom(safeHost, srv.port())
			conn, _, err := dialFrom(t, c, dst, netip.AddrPort{}, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			roundTrip(t, conn, []byte("before sgd\n"))

			session := fmt.Sprintf("SSH_CONNECTION=%s 50022 %s 22", safeClient, safeHost)
			d := startSGDEnv(t, h, writeConfig(t, fmt.Sprintf(safeConfig, hostIf, tc.daemon)), nextQueue(), []string{session})
			out := d.out.String()
			if !strings.Contains(out, "LOCK-OUT WARNING: you are connected over SSH from 192.0.2.20 to 192.0.2.10:22 on eth0") ||
				!strings.Contains(out, tc.warning) || !strings.Contains(out, "lock-out warning") {
				t.Errorf("sgd's output has no lock-out warning saying %q (and a log line):\n%s", tc.warning, out)
			}
			err = echoes(conn, []byte("after sgd\n"), dialTimeout)
			if tc.adopt {
				if err != nil {
					t.Errorf("the connection open before sgd started: %v; want it to work (adopted)", err)
				}
				if !strings.Contains(out, `"connections": 1`) || !strings.Contains(out, `"by_interface": {"eth0": 1}`) {
					t.Errorf("sgd did not log one adopted connection on eth0:\n%s", out)
				}
				if st := run(t, sgdBin, "status", "--socket", d.socket); !strings.Contains(st, "adopted:  1 established TCP connection (eth0 1) at start") {
					t.Errorf("sgd status does not show the adopted connection:\n%s", st)
				}
				checkTCP(t, c, dst, timeout) // a new one is judged by the rules: denied
			} else {
				if err == nil {
					t.Error("the connection open before sgd started still works with adopt_established: false; want it cut")
				}
				if strings.Contains(out, "adopted the host's established") {
					t.Errorf("sgd adopted connections with adopt_established: false:\n%s", out)
				}
			}
		})
	}
}
