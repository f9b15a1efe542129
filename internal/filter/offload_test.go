package filter

import (
	"fmt"
	"testing"

	"github.com/sgd-firewall/sgd/internal/conntrack"
)

// kernelStub stands for the kernel's conntrack in the judge's offload tests: which
// connections it still tracks, and what it was asked. (The real kernel is exercised by
// internal/offload's and test/netns's tests; here only the judge's decisions are.)
type kernelStub struct {
	gone  map[conntrack.Tuple]bool // connections the kernel has ended (zone 0)
	asked int
}

func (k *kernelStub) alive(t conntrack.Tuple) bool {
	k.asked++
	t.Zone = 0
	r := conntrack.Tuple{Proto: t.Proto, Src: t.Dst, Dst: t.Src, SrcPort: t.DstPort, DstPort: t.SrcPort}
	return !k.gone[t] && !k.gone[r] // the kernel finds a connection by either direction
}

// offloadEngine is newTestEngine with the fast path on: the kernel's defaults are the
// Linux ones (UDP stream 120 s, where AWS's is 180 s).
func offloadEngine(t *testing.T, yaml string) (*Engine, *Worker, *fakeClock, *kernelStub) {
	t.Helper()
	k := &kernelStub{gone: map[conntrack.Tuple]bool{}}
	kernel := conntrack.DefaultTimeouts()
	kernel.UDPStream = 120e9
	e, w, clk := newTestEngineWith(t, yaml, 0, func(o *Options) { o.Offload = &Offload{Kernel: kernel, Alive: k.alive} })
	return e, w, clk, k
}

func TestOffloadHostInterface(t *testing.T) {
	e, w, _, _ := offloadEngine(t, webYAML)
	for _, c := range []struct {
		name    string
		h       Point
		b       []byte
		offload bool
	}{
		{"a new tracked TCP flow", in, pkt("tcp", "198.51.100.7:40000", "192.0.2.10:22", syn), true},
		{"its reply: tracked, already offloaded", out, pkt("tcp", "192.0.2.10:22", "198.51.100.7:40000", synAck), false},
		{"a new UDP flow (the interface's own timeouts)", in, pkt("udp", "203.0.113.9:5353", "192.0.2.10:53"), true},
		{"ICMP echo stays on the queue", in, pkt("icmp", "203.0.113.9", "192.0.2.10", 8, 0, 77), false},
		{"another protocol stays on the queue", in, pkt("gre", "203.0.113.5", "192.0.2.10"), false},
		{"a drop offloads nothing", in, pkt("tcp", "198.51.100.8:40000", "192.0.2.10:22", syn), false},
		{"a bare ACK starts no flow", in, pkt("tcp", "192.0.2.99:40001", "192.0.2.10:80", ack), false},
	} {
		if r := w.Judge(c.b, c.h); r.Offload != c.offload {
			t.Errorf("%s: Judge = %v, Offload %v; want Offload %v", c.name, r.Reason, r.Offload, c.offload)
		}
	}
	if n := e.Table().Offloaded(); n != 2 {
		t.Errorf("Offloaded() = %d; want 2 (the TCP and the UDP flow)", n)
	}
}

// An untracked flow (SPEC 1.4) is never offloaded: its packets must keep meeting the
// rules, so that it stops at once when its rule goes.
func TestOffloadNeverUntracked(t *testing.T) {
	_, w, _, _ := offloadEngine(t, openYAML)
	if r := w.Judge(pkt("tcp", "203.0.113.9:40000", "192.0.2.10:80", syn), in); r.Reason != ReasonUntracked || r.Offload {
		t.Errorf("Judge(untracked) = %v, Offload %v; want %v, false", r.Reason, r.Offload, ReasonUntracked)
	}
}

// A packet that reaches the queue for an offloaded flow the kernel has ended is a new
// flow's: the table forgets the old one and the rules judge the packet.
func TestOffloadedFlowEndedInKernel(t *testing.T) {
	e, w, _, k := offloadEngine(t, webYAML)
	first := pkt("tcp", "198.51.100.7:40000", "192.0.2.10:22", syn)
	if r := w.Judge(first, in); !r.Offload {
		t.Fatalf("Judge(SYN) = %v, Offload false; want offloaded", r.Reason)
	}
	reply := pkt("tcp", "192.0.2.10:22", "198.51.100.7:40000", ack)
	if r := w.Judge(reply, out); r.Reason != ReasonTracked || k.asked != 1 {
		t.Errorf("Judge(reply) with the kernel tracking it = %v (kernel asked %d times); want %v, asked once", r.Reason, k.asked, ReasonTracked)
	}
	k.gone[conntrack.Tuple{Proto: 6, Src: w.Packet().Dst, Dst: w.Packet().Src, SrcPort: 40000, DstPort: 22}] = true
	if r := w.Judge(reply, out); r.Reason != ReasonNoRule {
		t.Errorf("Judge(reply) after the kernel ended the flow = %v; want %v (egress: [])", r.Reason, ReasonNoRule)
	}
	if n := e.Table().Len(); n != 0 {
		t.Errorf("table Len = %d after the kernel ended its one flow; want 0", n)
	}
	if r := w.Judge(first, in); r.Reason != ReasonRule || !r.Offload {
		t.Errorf("Judge(SYN again) = %v, Offload %v; want a new offloaded flow", r.Reason, r.Offload)
	}
}

// Ports: a flow between two ports is offloaded only when both points start it, and the
// kernel keeps it with every point's timeouts; one from outside into a port gets the
// kernel's defaults, which differ from AWS's for UDP streams.
func TestOffloadPorts(t *testing.T) {
	for _, c := range []struct {
		name       string
		dbTimeouts string
		from, to   Point
		b          []byte
		offload    bool
		offloaded  int
	}{
		{"web → db:3306", "", webOut, dbIn, pkt("tcp", "198.51.100.10:40000", "198.51.100.20:3306", syn), true, 2},
		{"web → db:3306, db with its own tcp timeout", ", connection_tracking: {tcp_established_timeout: 3600}", webOut, dbIn,
			pkt("tcp", "198.51.100.10:40000", "198.51.100.20:3306", syn), false, 0},
		{"db → web:443, dropped at web", "", dbOut, webIn, pkt("tcp", "198.51.100.20:40001", "198.51.100.10:443", syn), false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, w, _, _ := offloadEngine(t, fmt.Sprintf(portsYAML, c.dbTimeouts))
			if r := w.JudgePath(c.b, c.from, c.to); r.Offload != c.offload {
				t.Errorf("JudgePath = %v, Offload %v; want Offload %v", r.Reason, r.Offload, c.offload)
			}
			if n := e.Table().Offloaded(); n != c.offloaded {
				t.Errorf("Offloaded() = %d; want %d", n, c.offloaded)
			}
		})
	}
	_, w, _, _ := offloadEngine(t, fmt.Sprintf(portsYAML, ""))
	if r := w.Judge(pkt("tcp", "203.0.113.9:40000", "198.51.100.10:80", syn), webIn); !r.Offload {
		t.Errorf("Judge(outside → web:80) = %v, Offload false; want offloaded (TCP: the kernel's default is AWS's)", r.Reason)
	}
	if r := w.Judge(pkt("udp", "[2001:db8:a::10]:5353", "[2001:db8::53]:53"), webOut); !r.Offload {
		t.Errorf("Judge(web → udp/53) = %v, Offload false; want offloaded (web's own policy)", r.Reason)
	}
	// Into web from outside: the kernel's defaults would give an answered flow its 120 s
	// "replied" timeout, longer than web's udp_timeout for a request answered twice.
	if r := w.Judge(pkt("udp", "[2001:db8::99]:5353", "[2001:db8:a::10]:53"), webIn); r.Offload {
		t.Errorf("Judge(outside → web udp/53) = %v, offloaded; want it on the queue (the kernel's UDP defaults outlive AWS's)", r.Reason)
	}
}

func TestOffloadZoneLimit(t *testing.T) {
	zones := NewZones()
	for i := range MaxOffloadZone {
		zones.Of(fmt.Sprintf("taken%d", i)) // eth0 will be zone 128
	}
	k := &kernelStub{}
	_, w, _ := newTestEngineWith(t, webYAML, 0, func(o *Options) {
		o.Zones, o.Offload = zones, &Offload{Kernel: conntrack.DefaultTimeouts(), Alive: k.alive}
	})
	if r := w.Judge(pkt("tcp", "198.51.100.7:40000", "192.0.2.10:22", syn), in); r.Reason != ReasonRule || r.Offload {
		t.Errorf("Judge at zone %d = %v, Offload %v; want %v, not offloaded", MaxOffloadZone+1, r.Reason, r.Offload, ReasonRule)
	}
}

func TestOffloadNoAllocs(t *testing.T) {
	_, w, clk, _ := offloadEngine(t, webYAML)
	port := uint16(1000)
	b := pkt("tcp", "198.51.100.7:40000", "192.0.2.10:80", syn)
	if n := testing.AllocsPerRun(200, func() {
		port++
		b[20], b[21] = byte(port>>8), byte(port) // a new flow each time
		clk.t++
		if r := w.Judge(b, in); !r.Offload {
			t.Fatalf("Judge = %v, not offloaded", r.Reason)
		}
	}); n != 0 {
		t.Errorf("Judge offloading a new flow allocates %v times per packet; want 0", n)
	}
}

// A bare SYN that reaches the queue on an offloaded flow's port pair is never the flow's:
// from the reply side it is an unsolicited connection, from the originator a new one (the
// kernel saw the old one end). The rules judge it.
func TestOffloadedFlowBareSYN(t *testing.T) {
	_, w, _, _ := offloadEngine(t, webYAML)
	first := pkt("tcp", "198.51.100.7:40000", "192.0.2.10:22", syn)
	if r := w.Judge(first, in); !r.Offload {
		t.Fatalf("Judge(SYN) = %v, not offloaded", r.Reason)
	}
	if r := w.Judge(pkt("tcp", "192.0.2.10:22", "198.51.100.7:40000", syn), out); r.Reason != ReasonNoRule {
		t.Errorf("Judge(SYN from the reply side) = %v; want %v (egress: [])", r.Reason, ReasonNoRule)
	}
	if r := w.Judge(first, in); r.Reason != ReasonRule || !r.Offload {
		t.Errorf("Judge(SYN from the originator again) = %v, Offload %v; want a new offloaded flow", r.Reason, r.Offload)
	}
}
