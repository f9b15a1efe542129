package filter

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
)

// noSSH lets nothing in: an open SSH session passes only if it was adopted.
const noSSH = `
security_groups:
  - group_id: sg-none
    egress: []
interfaces:
  - {name: eth0, security_groups: [sg-none]}
`

func TestAdoptKeepsOpenConnections(t *testing.T) {
	e, w, _ := newTestEngine(t, noSSH, 0)
	ssh := Conn{Local: netip.MustParseAddrPort("192.0.2.10:22"), Remote: netip.MustParseAddrPort("198.51.100.7:50000"), Inbound: true, Dev: ifEth0}
	outbound := Conn{Local: netip.MustParseAddrPort("192.0.2.10:40000"), Remote: netip.MustParseAddrPort("203.0.113.5:443"), Dev: ifEth0}
	other := Conn{Local: netip.MustParseAddrPort("198.51.100.1:22"), Remote: netip.MustParseAddrPort("198.51.100.9:50000"), Inbound: true, Dev: ifOther}
	lo := Conn{Local: netip.MustParseAddrPort("127.0.0.1:5432"), Remote: netip.MustParseAddrPort("127.0.0.1:40000"), Inbound: true, Dev: 1}
	got := e.Adopt([]Conn{ssh, outbound, other, lo})
	if len(got) != 1 || got["eth0"] != 2 {
		t.Errorf("Adopt = %v; want eth0: 2 (eth9 is not configured, lo not an interface sgd filters)", got)
	}
	runSteps(t, w, []step{
		{in, pkt("tcp", "198.51.100.7:50000", "192.0.2.10:22", ack), ReasonTracked},
		{out, pkt("tcp", "192.0.2.10:22", "198.51.100.7:50000", ack), ReasonTracked},
		{out, pkt("tcp", "192.0.2.10:40000", "203.0.113.5:443", ack), ReasonTracked},
		{in, pkt("tcp", "203.0.113.5:443", "192.0.2.10:40000", ack), ReasonTracked},
		// A new connection is judged by the rules, which allow nothing.
		{in, pkt("tcp", "198.51.100.7:50001", "192.0.2.10:22", syn), ReasonNoRule},
	})
	if got := e.Adopt([]Conn{ssh}); len(got) != 0 {
		t.Errorf("Adopt again = %v; want nothing new", got)
	}
}

func TestParseSockets(t *testing.T) {
	// A listener on 0.0.0.0:22 and on 127.0.0.1:5432, an SSH session in (to port 22) and a
	// connection out (from port 40000) — little-endian words, as x86 and arm64 print them.
	const tcp4 = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0A0200C0:0016 076433C6:C350 01 00000000:00000000 02:0006F8C5 00000000     0        0 3 4 0 20 4 30 10 -1
   3: 0A0200C0:9C40 057100CB:01BB 01 00000000:00000000 00:00000000 00000000  1000        0 4 1 0 20 4 30 10 -1
   4: 0A0200C0:9C41 057100CB:01BB 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0
`
	// IPv6: a dual-stack listener on [::]:80 and a v4-mapped connection to it, and an
	// IPv6 session to it.
	const tcp6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0
   1: 0000000000000000FFFF00000A0200C0:0050 0000000000000000FFFF0000076433C6:C351 01 00000000:00000000 00:00000000 00000000     0        0 6 1 0 20 4 30 10 -1
   2: B80D0120000000000000000010000000:0050 B80D0120000000000000000007000000:C352 01 00000000:00000000 00:00000000 00000000     0        0 7 1 0 20 4 30 10 -1
`
	if !littleEndian() {
		t.Skip("the sample tables are as a little-endian kernel prints them")
	}
	conn := func(l, r string, in bool) Conn {
		return Conn{Local: netip.MustParseAddrPort(l), Remote: netip.MustParseAddrPort(r), Inbound: in}
	}
	for _, c := range []struct {
		table string
		want  []Conn
	}{
		{tcp4, []Conn{conn("192.0.2.10:22", "198.51.100.7:50000", true), conn("192.0.2.10:40000", "203.0.113.5:443", false)}},
		{tcp6, []Conn{conn("192.0.2.10:80", "198.51.100.7:50001", true), conn("[2001:db8::10]:80", "[2001:db8::7]:50002", true)}},
	} {
		got, err := parseSockets(strings.NewReader(c.table))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(c.want) {
			t.Fatalf("parseSockets = %v; want %v", got, c.want)
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("connection %d = %+v; want %+v", i, got[i], c.want[i])
			}
		}
	}
	if _, err := parseSockets(strings.NewReader("header\n 0: zz:0016 00000000:0000 01\n")); err == nil {
		t.Error("parseSockets accepted a bad address")
	}
}

func littleEndian() bool { return binary.NativeEndian.Uint16([]byte{1, 0}) == 1 }

// The kernel's own socket table and routes: a connection over loopback is found, with
// its direction and the loopback device.
func TestReadEstablished(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conns, err := ReadEstablished()
	if err != nil {
		t.Fatal(err)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	server, client := netip.MustParseAddrPort(ln.Addr().String()), netip.MustParseAddrPort(c.LocalAddr().String())
	found := 0
	for _, k := range conns {
		switch {
		case k.Local == server && k.Remote == client:
			found++
			if !k.Inbound || k.Dev != uint32(lo.Index) {
				t.Errorf("server end %+v; want inbound on lo (%d)", k, lo.Index)
			}
		case k.Local == client && k.Remote == server:
			found++
			if k.Inbound || k.Dev != uint32(lo.Index) {
				t.Errorf("client end %+v; want outbound on lo (%d)", k, lo.Index)
			}
		}
	}
	if found != 2 {
		t.Errorf("found %d ends of the loopback connection in %d connections; want 2", found, len(conns))
	}
}
