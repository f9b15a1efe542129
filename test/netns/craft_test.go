package netns

// Packets crafted with gopacket and sent as whole Ethernet frames from inside a namespace
// (AF_PACKET), and the protected host's own evidence of what reached it: sockets that
// record every datagram, /proc/net/snmp and /proc/net/snmp6 read inside its namespace, and
// a capture of one interface. The attack tests use these, never sgd's word, to decide
// whether a packet was delivered.

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"
)

// htons converts a 16-bit value to network byte order (AF_PACKET wants sll_protocol so).
func htons(v uint16) uint16 { return v<<8 | v>>8 }

// linkMAC returns the hardware address and index of interface ifname in namespace ns
// (from `ip -j link show`).
func linkMAC(t testing.TB, ns, ifname string) (net.HardwareAddr, int) {
	t.Helper()
	var links []struct {
		Index   int    `json:"ifindex"`
		Address string `json:"address"`
	}
	out := nsExec(t, ns, "ip", "-j", "link", "show", "dev", ifname)
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j link show dev %s in %s: %v\n%s", ifname, ns, err, out)
	}
	mac, err := net.ParseMAC(links[0].Address)
	if err != nil {
		t.Fatalf("MAC of %s in %s: %v", ifname, ns, err)
	}
	return mac, links[0].Index
}

// linkLocal returns the IPv6 link-local address of ifname in namespace ns (from `ip -j
// addr show`); it waits up to 5 s for the kernel to add it after the link came up.
func linkLocal(t testing.TB, ns, ifname string) netip.Addr {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var ifs []struct {
			AddrInfo []struct {
				Family string `json:"family"`
				Local  string `json:"local"`
				Scope  string `json:"scope"`
			} `json:"addr_info"`
		}
		out := nsExec(t, ns, "ip", "-j", "addr", "show", "dev", ifname)
		if err := json.Unmarshal([]byte(out), &ifs); err != nil {
			t.Fatalf("ip -j addr show dev %s in %s: %v\n%s", ifname, ns, err, out)
		}
		for _, i := range ifs {
			for _, a := range i.AddrInfo {
				if a.Family == "inet6" && a.Scope == "link" {
					return netip.MustParseAddr(a.Local)
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no IPv6 link-local address on %s in %s after 5s:\n%s", ifname, ns, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sysctl sets /proc/sys/KEY (dots for slashes, as sysctl(8) writes it) inside namespace ns.
func sysctl(t testing.TB, ns, key, value string) {
	t.Helper()
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	var err error
	// /proc/sys/net answers for the network namespace of the thread that opens it.
	inNS(t, ns, func() { err = os.WriteFile(path, []byte(value), 0) })
	if err != nil {
		t.Fatalf("sysctl %s=%s in %s: %v", key, value, ns, err)
	}
}

// wire sends whole Ethernet frames out of one interface of a namespace through an
// AF_PACKET socket. A frame leaves exactly as written: no routing, no neighbour lookup, no
// netfilter and no source-address check in the sender's namespace, so its addresses can
// be anything (a spoofed source, a destination MAC read from the target).
type wire struct {
	fd      int
	ifindex int
	mac     net.HardwareAddr // the sending interface's own address: the frames' source
	where   string           // "ns/ifname", for messages
}

// openWire opens a wire on ifname in namespace ns; t.Cleanup closes it.
func openWire(t testing.TB, ns, ifname string) *wire {
	t.Helper()
	mac, index := linkMAC(t, ns, ifname)
	var fd int
	var err error
	// Protocol 0: the socket is bound to no protocol, so it receives nothing; it only sends.
	inNS(t, ns, func() { fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0) })
	if err != nil {
		t.Fatalf("AF_PACKET socket in %s: %v", ns, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &wire{fd: fd, ifindex: index, mac: mac, where: ns + "/" + ifname}
}

// send wraps the IP packet pkt (IPv4 or IPv6, by its version nibble) in an Ethernet
// header from the wire's MAC to dst and sends it.
func (w *wire) send(t testing.TB, dst net.HardwareAddr, pkt []byte) {
	t.Helper()
	et := layers.EthernetTypeIPv4
	if pkt[0]>>4 == 6 {
		et = layers.EthernetTypeIPv6
	}
	buf := gopacket.NewSerializeBuffer()
	eth := &layers.Ethernet{SrcMAC: w.mac, DstMAC: dst, EthernetType: et}
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{}, eth, gopacket.Payload(pkt)); err != nil {
		t.Fatalf("serialize Ethernet frame: %v", err)
	}
	sa := &unix.SockaddrLinklayer{Ifindex: w.ifindex, Protocol: htons(uint16(et)), Halen: 6}
	copy(sa.Addr[:], dst)
	if err := unix.Sendto(w.fd, buf.Bytes(), 0, sa); err != nil {
		t.Fatalf("send %d-byte frame on %s: %v", len(buf.Bytes()), w.where, err)
	}
}

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// ipHeader returns the IP layer (v4 or v6 by src's family) of a packet src → dst carrying
// proto, as a layer to serialize and as the network layer transport checksums need.
func ipHeader(src, dst netip.Addr, proto layers.IPProtocol) (gopacket.SerializableLayer, gopacket.NetworkLayer) {
	if src.Is4() {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: 0x5a5a, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		return ip, ip
	}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	return ip, ip
}

// serialize serializes ls with every length and checksum computed.
func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("serialize %d layers: %v", len(ls), err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// udpPacket returns an IP packet holding one well-formed UDP datagram src → dst.
func udpPacket(t testing.TB, src, dst netip.AddrPort, payload []byte) []byte {
	t.Helper()
	ip, nl := ipHeader(src.Addr(), dst.Addr(), layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	if err := udp.SetNetworkLayerForChecksum(nl); err != nil {
		t.Fatal(err)
	}
	return serialize(t, ip, udp, gopacket.Payload(payload))
}

// tcpPacket returns an IP packet holding one TCP segment src → dst with ACK and PSH set,
// sequence number seq, acknowledgment ack and the payload.
func tcpPacket(t testing.TB, src, dst netip.AddrPort, seq, ack uint32, payload []byte) []byte {
	t.Helper()
	ip, nl := ipHeader(src.Addr(), dst.Addr(), layers.IPProtocolTCP)
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()),
		Seq: seq, Ack: ack, ACK: true, PSH: true, Window: 1024}
	if err := tcp.SetNetworkLayerForChecksum(nl); err != nil {
		t.Fatal(err)
	}
	return serialize(t, ip, tcp, gopacket.Payload(payload))
}

// icmpError returns an ICMP (src IPv4) or ICMPv6 (src IPv6) error src → dst of type typ
// and code, whose 4-byte word after the checksum is word (unused, the redirect's gateway,
// parameter problem's pointer, packet too big's MTU), quoting the packet quoted — for an
// error about a flow, a packet the receiver itself sent (RFC 792, RFC 4443 section 3).
func icmpError(t testing.TB, src, dst netip.Addr, typ, code uint8, word uint32, quoted []byte) []byte {
	t.Helper()
	if src.Is4() {
		ip, _ := ipHeader(src, dst, layers.IPProtocolICMPv4)
		icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code), Id: uint16(word >> 16), Seq: uint16(word)}
		return serialize(t, ip, icmp, gopacket.Payload(quoted))
	}
	ip, nl := ipHeader(src, dst, layers.IPProtocolICMPv6)
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, code)}
	if err := icmp.SetNetworkLayerForChecksum(nl); err != nil {
		t.Fatal(err)
	}
	// gopacket's ICMPv6 layer is the 4-byte header only; the word is the body's start.
	body := binary.BigEndian.AppendUint32(nil, word)
	return serialize(t, ip, icmp, gopacket.Payload(append(body, quoted...)))
}

// withUDPLength returns a copy of the UDP packet pkt (as udpPacket builds it: no IPv4
// options, no IPv6 extension headers) whose UDP length field says n. The IPv4 checksum is
// set to 0 ("no checksum", RFC 768), so the length is the datagram's only defect; IPv6
// requires a checksum, and the one kept was computed over the real bytes — the kernel's
// length check (udp_rcv: length > datagram, or < 8, is a short packet counted in
// InErrors) comes before its checksum check anyway.
func withUDPLength(pkt []byte, n uint16) []byte {
	b := append([]byte(nil), pkt...)
	off := 40
	if b[0]>>4 == 4 {
		off = int(b[0]&0x0f) * 4
	}
	binary.BigEndian.PutUint16(b[off+4:], n)
	if b[0]>>4 == 4 {
		binary.BigEndian.PutUint16(b[off+6:], 0)
	}
	return b
}

// udpSink is a UDP socket inside a namespace that records every datagram it receives:
// the protected host's own evidence that a datagram was delivered.
type udpSink struct {
	pc  *net.UDPConn
	mu  sync.Mutex
	got map[string]int // payload → datagrams received with it
}

// listenUDP starts a sink on network ("udp", "udp4", "udp6") and addr (":PORT" on "udp"
// is dual-stack) in namespace ns; control, when not nil, runs on the socket before it is
// bound. t.Cleanup closes it.
func listenUDP(t testing.TB, ns, network, addr string, control func(fd int) error) *udpSink {
	t.Helper()
	lc := net.ListenConfig{}
	if control != nil {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var cerr error
			if err := c.Control(func(fd uintptr) { cerr = control(int(fd)) }); err != nil {
				return err
			}
			return cerr
		}
	}
	var pc net.PacketConn
	var err error
	inNS(t, ns, func() { pc, err = lc.ListenPacket(t.Context(), network, addr) })
	if err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, ns, err)
	}
	s := &udpSink{pc: pc.(*net.UDPConn), got: map[string]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, _, err := s.pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.got[string(buf[:n])]++
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { s.pc.Close(); <-done })
	return s
}

// send sends one datagram from the sink's own socket (its bound port and options) to dst.
func (s *udpSink) send(t testing.TB, dst netip.AddrPort, payload string) {
	t.Helper()
	if _, err := s.pc.WriteToUDPAddrPort([]byte(payload), dst); err != nil {
		t.Fatalf("send %q from %v to %v: %v", payload, s.pc.LocalAddr(), dst, err)
	}
}

// count returns how many datagrams carrying payload the sink has received.
func (s *udpSink) count(payload string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[payload]
}

// wait waits up to d for a datagram carrying payload and reports whether one came.
func (s *udpSink) wait(payload string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for s.count(payload) == 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// sendUDP sends one datagram from namespace ns, from src (the zero AddrPort: any) to dst;
// control, when not nil, runs on the socket before it is bound.
func sendUDP(t testing.TB, ns string, src, dst netip.AddrPort, payload string, control func(fd int) error) {
	t.Helper()
	lc := net.ListenConfig{}
	if control != nil {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var cerr error
			if err := c.Control(func(fd uintptr) { cerr = control(int(fd)) }); err != nil {
				return err
			}
			return cerr
		}
	}
	laddr := ":0"
	if src.IsValid() {
		laddr = src.String()
	}
	network := "udp4"
	if dst.Addr().Is6() {
		network = "udp6"
	}
	var pc net.PacketConn
	var err error
	inNS(t, ns, func() { pc, err = lc.ListenPacket(t.Context(), network, laddr) })
	if err != nil {
		t.Fatalf("udp socket %s in %s: %v", laddr, ns, err)
	}
	defer pc.Close()
	if _, err := pc.(*net.UDPConn).WriteToUDPAddrPort([]byte(payload), dst); err != nil {
		t.Fatalf("send %q from %s to %v: %v", payload, ns, dst, err)
	}
}

// counters is one reading of a namespace's /proc/net/snmp, keyed "Group.Field" (e.g.
// "Udp.InErrors", "Icmp.InRedirects"), and /proc/net/snmp6, keyed by its own names (e.g.
// "Udp6InErrors", "Icmp6InParmProblems").
type counters map[string]int64

// readCounters reads the SNMP counters of namespace ns: the kernel's own count of what
// its stack received there.
func readCounters(t testing.TB, ns string) counters {
	t.Helper()
	var snmp, snmp6 []byte
	var err4, err6 error
	// /proc/thread-self/net shows the network namespace of the reading thread, which inNS
	// switched; /proc/self/net would show the process's main thread's.
	inNS(t, ns, func() {
		snmp, err4 = os.ReadFile("/proc/thread-self/net/snmp")
		snmp6, err6 = os.ReadFile("/proc/thread-self/net/snmp6")
	})
	if err := errors.Join(err4, err6); err != nil {
		t.Fatalf("read SNMP counters in %s: %v", ns, err)
	}
	c := counters{}
	lines := strings.Split(strings.TrimSpace(string(snmp)), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) != len(values) || len(names) == 0 || names[0] != values[0] {
			t.Fatalf("/proc/net/snmp in %s: header and values differ:\n%s\n%s", ns, lines[i], lines[i+1])
		}
		group := strings.TrimSuffix(names[0], ":")
		for j := 1; j < len(names); j++ {
			v, err := strconv.ParseInt(values[j], 10, 64)
			if err != nil {
				t.Fatalf("/proc/net/snmp in %s: %s.%s = %q: %v", ns, group, names[j], values[j], err)
			}
			c[group+"."+names[j]] = v
		}
	}
	for _, l := range strings.Split(string(snmp6), "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			if v, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				c[f[0]] = v
			}
		}
	}
	return c
}

// rise returns how much each of keys rose from base to c, as "key +N" strings for
// messages, and the rises.
func (c counters) rise(base counters, keys ...string) (map[string]int64, string) {
	m := map[string]int64{}
	var parts []string
	for _, k := range keys {
		if _, ok := c[k]; !ok {
			panic("no SNMP counter " + k)
		}
		m[k] = c[k] - base[k]
		parts = append(parts, fmt.Sprintf("%s +%d", k, m[k]))
	}
	return m, strings.Join(parts, ", ")
}

// waitRise reads the counters of ns until every key has risen by at least want over base,
// or d has passed; it returns the last reading.
func waitRise(t testing.TB, ns string, base counters, want int64, d time.Duration, keys ...string) counters {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		c := readCounters(t, ns)
		ok := true
		for _, k := range keys {
			ok = ok && c[k]-base[k] >= want
		}
		if ok || time.Now().After(deadline) {
			return c
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tap receives every frame of one interface of a namespace, both directions (an AF_PACKET
// socket bound to ETH_P_ALL and the interface).
type tap struct {
	fd    int
	where string
}

// openTap starts capturing on ifname in namespace ns; t.Cleanup closes it.
func openTap(t testing.TB, ns, ifname string) *tap {
	t.Helper()
	_, index := linkMAC(t, ns, ifname)
	var fd int
	var err error
	inNS(t, ns, func() {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	})
	if err != nil {
		t.Fatalf("AF_PACKET capture socket in %s: %v", ns, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: index, Protocol: htons(unix.ETH_P_ALL)}); err != nil {
		t.Fatalf("bind capture socket to %s/%s: %v", ns, ifname, err)
	}
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return &tap{fd: fd, where: ns + "/" + ifname}
}

// tcpSegment finds, among the frames captured since the tap opened (or since the last
// call), a TCP segment from → to carrying payload, waiting up to d; it returns the
// segment's sequence and acknowledgment numbers.
func (tp *tap) tcpSegment(t testing.TB, from, to netip.AddrPort, payload string, d time.Duration) (seq, ack uint32) {
	t.Helper()
	buf := make([]byte, 65536)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(tp.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			t.Fatalf("capture on %s: %v", tp.where, err)
		}
		p := gopacket.NewPacket(buf[:n], layers.LayerTypeEthernet, gopacket.DecodeOptions{NoCopy: false, Lazy: false})
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		nl := p.NetworkLayer()
		if tcp == nil || nl == nil || string(tcp.Payload) != payload {
			continue
		}
		src, _ := netip.AddrFromSlice(nl.NetworkFlow().Src().Raw())
		dst, _ := netip.AddrFromSlice(nl.NetworkFlow().Dst().Raw())
		if netip.AddrPortFrom(src, uint16(tcp.SrcPort)) == from && netip.AddrPortFrom(dst, uint16(tcp.DstPort)) == to {
			return tcp.Seq, tcp.Ack
		}
	}
	t.Fatalf("no TCP segment %v → %v carrying %q captured on %s within %v", from, to, payload, tp.where, d)
	return 0, 0
}

// tcpSink accepts TCP connections inside a namespace and records the bytes its
// application reads from each: the host's own evidence that a segment was delivered to
// the socket (the TCP stack accepted it in sequence). To a connection whose first bytes
// are "ping\n" it answers "pong\n".
type tcpSink struct {
	ln    net.Listener
	mu    sync.Mutex
	read  strings.Builder // everything read, all connections
	conns []net.Conn      // accepted, closed by the cleanup
	done  bool            // the cleanup ran: close what is accepted from now on
	wg    sync.WaitGroup
}

func listenTCP(t testing.TB, ns, addr string) *tcpSink {
	t.Helper()
	s := &tcpSink{}
	var err error
	inNS(t, ns, func() { s.ln, err = net.Listen("tcp", addr) })
	if err != nil {
		t.Fatalf("listen tcp %s in %s: %v", addr, ns, err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			if s.done {
				c.Close()
			}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(60 * time.Second))
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						s.mu.Lock()
						s.read.Write(buf[:n])
						s.mu.Unlock()
						if string(buf[:n]) == "ping\n" {
							_, _ = c.Write([]byte("pong\n"))
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		s.ln.Close()
		s.mu.Lock()
		s.done = true
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *tcpSink) has(payload string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Contains(s.read.String(), payload)
}

// wait waits up to d for payload to have been read and reports whether it was.
func (s *tcpSink) wait(payload string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !s.has(payload) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// dialUDP returns a UDP socket in namespace ns connected to dst (its local address is the
// flow's client end); t.Cleanup closes it.
func dialUDP(t testing.TB, ns string, dst netip.AddrPort) *net.UDPConn {
	t.Helper()
	network := "udp4"
	if dst.Addr().Is6() {
		network = "udp6"
	}
	var c *net.UDPConn
	var err error
	inNS(t, ns, func() { c, err = net.DialUDP(network, nil, net.UDPAddrFromAddrPort(dst)) })
	if err != nil {
		t.Fatalf("udp socket in %s to %v: %v", ns, dst, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// localAddrPort is c's local address, IPv4 unmapped.
func localAddrPort(c net.Conn) netip.AddrPort {
	ap := netip.MustParseAddrPort(c.LocalAddr().String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
