package main

// What the demo sees on the wire: a packet capture at both ends of each case (the
// sender's eth0 and the receiver's), the receiver's own TCP/ICMP counters, the sender's
// timeline, and the pcapng files of --pcap.

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/sgd-firewall/sgd/internal/ipproto"
	"github.com/sgd-firewall/sgd/internal/lab"
)

// wire is what the captures and counters of one case hold.
type wire struct {
	sent, recv   []lab.Frame // at the sender's eth0, at the receiver's eth0
	capErr       error       // a capture that could not run (then sent/recv are partial)
	counter      string      // "TCP InSegs": the receiver's own counter read around the case
	counterDelta int64
	counterErr   error
}

// pkt is the part of a frame the demo looks at.
type pkt struct {
	src, dst     netip.Addr
	proto        uint8
	sport, dport uint16
	flags        string // TCP: "SYN", "RST, ACK"; ICMP: "echo request"
	syn          bool   // a TCP SYN without ACK
}

// decodeFrame reads an Ethernet frame's IP header and TCP or ICMP header; ok is false
// for anything else (ARP, neighbour discovery is ICMPv6 and does decode).
func decodeFrame(data []byte) (p pkt, ok bool) {
	g := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
	switch ip := g.NetworkLayer().(type) {
	case *layers.IPv4:
		p.src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
		p.dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
		p.proto = uint8(ip.Protocol)
	case *layers.IPv6:
		p.src, _ = netip.AddrFromSlice(ip.SrcIP)
		p.dst, _ = netip.AddrFromSlice(ip.DstIP)
		p.proto = uint8(ip.NextHeader)
	default:
		return p, false
	}
	switch l := g.TransportLayer().(type) {
	case *layers.TCP:
		p.sport, p.dport = uint16(l.SrcPort), uint16(l.DstPort)
		var fl []string
		for _, f := range []struct {
			on   bool
			name string
		}{{l.SYN, "SYN"}, {l.RST, "RST"}, {l.FIN, "FIN"}, {l.PSH, "PSH"}, {l.ACK, "ACK"}} {
			if f.on {
				fl = append(fl, f.name)
			}
		}
		p.flags, p.syn = strings.Join(fl, ", "), l.SYN && !l.ACK
	default:
		if ic, ok := g.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok {
			p.flags = ic.TypeCode.String()
			switch ic.TypeCode.Type() {
			case layers.ICMPv4TypeEchoRequest:
				p.flags = "echo request"
			case layers.ICMPv4TypeEchoReply:
				p.flags = "echo reply"
			}
		}
	}
	return p, true
}

// ofFlow reports whether p belongs to the case's conversation: the same protocol between
// the two addresses, and for TCP the case's server port.
func (c *demoCase) ofFlow(p pkt) bool {
	from, to := c.from, c.to.Addr()
	if !(p.src == from && p.dst == to || p.src == to && p.dst == from) {
		return false
	}
	if c.ping {
		return p.proto == ipproto.ICMP
	}
	return p.proto == ipproto.TCP && (p.dport == c.to.Port() && p.src == from || p.sport == c.to.Port() && p.src == to)
}

// flowCount counts the frames of the case's flow in frames: those that arrived (in) and
// those the namespace sent (out).
func (c *demoCase) flowCount(frames []lab.Frame) (in, out int) {
	for _, f := range frames {
		if p, ok := decodeFrame(f.Data); ok && c.ofFlow(p) {
			if f.Outgoing {
				out++
			} else {
				in++
			}
		}
	}
	return in, out
}

// insideLine is the evidence from inside the receiver: what its own capture and its own
// stack's counter saw of the flow.
func (c *demoCase) insideLine() string {
	in, out := c.flowCount(c.wire.recv)
	s := fmt.Sprintf("inside the %s: %s of this flow reached its eth0", c.toRole, plural(in, "packet"))
	if out > 0 {
		s += fmt.Sprintf(", it sent %d", out)
	}
	s += " (AF_PACKET capture in its namespace)"
	if c.wire.capErr != nil {
		s += fmt.Sprintf(" — but the capture failed: %v", c.wire.capErr)
	}
	if c.wire.counterErr == nil {
		s += fmt.Sprintf("; %s in its /proc/net/snmp: %+d", c.wire.counter, c.wire.counterDelta)
	}
	return s
}

// timeline renders the sender's capture of the flow, times relative to its first packet.
func (c *demoCase) timeline() []string {
	lines := []string{fmt.Sprintf("timeline at the %s (capture on its eth0, from the first SYN):", c.fromRole)}
	var t0 time.Time
	syns, answers, shown := 0, 0, 0
	var last string
	for _, f := range c.wire.sent {
		p, ok := decodeFrame(f.Data)
		if !ok || !c.ofFlow(p) {
			continue
		}
		if t0.IsZero() {
			t0 = f.Time
		}
		arrow, note := "→", ""
		if !f.Outgoing {
			arrow = "←"
			answers++
		}
		if p.syn && f.Outgoing {
			if syns > 0 {
				note = fmt.Sprintf("retransmission %d", syns)
			} else {
				note = fmt.Sprintf("%s → %s", netip.AddrPortFrom(p.src, p.sport), netip.AddrPortFrom(p.dst, p.dport))
			}
			syns++
		}
		if shown == 8 {
			lines = append(lines, "  …")
		}
		if shown < 8 {
			lines = append(lines, strings.TrimRight(fmt.Sprintf("  %9s  %s %-9s %s", fmtOffset(f.Time.Sub(t0)), arrow, p.flags, note), " "))
		}
		shown++
		last = p.flags
	}
	switch {
	case shown == 0:
		lines = append(lines, "  (the capture saw nothing of this flow)")
	case answers == 0 && syns > 1:
		lines = append(lines, fmt.Sprintf("  %9s  nothing came back: no SYN-ACK, no RST, no ICMP — the kernel retried on its own until the client gave up", ""))
	case answers == 0:
		lines = append(lines, fmt.Sprintf("  %9s  nothing came back: no SYN-ACK, no RST, no ICMP — the client gave up before the kernel's first retry (after 1 s)", ""))
	case answers == 1 && strings.HasPrefix(last, "RST"):
		lines = append(lines, fmt.Sprintf("  %9s  one RST, at once: the instance's own stack answered (nothing listens), nothing was dropped", ""))
	}
	return lines
}

// fmtOffset prints a time since the first packet: +0.3 ms, +1.024 s.
func fmtOffset(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("+%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("+%.3f s", d.Seconds())
}

// snmpCounter reads one counter of the namespace's /proc/net/snmp, like ("Tcp", "InSegs").
// TCP's counters count IPv4 and IPv6 alike.
func snmpCounter(ns, group, field string) (int64, error) {
	var v int64
	err := lab.Do(ns, func() error {
		f, err := os.Open("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		defer f.Close()
		var names []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			key, rest, ok := strings.Cut(sc.Text(), ": ")
			if !ok || key != group {
				continue
			}
			if names == nil {
				names = strings.Fields(rest)
				continue
			}
			for i, val := range strings.Fields(rest) {
				if i < len(names) && names[i] == field {
					v, err = strconv.ParseInt(val, 10, 64)
					return err
				}
			}
		}
		return fmt.Errorf("no %s %s in /proc/net/snmp", group, field)
	})
	return v, err
}

// writePcap writes the case's two captures to one pcapng file, one interface each, so
// that Wireshark shows a packet leaving the sender and whether it reached the receiver.
func (c *demoCase) writePcap(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	iface := func(role, ns string) pcapgo.NgInterface {
		return pcapgo.NgInterface{Name: role + "/" + demoIface, Description: demoIface + " inside network namespace " + ns,
			LinkType: layers.LinkTypeEthernet, SnapLength: lab.CaptureSnap, TimestampResolution: 9}
	}
	w, err := pcapgo.NewNgWriterInterface(f, iface(c.fromRole, c.fromNS), pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{
		Application: "sgd demo", Comment: c.title}})
	if err != nil {
		return err
	}
	recvID, err := w.AddInterface(iface(c.toRole, c.toNS))
	if err != nil {
		return err
	}
	type rec struct {
		lab.Frame
		id int
	}
	var all []rec
	for _, fr := range c.wire.sent {
		all = append(all, rec{fr, 0})
	}
	for _, fr := range c.wire.recv {
		all = append(all, rec{fr, recvID})
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Time.Before(all[j].Time) })
	for _, r := range all {
		ci := gopacket.CaptureInfo{Timestamp: r.Time, CaptureLength: len(r.Data), Length: r.Len, InterfaceIndex: r.id}
		if err := w.WritePacket(ci, r.Data); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

// pcapName is the case's file name: "03-stranger-instance-tcp-22-ssh.pcapng".
func pcapName(i int, title string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(title) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	slug := strings.TrimRight(b.String(), "-")
	if len(slug) > 40 {
		// Cut at a word's end.
		if cut := strings.LastIndexByte(slug[:41], '-'); cut > 0 {
			slug = slug[:cut]
		} else {
			slug = slug[:40]
		}
	}
	return fmt.Sprintf("%02d-%s.pcapng", i, slug)
}

// pcapPath joins dir and the case's file name.
func pcapPath(dir string, i int, title string) string { return filepath.Join(dir, pcapName(i, title)) }
