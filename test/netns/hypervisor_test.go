package netns

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Hypervisor mode (SPEC 4.3): one sgd on a host namespace with a bridge judges the
// instances' traffic at their ports, outside the instances. The instances run nothing of
// sgd and have no netfilter rules at all.

// hvConfig is the lab's policy: web serves HTTP to anyone and SSH to sg-mgmt, db serves
// 3306 to sg-web, mgmt is management; web and db have egress: [] (their replies pass
// statefully). AWS judges both ends of a connection between two instances, so web carries
// sg-app, whose egress lets it reach the databases. %s is db's extra port fields, %s the
// ports after mgmt's.
const hvConfig = `
security_groups:
  - group_id: sg-web
    ingress:
      - {ip_protocol: tcp, from_port: 80, to_port: 80, cidr_ipv4: 0.0.0.0/0}
      - {ip_protocol: tcp, from_port: 80, to_port: 80, cidr_ipv6: "::/0"}
      - {ip_protocol: tcp, from_port: 22, to_port: 22, referenced_group_id: sg-mgmt}
    egress: []
  - group_id: sg-app
    egress:
      - {ip_protocol: tcp, from_port: 3306, to_port: 3306, referenced_group_id: sg-db}
  - group_id: sg-db
    ingress:
      - {ip_protocol: tcp, from_port: 3306, to_port: 3306, referenced_group_id: sg-web}
    egress: []
  - group_id: sg-mgmt
ports:
  - {name: vweb, instance_id: i-web, addresses: [192.0.2.10, "2001:db8::10"], security_groups: [sg-web, sg-app]}
  - {name: vdb, addresses: [192.0.2.20, "2001:db8::20"], security_groups: [sg-db]}
%s`

const (
	hvMgmt     = "  - {name: vmgmt, addresses: [192.0.2.30, \"2001:db8::30\"], security_groups: [sg-mgmt]%s}\n"
	hvClientAs = "  - {name: vcli, addresses: [192.0.2.40], security_groups: [sg-mgmt]}\n"
)

// hvLab is the hypervisor lab: namespace hv holds br0 and sgd; web, db, mgmt and client
// each have an eth0 whose peer (vweb, vdb, vmgmt, vcli) is a port of br0. sgd lists every
// port but the client's.
type hvLab struct {
	hv                    string
	web, db, mgmt, client node
}

func newHVLab(t *testing.T) *hvLab {
	t.Helper()
	l := &hvLab{hv: newBridge(t, "hv")}
	for _, n := range []struct {
		dst        *node
		role, last string
	}{{&l.web, "web", "10"}, {&l.db, "db", "20"}, {&l.mgmt, "mgmt", "30"}, {&l.client, "cli", "40"}} {
		*n.dst = plugIn(t, l.hv, "v"+n.role, n.role, n.last)
	}
	for _, n := range []node{l.web, l.db, l.mgmt, l.client} {
		waitLinkUp(t, n.ns, hostIf)
	}
	// As found on a host before sgd: br_netfilter loaded, its iptables calls off.
	sysctl(t, l.hv, "net.bridge.bridge-nf-call-iptables", "0")
	sysctl(t, l.hv, "net.bridge.bridge-nf-call-ip6tables", "0")
	return l
}

// bridgeCalls reads br_netfilter's two switches in ns.
func bridgeCalls(t *testing.T, ns string) string {
	t.Helper()
	var out []string
	for _, k := range []string{"iptables", "ip6tables"} {
		var b []byte
		var err error
		inNS(t, ns, func() { b, err = os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-" + k) })
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, k+"="+strings.TrimSpace(string(b)))
	}
	return strings.Join(out, " ")
}

// acceptCounter is a TCP listener that counts the connections it accepted, by the
// remote address: what the instance itself saw.
type acceptCounter struct {
	mu   sync.Mutex
	from map[netip.Addr]int
}

func listenCount(t *testing.T, ns, addr string) *acceptCounter {
	t.Helper()
	var ln net.Listener
	var err error
	inNS(t, ns, func() { ln, err = net.Listen("tcp", addr) })
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	a := &acceptCounter{from: map[netip.Addr]int{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.mu.Lock()
			a.from[c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()]++
			a.mu.Unlock()
			go func() { // echo, as the other servers do
				defer c.Close()
				buf := make([]byte, 512)
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return a
}

func (a *acceptCounter) count(from netip.Addr) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.from[from]
}

func TestHypervisor(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	l := newHVLab(t)
	ssh := listenCount(t, l.web.ns, ":22")
	listenEcho(t, l.web.ns, ":80", peerFirst)
	listenEcho(t, l.web.ns, ":443", peerFirst)
	listenEcho(t, l.db.ns, ":3306", peerFirst)
	cfg := writeConfig(t, fmt.Sprintf(hvConfig, fmt.Sprintf(hvMgmt, "")))
	d := startSGD(t, l.hv, cfg, nextQueue())
	if got := bridgeCalls(t, l.hv); got != "iptables=1 ip6tables=1" {
		t.Errorf("br_netfilter switches with sgd running: %s; want both 1", got)
	}
	d.waitLog("turned on br_netfilter's iptables calls", 1)

	at := func(n node, port uint16) netip.AddrPort { return netip.AddrPortFrom(n.v4, port) }
	at6 := func(n node, port uint16) netip.AddrPort { return netip.AddrPortFrom(n.v6, port) }
	checkTCP(t, l.client.ns, at(l.web, 80), works)   // from anywhere, through a port sgd does not list
	checkTCP(t, l.client.ns, at(l.web, 22), timeout) // SSH only from sg-mgmt
	checkTCP(t, l.mgmt.ns, at(l.web, 22), works)     // mgmt is sg-mgmt by its port: no members:
	checkTCP(t, l.web.ns, at(l.db, 3306), works)     // web's egress (sg-app), db's ingress
	checkTCP(t, l.db.ns, at(l.web, 443), timeout)    // db's egress: []
	checkTCP(t, l.mgmt.ns, at(l.db, 3306), timeout)  // mgmt is not sg-web
	// IPv6 between ports and from the client, neighbour discovery included (the caches
	// start empty: nothing has spoken IPv6 yet).
	checkTCP(t, l.client.ns, at6(l.web, 80), works)
	checkTCP(t, l.web.ns, at6(l.db, 3306), works)
	checkTCP(t, l.db.ns, at6(l.web, 80), timeout)
	if n := ssh.count(l.client.v4); n != 0 {
		t.Errorf("web accepted %d SSH connections from the client; want 0 (the instance never sees a denied packet)", n)
	}
	if n := ssh.count(l.mgmt.v4); n != 1 {
		t.Errorf("web accepted %d SSH connections from mgmt; want 1", n)
	}

	// Root inside the instance changes nothing: web has no rules of sgd's, and flushing
	// every table there leaves the client's SSH blocked.
	if rs := ruleset(t, l.web.ns); strings.Contains(strings.ToUpper(rs), "SGD") || strings.Contains(rs, "NFQUEUE") {
		t.Errorf("rules of sgd's inside the instance:\n%s", rs)
	}
	for _, cmd := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"filter", "nat", "mangle", "raw"} {
			nsExec(t, l.web.ns, cmd, "-t", table, "-F")
		}
	}
	checkTCP(t, l.client.ns, at(l.web, 22), timeout)
	if n := ssh.count(l.client.v4); n != 0 {
		t.Errorf("after flushing the instance's tables, web accepted %d SSH connections from the client; want 0", n)
	}

	// Source/dest check: db sending from mgmt's address is dropped as spoofed, before any
	// rule (SSH from sg-mgmt would allow that source).
	base := scrape(t, d).val("sgd_packets_total", "direction", "egress", "verdict", "drop", "reason", "spoofed")
	run(t, "ip", "-n", l.db.ns, "addr", "add", l.mgmt.v4.String()+"/32", "dev", hostIf)
	c, took, err := dialFrom(t, l.db.ns, at(l.web, 22), netip.AddrPortFrom(l.mgmt.v4, 0), dialTimeout)
	checkDial(t, l.db.ns, at(l.web, 22), c, took, err, timeout)
	if got := scrape(t, d).val("sgd_packets_total", "direction", "egress", "verdict", "drop", "reason", "spoofed"); got <= base {
		t.Errorf(`sgd_packets_total{direction="egress",verdict="drop",reason="spoofed"} = %v; want above %v`, got, base)
	}
	if n := ssh.count(l.mgmt.v4); n != 1 {
		t.Errorf("web accepted %d SSH connections from mgmt's address; want still 1 (db's spoofed ones never reached it)", n)
	}

	// mgmt sending from an address of its own choosing reaches web:80 only once its
	// source/dest check is off (an instance that routes or translates): then the rules
	// alone decide. db's spoofing, with the check off too, meets db's egress: [].
	const other = "192.0.2.99"
	run(t, "ip", "-n", l.mgmt.ns, "addr", "add", other+"/32", "dev", hostIf)
	web80, src := at(l.web, 80), netip.AddrPortFrom(netip.MustParseAddr(other), 0)
	c, took, err = dialFrom(t, l.mgmt.ns, web80, src, dialTimeout)
	checkDial(t, l.mgmt.ns, web80, c, took, err, timeout)
	replaceFile(t, cfg, fmt.Sprintf(hvConfig, fmt.Sprintf(hvMgmt, ", source_dest_check: false")))
	waitReloads(t, d, 1, 0)
	c, took, err = dialFrom(t, l.mgmt.ns, web80, src, dialTimeout)
	checkDial(t, l.mgmt.ns, web80, c, took, err, works)

	// Reload: mgmt's port goes, the client's comes as sg-mgmt. Their hooks follow, and so
	// does membership: the client may now SSH to web, mgmt (unlisted) may not.
	replaceFile(t, cfg, fmt.Sprintf(hvConfig, hvClientAs))
	waitReloads(t, d, 2, 0)
	fw := nsExec(t, l.hv, "iptables", "-t", "mangle", "-S", "SGD-FORWARD")
	if !strings.Contains(fw, "--physdev-in vcli ") || strings.Contains(fw, "vmgmt") {
		t.Errorf("SGD-FORWARD after the reload:\n%s\nwant vcli hooked and vmgmt gone", fw)
	}
	checkTCP(t, l.client.ns, at(l.web, 22), works)
	checkTCP(t, l.mgmt.ns, at(l.web, 22), timeout)
	checkTCP(t, l.client.ns, at(l.web, 80), works)

	// A clean stop removes every rule (the cleanup checks) and puts the switches back.
	if code := d.stop(); code != 0 {
		t.Fatalf("sgd exit code %d after SIGTERM; want 0", code)
	}
	assertNoRules(t, l.hv)
	if got := bridgeCalls(t, l.hv); got != "iptables=0 ip6tables=0" {
		t.Errorf("br_netfilter switches after a clean stop: %s; want both 0, as found", got)
	}
}

// hvTrackConfig: web answers UDP 5353 from anyone (statefully: egress: []); db may send
// nothing, and its source/dest check is off, so that the tracking alone answers for a
// datagram db forges with web's address.
const hvTrackConfig = `
security_groups:
  - group_id: sg-web
    ingress:
      - {ip_protocol: udp, from_port: 5353, to_port: 5353, cidr_ipv4: 0.0.0.0/0}
    egress: []
  - group_id: sg-db
    egress: []
ports:
  - {name: vweb, addresses: [192.0.2.10], security_groups: [sg-web]}
  - {name: vdb, addresses: [192.0.2.20], security_groups: [sg-db], source_dest_check: false}
`

// A flow tracked at one port does not admit the same tuple through another port (SPEC
// 4.2): web's reply to the client passes as web's tracked flow; the same datagram sent
// through db's port is judged there, by db's rules, and dropped.
func TestHypervisorTrackingPerPort(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	l := newHVLab(t)
	d := startSGD(t, l.hv, writeConfig(t, hvTrackConfig), nextQueue())
	web := listenUDP(t, l.web.ns, "udp4", ":5353", nil)
	client := listenUDP(t, l.client.ns, "udp4", ":6000", nil)
	clientAt := netip.AddrPortFrom(l.client.v4, 6000)
	client.send(t, netip.AddrPortFrom(l.web.v4, 5353), "ask")
	if !web.wait("ask", 2*time.Second) {
		t.Fatal("web did not receive the client's datagram to udp/5353")
	}
	web.send(t, clientAt, "answer") // web's egress: [], so only its tracked flow lets this out
	if !client.wait("answer", 2*time.Second) {
		t.Fatal("the client did not receive web's reply (a tracked flow at web's port)")
	}
	base := scrape(t, d).val("sgd_packets_total", "direction", "egress", "verdict", "drop", "reason", "no_rule")
	transparent := func(fd int) error { return unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_TRANSPARENT, 1) }
	sendUDP(t, l.db.ns, netip.AddrPortFrom(l.web.v4, 5353), clientAt, "forged", transparent)
	if client.wait("forged", time.Second) {
		t.Error("the client received db's datagram with web's tuple: a flow tracked at web's port admitted it at db's")
	}
	if got := scrape(t, d).val("sgd_packets_total", "direction", "egress", "verdict", "drop", "reason", "no_rule"); got <= base {
		t.Errorf(`sgd_packets_total{direction="egress",verdict="drop",reason="no_rule"} = %v; want above %v (judged by db's egress: [])`, got, base)
	}
	web.send(t, clientAt, "answer 2")
	if !client.wait("answer 2", 2*time.Second) {
		t.Error("web's flow stopped working")
	}
}
