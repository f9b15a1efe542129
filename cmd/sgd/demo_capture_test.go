package main

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/sgd-firewall/sgd/internal/lab"
)

// tcpFrame builds an Ethernet/IPv4/TCP frame from src:sport to dst:dport with the flags
// named in flags ("S", "SA", "RA").
func tcpFrame(t *testing.T, src, dst netip.AddrPort, flags string) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), Window: 64240,
		SYN: strings.Contains(flags, "S"), ACK: strings.Contains(flags, "A"), RST: strings.Contains(flags, "R")}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDemoTimeline(t *testing.T) {
	cli := netip.MustParseAddrPort("192.0.2.99:40000")
	srv := netip.MustParseAddrPort("192.0.2.10:22")
	other := netip.MustParseAddrPort("192.0.2.10:80")
	t0 := time.Unix(1_800_000_000, 0)
	frame := func(at time.Duration, out bool, from, to netip.AddrPort, flags string) lab.Frame {
		d := tcpFrame(t, from, to, flags)
		return lab.Frame{Time: t0.Add(at), Outgoing: out, Len: len(d), Data: d}
	}
	c := &demoCase{fromRole: "stranger", from: cli.Addr(), to: srv}
	for _, tc := range []struct {
		name   string
		frames []lab.Frame
		want   []string
	}{
		{"dropped", []lab.Frame{
			frame(0, true, cli, srv, "S"),
			frame(500*time.Millisecond, true, cli, other, "S"), // another flow: left out
			frame(time.Second, true, cli, srv, "S"),
			frame(3*time.Second, true, cli, srv, "S"),
		}, []string{
			"timeline at the stranger (capture on its eth0, from the first SYN):",
			"    +0.0 ms  → SYN       192.0.2.99:40000 → 192.0.2.10:22",
			"   +1.000 s  → SYN       retransmission 1",
			"   +3.000 s  → SYN       retransmission 2",
			"             nothing came back: no SYN-ACK, no RST, no ICMP — the kernel retried on its own until the client gave up",
		}},
		{"refused", []lab.Frame{
			frame(0, true, cli, srv, "S"),
			frame(300*time.Microsecond, false, srv, cli, "RA"),
		}, []string{
			"timeline at the stranger (capture on its eth0, from the first SYN):",
			"    +0.0 ms  → SYN       192.0.2.99:40000 → 192.0.2.10:22",
			"    +0.3 ms  ← RST, ACK",
			"             one RST, at once: the instance's own stack answered (nothing listens), nothing was dropped",
		}},
		{"given up early", []lab.Frame{
			frame(0, true, cli, srv, "S"),
		}, []string{
			"timeline at the stranger (capture on its eth0, from the first SYN):",
			"    +0.0 ms  → SYN       192.0.2.99:40000 → 192.0.2.10:22",
			"             nothing came back: no SYN-ACK, no RST, no ICMP — the client gave up before the kernel's first retry (after 1 s)",
		}},
		{"empty", nil, []string{
			"timeline at the stranger (capture on its eth0, from the first SYN):",
			"  (the capture saw nothing of this flow)",
		}},
	} {
		c.wire.sent = tc.frames
		if got := c.timeline(); strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
			t.Errorf("%s: timeline() =\n%s\nwant\n%s", tc.name, strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
		}
	}
	c.wire.recv = []lab.Frame{frame(0, false, cli, srv, "S"), frame(time.Millisecond, true, srv, cli, "RA"), frame(0, false, cli, other, "S")}
	if in, out := c.flowCount(c.wire.recv); in != 1 || out != 1 {
		t.Errorf("flowCount() = %d, %d; want 1, 1", in, out)
	}
}

func TestPcapName(t *testing.T) {
	for _, tc := range []struct {
		i     int
		title string
		want  string
	}{
		{3, "stranger → instance tcp/22 (SSH)", "03-stranger-instance-tcp-22-ssh.pcapng"},
		{5, "member → instance tcp/22 (SSH, via the group reference)", "05-member-instance-tcp-22-ssh-via-the-group.pcapng"},
		{8, "stranger → instance tcp/80 over IPv6 ([2001:db8::10]:80)", "08-stranger-instance-tcp-80-over-ipv6-2001.pcapng"},
	} {
		if got := pcapName(tc.i, tc.title); got != tc.want {
			t.Errorf("pcapName(%d, %q) = %q; want %q", tc.i, tc.title, got, tc.want)
		}
	}
}
