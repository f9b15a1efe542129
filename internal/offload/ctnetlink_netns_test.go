//go:build linux

package offload

import (
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sgd-firewall/sgd/internal/ipproto"
	"github.com/sgd-firewall/sgd/internal/lab"
)

var updateSeeds = flag.Bool("update-seeds", false, "TestNetnsParseConn: rewrite testdata/fuzz/FuzzParseConn from the messages it captured")

// captured is one ctnetlink message the kernel sent, as it sent it.
type captured struct {
	how string // "dump" or "event"
	b   []byte
}

// rawSocket opens a NETLINK_NETFILTER socket of the calling thread's namespace with
// nothing but system calls between the kernel and the test (the capture must not go
// through the code it checks), joined to groups and with a receive timeout of wait.
func rawSocket(wait time.Duration, groups ...int) (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return -1, err
	}
	tv := unix.NsecToTimeval(wait.Nanoseconds())
	err = unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	if err == nil {
		err = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	}
	if err == nil {
		err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	}
	for _, g := range groups {
		if err == nil {
			err = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, g)
		}
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// receive reads fd's datagrams until the receive timeout passes with nothing (or, when
// dump, until NLMSG_DONE), splitting them with the standard library's parser.
func receive(fd int, how string, dump bool) ([]captured, error) {
	var out []captured
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EAGAIN || err == unix.EINTR {
			if dump {
				return out, fmt.Errorf("dump: no NLMSG_DONE")
			}
			return out, nil
		}
		if err != nil {
			return out, err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return out, err
		}
		for _, m := range msgs {
			if m.Header.Type == unix.NLMSG_DONE && dump {
				return out, nil
			}
			if m.Header.Type == unix.NLMSG_ERROR {
				return out, fmt.Errorf("netlink error %d", int32(binary.NativeEndian.Uint32(m.Data)))
			}
			b := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(m.Data))
			binary.NativeEndian.PutUint32(b[0:], m.Header.Len)
			binary.NativeEndian.PutUint16(b[4:], m.Header.Type)
			binary.NativeEndian.PutUint16(b[6:], m.Header.Flags)
			binary.NativeEndian.PutUint32(b[8:], m.Header.Seq)
			binary.NativeEndian.PutUint32(b[12:], m.Header.Pid)
			out = append(out, captured{how, append(b, m.Data...)})
		}
	}
}

// dumpRaw dumps the whole conntrack table of the calling thread's namespace, both
// families, no filter.
func dumpRaw() ([]captured, error) {
	fd, err := rawSocket(2 * time.Second)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	req := make([]byte, unix.NLMSG_HDRLEN+nfgenLen)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.NFNL_SUBSYS_CTNETLINK<<8|msgCTGet)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:], 1) // seq
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, err
	}
	return receive(fd, "dump", true)
}

// TestNetnsParseConn captures the kernel's own ctnetlink messages (dump entries and
// new, update and destroy events) of real loopback traffic in a namespace: TCP, UDP and
// ICMP echo over IPv4 and IPv6, with and without accounting, with and without labels and
// sgd's mark. parseConn must read every one as ti-mo/conntrack's decoder (through
// connFrom, what sgd used before) does, and what it reads must be what the traffic was.
// With -update-seeds it writes one message of each kind to FuzzParseConn's seeds (the
// corpus TestParseConnSeeds and the benchmarks read).
func TestNetnsParseConn(t *testing.T) {
	t.Parallel()
	ns := newNS(t, "parse")
	ctx := context.Background()
	// Conntrack hooks for both families, room for labels; sgd's label bits and mark on
	// TCP and ICMP echo (label 5 for IPv4, 100 for IPv6: both words of the bitmap), none
	// on UDP.
	for _, argv := range [][]string{
		{"iptables", "-A", "INPUT", "-m", "connlabel", "--label", "1"},
		{"ip6tables", "-A", "INPUT", "-m", "connlabel", "--label", "1"},
		{"iptables", "-t", "mangle", "-A", "OUTPUT", "-p", "tcp", "-m", "connlabel", "--set", "--label", "5"},
		{"iptables", "-t", "mangle", "-A", "OUTPUT", "-p", "icmp", "-m", "connlabel", "--set", "--label", "5"},
		{"iptables", "-t", "mangle", "-A", "OUTPUT", "!", "-p", "udp", "-j", "CONNMARK", "--set-xmark", "0x800000/0x800000"},
		{"ip6tables", "-t", "mangle", "-A", "OUTPUT", "-p", "tcp", "-m", "connlabel", "--set", "--label", "100"},
		{"ip6tables", "-t", "mangle", "-A", "OUTPUT", "-p", "ipv6-icmp", "-m", "connlabel", "--set", "--label", "100"},
		{"ip6tables", "-t", "mangle", "-A", "OUTPUT", "!", "-p", "udp", "-j", "CONNMARK", "--set-xmark", "0x800000/0x800000"},
	} {
		if err := nsRun(t, ns, argv...); err != nil {
			t.Fatalf("%v: %v", argv, err)
		}
	}
	for k, v := range map[string]string{"net.netfilter.nf_conntrack_events": "1", "net.netfilter.nf_conntrack_acct": "0"} {
		if err := lab.Sysctl(ns, k, v); err != nil {
			t.Fatal(err)
		}
	}

	// Events, from before the first packet to after the flush.
	var evfd int
	in(t, ns, func() (err error) { evfd, err = rawSocket(300*time.Millisecond, 1, 2, 3); return err }) // NFNLGRP_CONNTRACK_NEW, _UPDATE, _DESTROY
	var (
		events []captured
		evErr  error
		evDone = make(chan struct{})
		quit   = make(chan struct{})
		mu     sync.Mutex
	)
	go func() {
		defer close(evDone)
		for {
			got, err := receive(evfd, "event", false)
			mu.Lock()
			events = append(events, got...)
			mu.Unlock()
			select {
			case <-quit:
				evErr = err
				return
			default:
			}
			if err != nil {
				evErr = err
				return
			}
		}
	}()
	defer unix.Close(evfd)

	// Traffic: UDP over IPv4 and a TCP connection while accounting is off, the rest with
	// it on.
	udp := func(network, addr string) (client, server uint16) {
		srv, err := lab.ListenPacket(ns, network, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		c, err := lab.DialContext(ctx, ns, network, srv.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 1500)
		if _, err := c.Write(make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
		_ = srv.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, from, err := srv.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := srv.WriteTo(make([]byte, 50), from); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}
		return uint16(c.LocalAddr().(*net.UDPAddr).Port), uint16(srv.LocalAddr().(*net.UDPAddr).Port)
	}
	// tcp connects, sends out bytes and reads back bytes back; the connection stays open
	// unless closed, then both ends close.
	var open []io.Closer
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	tcp := func(network, addr string, out, back int, closed bool) (client, server uint16) {
		ln, err := lab.Listen(ns, network, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		c, err := lab.DialContext(ctx, ns, network, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(make([]byte, out)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(s, make([]byte, out)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write(make([]byte, back)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, back)); err != nil {
			t.Fatal(err)
		}
		client, server = uint16(c.LocalAddr().(*net.TCPAddr).Port), uint16(ln.Addr().(*net.TCPAddr).Port)
		if closed {
			c.Close()
			s.Close()
		} else {
			open = append(open, c, s)
		}
		return client, server
	}
	udp4, _ := udp("udp4", "127.0.0.1:0")
	tcp4Short, _ := tcp("tcp4", "127.0.0.1:0", 10, 10, true)
	if err := lab.Sysctl(ns, "net.netfilter.nf_conntrack_acct", "1"); err != nil {
		t.Fatal(err)
	}
	tcp4, tcp4Server := tcp("tcp4", "127.0.0.1:0", 3000, 1000, false)
	tcp6, _ := tcp("tcp6", "[::1]:0", 2000, 500, false)
	udp6, _ := udp("udp6", "[::1]:0")
	for _, argv := range [][]string{{"ping", "-c", "2", "-i", "0.2", "-W", "1", "127.0.0.1"}, {"ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", "::1"}} {
		if err := nsRun(t, ns, argv...); err != nil {
			t.Fatalf("%v: %v", argv, err)
		}
	}

	var dump []captured
	in(t, ns, func() (err error) { dump, err = dumpRaw(); return err })
	if err := nsRun(t, ns, "conntrack", "-F"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the destroy events' way
	close(quit)
	<-evDone
	if evErr != nil {
		t.Fatalf("events: %v", evErr)
	}
	mu.Lock()
	all := append(dump, events...)
	mu.Unlock()

	// Every message reads as the oracle reads it.
	type key struct {
		how   string
		typ   uint8
		proto uint8
		src   uint16 // the client's port (echo id for ICMP)
	}
	got := map[key]Conn{}
	seeds := map[string][]byte{}
	for _, m := range all {
		var c Conn
		typ, ok := parseConn(m.b, &c)
		want, wantTyp, wantOK := tiMo(m.b)
		if ok != wantOK || typ != wantTyp || c != want {
			t.Errorf("parseConn(%s % x) = %d, %+v, %v; ti-mo reads %d, %+v, %v", m.how, m.b, typ, c, ok, wantTyp, want, wantOK)
		}
		if !ok {
			t.Errorf("parseConn(%s % x) = false; want every message the kernel sent read", m.how, m.b)
			continue
		}
		got[key{m.how, typ, c.Proto, c.SrcPort}] = c
		seeds[seedName(m.how, typ, m.b, c)] = m.b
	}
	t.Logf("%d dump entries, %d events, %d kinds", len(dump), len(events), len(seeds))

	// And they are what the traffic was.
	v4, v6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	sgds := Mark
	for _, tc := range []struct {
		name       string
		k          key
		src        netip.Addr
		dstPort    uint16
		label      uint16 // 0: none
		mark       uint32
		out, back  uint64 // payload bytes each way: the counters at least; 0: accounting off
		tcpState   uint8
		wantReplid bool
	}{
		{"udp4 without accounting", key{"dump", msgCTNew, ipproto.UDP, udp4}, v4, 0, 0, 0, 0, 0, 0, true},
		{"tcp4 closed without accounting", key{"dump", msgCTNew, ipproto.TCP, tcp4Short}, v4, 0, 5, sgds, 0, 0, 7 /* TIME_WAIT */, true},
		{"tcp4 established", key{"dump", msgCTNew, ipproto.TCP, tcp4}, v4, tcp4Server, 5, sgds, 3000, 1000, 3 /* ESTABLISHED */, true},
		{"tcp6 established", key{"dump", msgCTNew, ipproto.TCP, tcp6}, v6, 0, 100, sgds, 2000, 500, 3, true},
		{"udp6", key{"dump", msgCTNew, ipproto.UDP, udp6}, v6, 0, 0, 0, 100, 50, 0, true},
		{"tcp4 destroyed", key{"event", msgCTDelete, ipproto.TCP, tcp4}, v4, tcp4Server, 0, sgds, 3000, 1000, 3, true},
		{"udp6 destroyed", key{"event", msgCTDelete, ipproto.UDP, udp6}, v6, 0, 0, 0, 100, 50, 0, true},
	} {
		c, ok := got[tc.k]
		if !ok {
			t.Errorf("%s: no %s message of type %d for proto %d port %d", tc.name, tc.k.how, tc.k.typ, tc.k.proto, tc.k.src)
			continue
		}
		var wantLabels Labels
		if tc.label != 0 {
			wantLabels = wantLabels.With(tc.label)
		}
		if tc.k.how == "event" {
			wantLabels = Labels{} // destroy events carry no labels
		}
		counted := c.OrigBytes >= tc.out && c.ReplyBytes >= tc.back && (tc.out == 0) == (c.OrigPackets == 0 && c.ReplyPackets == 0)
		if c.Src != tc.src || (tc.dstPort != 0 && c.DstPort != tc.dstPort) || c.Labels != wantLabels || c.Mark != tc.mark || !counted ||
			c.TCPState != tc.tcpState || c.Replied != tc.wantReplid || c.ID == 0 || (tc.k.how == "dump" && c.Timeout == 0) {
			t.Errorf("%s: %+v; want source %v, destination port %d, labels %v, mark %#x, at least %d and %d bytes counted, TCP state %d, replied", tc.name, c, tc.src, tc.dstPort, wantLabels, tc.mark, tc.out, tc.back, tc.tcpState)
		}
	}
	echoes := 0
	for k, c := range got {
		if ipproto.IsICMP(k.proto) && k.how == "dump" {
			echoes++
			if c.SrcPort != c.DstPort || !c.Labels.Any() || c.Mark != Mark || c.OrigPackets < 2 || !c.Replied {
				t.Errorf("echo entry %+v: want the echo id as both ports, a label, the mark, 2 requests counted, replied", c)
			}
		}
	}
	if echoes != 2 {
		t.Errorf("%d echo entries in the dump; want 2 (ping and ping -6)", echoes)
	}

	if *updateSeeds {
		if err := os.MkdirAll(seedDir, 0o755); err != nil {
			t.Fatal(err)
		}
		names := make([]string, 0, len(seeds))
		for n := range seeds {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(seedDir, n), []byte(seedFile(seeds[n])), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("wrote %d seeds to %s: %s", len(names), seedDir, strings.Join(names, " "))
	}
}

// seedName names a captured message by its kind: how it came, its type, protocol and
// family, and whether it carries counters, labels, sgd's mark.
func seedName(how string, typ uint8, b []byte, c Conn) string {
	kind := map[uint8]string{msgCTNew: "new", msgCTDelete: "destroy"}[typ]
	if how == "dump" {
		kind = "dump"
	} else if typ == msgCTNew && binary.NativeEndian.Uint16(b[6:])&(unix.NLM_F_CREATE|unix.NLM_F_EXCL) == 0 {
		kind = "update"
	}
	var name bytes.Buffer
	fmt.Fprintf(&name, "%s-%s", kind, map[uint8]string{ipproto.TCP: "tcp", ipproto.UDP: "udp", ipproto.ICMP: "icmp", ipproto.ICMPv6: "icmp"}[c.Proto])
	if c.Src.Is4() {
		name.WriteString("4")
	} else {
		name.WriteString("6")
	}
	if c.OrigPackets != 0 {
		name.WriteString("-acct")
	}
	if c.Labels.Any() {
		name.WriteString("-labels")
	}
	if c.Mark&Mark != 0 {
		name.WriteString("-mark")
	}
	if c.TCPState != 0 {
		fmt.Fprintf(&name, "-state%d", c.TCPState)
	}
	return name.String()
}
