package offload

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sgd-firewall/sgd/internal/ipproto"
)

// This file reads ctnetlink by hand: the netlink messages of a datagram, and a conntrack
// entry's message straight into a Conn, without allocating. Destroy events (thousands a
// second under a connection load) and dumps (every entry sgd offloaded, every few
// seconds) cost sgd a third of its CPU through ti-mo/conntrack's decoder (measured
// 2026-12, `sgd bench --figures conn` on 2 cores): an allocation per attribute, per
// message and per datagram, and the GC work after them.

// ctnetlink's numbers: include/uapi/linux/netfilter/nfnetlink_conntrack.h (message
// types, attribute types), nfnetlink.h (struct nfgenmsg) and nf_conntrack_common.h
// (status bits). Numbers in attribute payloads are big endian; netlink's own headers
// (nlmsghdr, nlattr) are in host order.
const (
	nfgenLen = 4 // struct nfgenmsg: family, version, resource id

	// enum cntl_msg_types, the low byte of nlmsg_type (the high byte is
	// NFNL_SUBSYS_CTNETLINK).
	msgCTNew    = 0 // IPCTNL_MSG_CT_NEW: a dump's entry, a GET's reply, a new or updated entry
	msgCTGet    = 1 // IPCTNL_MSG_CT_GET
	msgCTDelete = 2 // IPCTNL_MSG_CT_DELETE: a destroy event; a request to delete

	// enum ctattr_type
	ctaTupleOrig     = 1
	ctaTupleReply    = 2
	ctaStatus        = 3
	ctaProtoinfo     = 4
	ctaTimeout       = 7
	ctaMark          = 8
	ctaCountersOrig  = 9
	ctaCountersReply = 10
	ctaID            = 12
	ctaMarkMask      = 21
	ctaLabels        = 22
	ctaLabelsMask    = 23

	// enum ctattr_tuple
	ctaTupleIP    = 1
	ctaTupleProto = 2

	// enum ctattr_ip
	ctaIPv4Src = 1
	ctaIPv4Dst = 2
	ctaIPv6Src = 3
	ctaIPv6Dst = 4

	// enum ctattr_l4proto
	ctaProtoNum        = 1
	ctaProtoSrcPort    = 2
	ctaProtoDstPort    = 3
	ctaProtoICMPID     = 4
	ctaProtoICMPType   = 5
	ctaProtoICMPCode   = 6
	ctaProtoICMPv6ID   = 7
	ctaProtoICMPv6Type = 8
	ctaProtoICMPv6Code = 9

	// enum ctattr_protoinfo and enum ctattr_protoinfo_tcp
	ctaProtoinfoTCP      = 1
	ctaProtoinfoTCPState = 1

	// enum ctattr_counters: 64-bit counters, and the old 32-bit ones (unused by today's
	// kernels, read all the same).
	ctaCountersPackets   = 1
	ctaCountersBytes     = 2
	ctaCounters32Packets = 3
	ctaCounters32Bytes   = 4

	// enum ip_conntrack_status
	ipsSeenReply = 1 << 1
	ipsAssured   = 1 << 2
)

// parseConn decodes m, one netlink message of ctnetlink (nlmsghdr, nfgenmsg and the
// attributes of a conntrack entry: an entry of a dump, a GET's reply or an event), into
// c, which it overwrites. It fills the fields connFrom's conversion of ti-mo/conntrack's
// Flow filled (the oracle of the tests), with the same meaning; attributes sgd does not
// read are skipped unread. It returns the message type (msgCTNew or msgCTDelete) and
// true, or false and the zero Conn for anything else: another subsystem or message
// type, a length past the end of m or below a header's, a number of the wrong size, an
// original tuple missing or without both addresses (of one family) and a protocol. It
// reads only inside m, keeps no reference to it, and never allocates.
//
// Nested attributes are read by their type whether or not the kernel set NLA_F_NESTED
// (it does since Linux 5.2; before, ctnetlink's nests had no flag).
func parseConn(m []byte, c *Conn) (typ uint8, ok bool) {
	*c = Conn{}
	if len(m) < unix.NLMSG_HDRLEN+nfgenLen {
		return 0, false
	}
	l := binary.NativeEndian.Uint32(m)
	if l < unix.NLMSG_HDRLEN+nfgenLen || uint64(l) > uint64(len(m)) {
		return 0, false
	}
	t := binary.NativeEndian.Uint16(m[4:])
	if t>>8 != unix.NFNL_SUBSYS_CTNETLINK {
		return 0, false
	}
	if typ = uint8(t); typ != msgCTNew && typ != msgCTDelete {
		return 0, false
	}
	if !parseEntry(m[unix.NLMSG_HDRLEN+nfgenLen:l], c) {
		*c = Conn{}
		return 0, false
	}
	return typ, true
}

// parseEntry reads a conntrack entry's attributes (enum ctattr_type) into c.
func parseEntry(b []byte, c *Conn) bool {
	tuple := false
	a := attrs{b: b}
	for a.next() {
		ok := true
		switch a.typ {
		case ctaTupleOrig:
			ok, _ = parseTuple(a.data, c)
			tuple = true
		case ctaTupleReply:
			// Only a hint for NAT'd entries: a malformed one makes the entry
			// unreadable, as in the original tuple, but one that is not whole (no
			// protocol, an address missing) only gives no hint; a repeated one replaces
			// the last, as in ti-mo/conntrack.
			var r Conn
			var whole bool
			c.ReplySrc, c.ReplySrcPort = netip.Addr{}, 0
			if whole, ok = parseTuple(a.data, &r); whole && r.Proto != 0 {
				c.ReplySrc, c.ReplySrcPort = r.Src, r.SrcPort
			}
		case ctaStatus:
			var s uint32
			if s, ok = be32(a.data); ok {
				c.Replied, c.Assured = s&ipsSeenReply != 0, s&ipsAssured != 0
			}
		case ctaProtoinfo:
			ok = parseProtoinfo(a.data, c)
		case ctaTimeout:
			c.Timeout, ok = be32(a.data)
		case ctaMark:
			c.Mark, ok = be32(a.data)
		case ctaID:
			c.ID, ok = be32(a.data)
		case ctaCountersOrig:
			ok = parseCounters(a.data, &c.OrigPackets, &c.OrigBytes)
		case ctaCountersReply:
			ok = parseCounters(a.data, &c.ReplyPackets, &c.ReplyBytes)
		case ctaLabels:
			c.Labels = labelsFrom(a.data)
		}
		if !ok {
			return false
		}
	}
	return tuple && !a.bad
}

// parseTuple reads a tuple (CTA_TUPLE_ORIG, CTA_TUPLE_REPLY) into c: the addresses
// (CTA_TUPLE_IP) and the protocol with its ports or, for ICMP and ICMPv6, its echo
// identifier (CTA_TUPLE_PROTO). As in ti-mo/conntrack, a repeated nest replaces the
// earlier one whole. formed is false when an attribute is malformed (a wrong size, a
// length past its nest); whole is true when, besides, it has a protocol and
// both addresses, of one family. Only then is c written.
func parseTuple(b []byte, c *Conn) (whole, formed bool) {
	var (
		src, dst           netip.Addr
		proto              uint8
		hasProto           bool
		sport, dport, echo uint16
		ok                 = true
		a                  = attrs{b: b}
	)
	for ok && a.next() {
		switch a.typ {
		case ctaTupleIP:
			src, dst = netip.Addr{}, netip.Addr{}
			ip := attrs{b: a.data}
			for ok && ip.next() {
				switch ip.typ {
				case ctaIPv4Src:
					src, ok = addr4(ip.data)
				case ctaIPv4Dst:
					dst, ok = addr4(ip.data)
				case ctaIPv6Src:
					src, ok = addr16(ip.data)
				case ctaIPv6Dst:
					dst, ok = addr16(ip.data)
				}
			}
			ok = ok && !ip.bad
		case ctaTupleProto:
			proto, hasProto, sport, dport, echo = 0, false, 0, 0, 0
			p := attrs{b: a.data}
			for ok && p.next() {
				switch p.typ {
				case ctaProtoNum:
					if ok = len(p.data) == 1; ok {
						proto, hasProto = p.data[0], true
					}
				case ctaProtoSrcPort:
					sport, ok = be16(p.data)
				case ctaProtoDstPort:
					dport, ok = be16(p.data)
				case ctaProtoICMPID, ctaProtoICMPv6ID:
					echo, ok = be16(p.data)
				case ctaProtoICMPType, ctaProtoICMPCode, ctaProtoICMPv6Type, ctaProtoICMPv6Code:
					ok = len(p.data) == 1
				}
			}
			ok = ok && !p.bad
		}
	}
	if !ok || a.bad {
		return false, false
	}
	if !hasProto || !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return false, true
	}
	c.Proto, c.Src, c.Dst, c.SrcPort, c.DstPort = proto, src, dst, sport, dport
	if ipproto.IsICMP(proto) {
		c.SrcPort, c.DstPort = echo, echo
	}
	return true, true
}

// parseProtoinfo reads CTA_PROTOINFO's TCP state (CTA_PROTOINFO_TCP >
// CTA_PROTOINFO_TCP_STATE) into c; other protocols' info is skipped.
func parseProtoinfo(b []byte, c *Conn) bool {
	a := attrs{b: b}
	for a.next() {
		if a.typ != ctaProtoinfoTCP {
			continue
		}
		tcp := attrs{b: a.data}
		for tcp.next() {
			if tcp.typ == ctaProtoinfoTCPState {
				if len(tcp.data) != 1 {
					return false
				}
				c.TCPState = tcp.data[0]
			}
		}
		if tcp.bad {
			return false
		}
	}
	return !a.bad
}

// parseCounters reads a CTA_COUNTERS_* nest's packets and bytes, 64-bit or the old
// 32-bit forms; a counter the nest does not carry is left as it was.
func parseCounters(b []byte, packets, bytes *uint64) bool {
	a := attrs{b: b}
	for a.next() {
		switch a.typ {
		case ctaCountersPackets, ctaCountersBytes:
			if len(a.data) != 8 {
				return false
			}
			n := binary.BigEndian.Uint64(a.data)
			if a.typ == ctaCountersPackets {
				*packets = n
			} else {
				*bytes = n
			}
		case ctaCounters32Packets, ctaCounters32Bytes:
			if len(a.data) != 4 {
				return false
			}
			n := uint64(binary.BigEndian.Uint32(a.data))
			if a.typ == ctaCounters32Packets {
				*packets = n
			} else {
				*bytes = n
			}
		}
	}
	return !a.bad
}

func be16(b []byte) (uint16, bool) {
	if len(b) != 2 {
		return 0, false
	}
	return binary.BigEndian.Uint16(b), true
}

func be32(b []byte) (uint32, bool) {
	if len(b) != 4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(b), true
}

func addr4(b []byte) (netip.Addr, bool) {
	if len(b) != 4 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(b)), true
}

func addr16(b []byte) (netip.Addr, bool) {
	if len(b) != 16 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom16([16]byte(b)), true
}

// attrs walks a run of netlink attributes (struct nlattr: length and type in host order,
// the payload, padding to 4 bytes), the way a bufio.Scanner walks lines:
//
//	a := attrs{b: payload}
//	for a.next() { use a.typ, a.data }
//	if a.bad { malformed }
type attrs struct {
	b    []byte // what is left
	typ  uint16 // the current attribute's type, NLA_F_NESTED and NLA_F_NET_BYTEORDER off
	data []byte // its payload (within b's array: valid as long as the message is)
	bad  bool   // the walk stopped at something that is not a whole attribute
}

// next steps to the next attribute: false at the end, or (bad) at a length below the
// header's or past the end. The last attribute may lack its padding. It is small enough
// to inline (TestInlining): inlined, parseConn takes half the time (2026-12, 2 cores).
func (a *attrs) next() bool {
	b := a.b
	if len(b) < unix.SizeofNlAttr {
		a.bad = a.bad || len(b) != 0
		return false
	}
	l := int(binary.NativeEndian.Uint16(b))
	if l < unix.SizeofNlAttr || l > len(b) {
		a.bad = true
		return false
	}
	a.typ = binary.NativeEndian.Uint16(b[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
	a.data = b[unix.SizeofNlAttr:l]
	a.b = b[min(len(b), (l+3)&^3):]
	return true
}

// nlmsgs walks the netlink messages of one datagram (netlink(7): each aligned to 4
// bytes), in place.
type nlmsgs struct {
	b     []byte // what is left
	msg   []byte // the current message, its header included
	typ   uint16 // nlmsg_type
	flags uint16 // nlmsg_flags
	seq   uint32 // nlmsg_seq
	bad   bool   // the walk stopped at something that is not a whole message
}

// next steps to the next message: false at the end of the datagram, or (bad) at a length
// below the header's or past the end.
func (s *nlmsgs) next() bool {
	b := s.b
	if len(b) < unix.NLMSG_HDRLEN {
		s.bad = s.bad || len(b) != 0
		return false
	}
	l := binary.NativeEndian.Uint32(b)
	if l < unix.NLMSG_HDRLEN || uint64(l) > uint64(len(b)) {
		s.bad = true
		return false
	}
	s.msg = b[:l]
	s.typ = binary.NativeEndian.Uint16(b[4:])
	s.flags = binary.NativeEndian.Uint16(b[6:])
	s.seq = binary.NativeEndian.Uint32(b[8:])
	s.b = b[min(uint64(len(b)), (uint64(l)+3)&^3):]
	return true
}

// errno is the error code an NLMSG_ERROR or NLMSG_DONE message carries in its first 4
// bytes (a negative errno, 0 for success); false when the message is too short to carry
// one.
func errno(msg []byte) (unix.Errno, bool) {
	if len(msg) < unix.NLMSG_HDRLEN+4 {
		return 0, false
	}
	return unix.Errno(-int32(binary.NativeEndian.Uint32(msg[unix.NLMSG_HDRLEN:]))), true
}

// recvBuffer is the size of a reader's buffer: past the largest datagram the kernel
// sends a netlink socket (a dump's are filled up to about 32 KiB:
// net/netlink/af_netlink.c caps max_recvmsg_len at SKB_WITH_OVERHEAD(32768); an event is
// one message of a few hundred bytes).
const recvBuffer = 64 << 10

// errTruncated: a datagram was longer than the reader's buffer, and its end is lost.
var errTruncated = errors.New("netlink datagram longer than the receive buffer")

// reader receives the datagrams of one netlink socket into one buffer, reused: no
// allocation per datagram. Not safe for concurrent use.
type reader struct {
	rc   syscall.RawConn
	buf  []byte
	n    int                   // the last datagram's whole length (past len(buf) when cut short)
	err  error                 // the last recvfrom's error
	recv func(fd uintptr) bool // r.recvfrom, bound once: binding it per call would allocate
}

// newReader reads c: a netlink socket (or, in tests, any datagram socket), nonblocking.
func newReader(c syscall.Conn) (*reader, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &reader{rc: rc, buf: make([]byte, recvBuffer)}
	r.recv = r.recvfrom
	return r, nil
}

// read waits for the next datagram, until the socket's read deadline, and returns it
// (valid until the next read). A datagram longer than the buffer is errTruncated with
// the part that fit; a socket error (ENOBUFS: the kernel dropped messages for want of
// room in the socket's buffer) is returned as the unix.Errno.
func (r *reader) read() ([]byte, error) {
	r.n, r.err = 0, nil
	if err := r.rc.Read(r.recv); err != nil {
		return nil, err // the deadline passed (os.ErrDeadlineExceeded), or the socket closed
	}
	if r.err != nil {
		return nil, r.err
	}
	if r.n > len(r.buf) {
		return r.buf, errTruncated
	}
	return r.buf[:r.n], nil
}

// recvfrom is rc.Read's callback: one recvfrom(2) with MSG_TRUNC, so that n is the
// datagram's whole length, and no source address (unix.Recvfrom would allocate one per
// datagram). EINTR is retried here: waiting for readiness again could wait for ever
// with a datagram already queued. It returns false for EAGAIN, to wait.
func (r *reader) recvfrom(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVFROM, fd,
			uintptr(unsafe.Pointer(&r.buf[0])), uintptr(len(r.buf)), unix.MSG_TRUNC, 0, 0) // no address
		switch e {
		case 0:
			r.n, r.err = int(n), nil
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			r.err = e
			return true
		}
	}
}
