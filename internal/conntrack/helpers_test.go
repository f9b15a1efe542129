package conntrack

import (
	"net/netip"
	"time"
)

const (
	fin = tcpFIN
	syn = tcpSYN
	rst = tcpRST
	ack = tcpACK
	psh = 0x08
)

const sec = int64(time.Second)

// pkt builds a tuple from "addr:port" strings ("[v6]:port" for IPv6).
func pkt(proto uint8, src, dst string) Tuple {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	return Tuple{Proto: proto, Src: s.Addr(), Dst: d.Addr(), SrcPort: s.Port(), DstPort: d.Port()}
}

// echo builds an ICMP echo tuple with identifier id.
func echo(proto uint8, src, dst string, id uint16) Tuple {
	return Tuple{Proto: proto, Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), SrcPort: id, DstPort: id}
}

// ip builds a tuple for a protocol without ports.
func ip(proto uint8, src, dst string) Tuple {
	return Tuple{Proto: proto, Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst)}
}

func rev(tp Tuple) Tuple {
	tp.Src, tp.Dst, tp.SrcPort, tp.DstPort = tp.Dst, tp.Src, tp.DstPort, tp.SrcPort
	return tp
}

// testTimeouts has a distinct value per field, so a state mapped to the wrong timeout
// shows.
func testTimeouts() *Timeouts {
	return &Timeouts{
		TCPEstablished: 1001 * time.Second,
		TCPSynSent:     1002 * time.Second,
		TCPSynRecv:     1003 * time.Second,
		TCPFinWait:     1004 * time.Second,
		TCPCloseWait:   1005 * time.Second,
		TCPLastAck:     1006 * time.Second,
		TCPTimeWait:    1007 * time.Second,
		TCPClose:       1008 * time.Second,
		UDP:            1009 * time.Second,
		UDPStream:      1010 * time.Second,
		ICMP:           1011 * time.Second,
		Other:          1012 * time.Second,
	}
}

// stateOf returns the state of tp's flow, StateNone if untracked, without changing it.
func stateOf(t *Table, tp Tuple) State {
	st := StateNone
	want, _ := makeKey(&tp)
	t.Range(func(got Tuple, fi FlowInfo) bool {
		if k, _ := makeKey(&got); k == want {
			st = fi.State
			return false
		}
		return true
	})
	return st
}

// deadlineOf returns the idle deadline of tp's flow (0 if untracked).
func deadlineOf(t *Table, tp Tuple) int64 {
	k, _ := makeKey(&tp)
	s := t.shardFor(&k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if f, ok := s.m[k]; ok {
		return f.deadline
	}
	return 0
}
