package offload

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"go.uber.org/zap"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/sgd-firewall/sgd/internal/ipproto"
)

// ICMP echo reply types (RFC 792; RFC 4443 section 4.2): the reply direction's type of
// an echo entry, which Lookup needs to find one by its reply tuple.
const (
	echoReply   = 0
	echoReplyV6 = 129
)

// eventBuffer is the receive buffer asked for the destroy-event socket: room for tens of
// thousands of events while the listener is busy (root may exceed net.core.rmem_max).
const eventBuffer = 16 << 20

// Kernel talks to the conntrack table of one network namespace: the one Open was called
// in. One per daemon; its methods are safe for concurrent use.
type Kernel struct {
	log *zap.Logger
	ns  int // fd of the namespace, for every socket the Kernel opens

	mu        sync.Mutex    // req, one request at a time
	req       *netlink.Conn // Lookup and Delete, read by hand (request); nil once closed
	reqReader *reader       // req's datagrams

	dumped atomic.Int64 // the number of entries the last Dump returned

	eventBuffer int // the destroy-event socket's receive buffer (tests make it small)
}

// Open returns a Kernel for the network namespace of the calling thread. log may be nil.
func Open(ctx context.Context, log *zap.Logger) (*Kernel, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	ns, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("offload: open this thread's network namespace: %w", err)
	}
	k := &Kernel{log: log, ns: ns, eventBuffer: eventBuffer}
	if k.req, err = k.dial(); err != nil {
		unix.Close(ns)
		return nil, err
	}
	if k.reqReader, err = newReader(k.req); err != nil {
		k.req.Close()
		unix.Close(ns)
		return nil, fmt.Errorf("offload: netfilter netlink socket: %w", err)
	}
	return k, nil
}

// Close closes the Kernel's sockets; a Listen still running ends (its context's end is
// the clean way).
func (k *Kernel) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.req == nil {
		return nil
	}
	err := k.req.Close()
	k.req, k.reqReader = nil, nil
	unix.Close(k.ns)
	return err
}

// dial opens a netlink netfilter socket in the Kernel's namespace.
func (k *Kernel) dial() (*netlink.Conn, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: k.ns})
	if err != nil {
		return nil, fmt.Errorf("offload: open netfilter netlink socket: %w", err)
	}
	return c, nil
}

// Listen delivers the destruction of every entry sgd offloaded (its connection mark has
// Mark: the destroy event carries the mark, not the labels) to ended, with the entry's
// final counters and an empty Labels, until ctx ends; then it returns nil. When the
// kernel drops events because the socket's buffer was full (ENOBUFS), or a datagram was
// longer than Listen's buffer (never seen: an event is a few hundred bytes), lost is
// called and listening goes on: some destructions were missed, so the caller should
// resync (Dump). ended and lost run on Listen's goroutine, one at a time: keep them
// short, or events pile up and get lost. An entry is reported only if it was created
// while nf_conntrack_events was on (Sysctls). Another error ends Listen and is returned.
// Listen reads its socket into one buffer and allocates nothing per event; it wakes at
// most about every listenCoalesce, taking what gathered meanwhile in a row, so an event
// reaches ended up to that late.
func (k *Kernel) Listen(ctx context.Context, ended func(Conn), lost func(error)) error {
	c, err := k.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	if err := joinDestroys(c); err != nil {
		return err
	}
	k.growBuffer(c)
	r, err := newReader(c)
	if err != nil {
		return fmt.Errorf("offload: conntrack destroy events: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Now()) })
	defer stop()
	var conn Conn
	last := time.Now()
	for {
		b, err := r.read()
		if ctx.Err() != nil {
			return nil
		}
		// The kernel sends one event a datagram, and a wait that ends wakes this
		// goroutine for it: after one, let the next ones pile up in the socket's
		// buffer for a moment and read them in a row (an end is final, and nothing
		// needs it sooner: a packet of a new flow on the same tuple reaches the queue
		// anyway).
		if time.Since(last) > listenWaited {
			time.Sleep(listenCoalesce) // ctx's end sets the deadline: the next read returns
		}
		if errors.Is(err, unix.ENOBUFS) || errors.Is(err, errTruncated) {
			lost(fmt.Errorf("offload: conntrack destroy events lost: %w", err))
			continue
		}
		if err != nil {
			return fmt.Errorf("offload: receive conntrack events: %w", err)
		}
		// One event a datagram, as the kernel sends them; a message that is not a
		// conntrack destroy event is skipped (nothing else is subscribed).
		for ms := (nlmsgs{b: b}); ms.next(); {
			if typ, ok := parseConn(ms.msg, &conn); ok && typ == msgCTDelete && conn.Mark&Mark != 0 {
				ended(conn)
			}
		}
		last = time.Now()
	}
}

// joinDestroys subscribes c to the kernel's conntrack destroy events, filtered in the
// kernel (destroyFilter) before the subscription, so that no other entry's end reaches it.
func joinDestroys(c *netlink.Conn) error {
	if err := c.SetBPF(destroyFilter); err != nil {
		return fmt.Errorf("offload: filter conntrack destroy events: %w", err)
	}
	if err := c.JoinGroup(uint32(netfilter.GroupCTDestroy)); err != nil {
		return fmt.Errorf("offload: join conntrack destroy events: %w", err)
	}
	return nil
}

// destroyFilter is the socket filter of Listen's socket: classic BPF that keeps an event
// only when its CTA_MARK has Mark set, so that the ends of the host's other connections
// (loopback, other interfaces, a previous run's, unlabelled) never wake sgd. The kernel
// finds the attribute itself (SKF_AD_NLATTR, which walks the attributes after the
// netlink and nfgen headers); an entry whose mark is 0 has no CTA_MARK in its event.
// Listen checks the mark again on what arrives.
var destroyFilter = func() []bpf.RawInstruction {
	const keep, drop = 0xffffffff, 0
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadConstant{Dst: bpf.RegA, Val: unix.NLMSG_HDRLEN + nfgenLen}, // the first attribute
		bpf.LoadConstant{Dst: bpf.RegX, Val: ctaMark},
		bpf.LoadExtension{Num: bpf.ExtNetlinkAttr},           // A = CTA_MARK's offset, 0 if none
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipTrue: 4}, // no mark: drop
		bpf.TAX{},                         // X = the attribute's offset
		bpf.LoadIndirect{Off: 4, Size: 4}, // A = the mark (big-endian, as BPF loads)
		bpf.JumpIf{Cond: bpf.JumpBitsNotSet, Val: Mark, SkipTrue: 1}, // not sgd's: drop
		bpf.RetConstant{Val: keep},
		bpf.RetConstant{Val: drop},
	})
	if err != nil {
		panic("offload: destroyFilter does not assemble: " + err.Error()) // a constant program
	}
	return prog
}()

// listenCoalesce is how long Listen lets destroy events gather after a wait for one;
// listenWaited tells a read that waited from one that found a datagram queued.
const (
	listenCoalesce = 10 * time.Millisecond
	listenWaited   = 50 * time.Microsecond
)

// growBuffer asks for a receive buffer of eventBuffer bytes, past net.core.rmem_max when
// the process may (CAP_NET_ADMIN), else as much as the limit allows.
func (k *Kernel) growBuffer(c *netlink.Conn) {
	var serr error
	if rc, err := c.SyscallConn(); err == nil {
		err = rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, k.eventBuffer)
		})
		if err == nil && serr == nil {
			return
		}
	}
	if err := c.SetReadBuffer(k.eventBuffer); err != nil {
		k.log.Warn("conntrack destroy events: could not grow the socket's receive buffer", zap.Error(err))
	}
}

// Dump returns the live entries sgd offloaded (Mark in the connection mark, and any of
// sgd's labels), with their counters and remaining timeouts. Unconfirmed entries (whose
// first packet has not finished its way through the hooks) are not in the kernel's table
// and not in the dump. A dump whose datagrams cannot be read whole is an error; an
// entry whose message does not parse (parseConn; never seen from a kernel) is left out.
func (k *Kernel) Dump(ctx context.Context) ([]Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := k.dial()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	// The kernel sends only the entries with Mark in their connection mark.
	ae := netfilter.NewAttributeEncoder()
	ae.Uint32(ctaMark, Mark)
	ae.Uint32(ctaMarkMask, Mark)
	req, err := netfilter.EncodeNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysCTNetlink,
		MessageType: netfilter.MessageType(msgCTGet),
		Family:      netfilter.ProtoUnspec, // both families
		Flags:       netlink.Request | netlink.Dump,
	}, ae)
	if err != nil {
		return nil, err
	}
	sent, err := c.Send(req)
	if err != nil {
		return nil, fmt.Errorf("offload: dump conntrack: %w", err)
	}
	r, err := newReader(c)
	if err != nil {
		return nil, fmt.Errorf("offload: dump conntrack: %w", err)
	}
	// Stream the dump: only sgd's entries are kept (the table may hold a million). The
	// slice starts at the last dump's length: between polls the table changes little.
	out := make([]Conn, 0, k.dumped.Load())
	var conn Conn
	for {
		b, err := r.read()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("offload: dump conntrack: %w", err)
		}
		ms := nlmsgs{b: b}
		for ms.next() {
			if ms.seq != sent.Header.Sequence {
				continue // not this dump's
			}
			switch ms.typ {
			case unix.NLMSG_DONE, unix.NLMSG_ERROR:
				// The end: NLMSG_DONE carries the dump's error code (0 when it is whole);
				// NLMSG_ERROR one that ended it early.
				if e, ok := errno(ms.msg); ok && e != 0 {
					return nil, fmt.Errorf("offload: dump conntrack: %w", e)
				}
				k.dumped.Store(int64(len(out)))
				return out, nil
			}
			if _, ok := parseConn(ms.msg, &conn); ok && conn.Labels.Any() {
				out = append(out, conn)
			}
			if ms.flags&unix.NLM_F_MULTI == 0 {
				k.dumped.Store(int64(len(out)))
				return out, nil // a lone reply, not a dump's part
			}
		}
		if ms.bad {
			return nil, errors.New("offload: dump conntrack: malformed netlink datagram")
		}
	}
}

// Lookup finds the kernel's entry for a flow by its original or its reply tuple (for
// ICMP echo, sport and dport are the echo identifier), whether or not sgd offloaded it.
// An entry whose first packet is still on its way through the hooks (in sgd's queue, for
// one) is not confirmed, not in the kernel's table yet, and not found.
func (k *Kernel) Lookup(ctx context.Context, proto uint8, src, dst netip.Addr, sport, dport uint16) (Conn, bool, error) {
	if err := ctx.Err(); err != nil {
		return Conn{}, false, err
	}
	src, dst = src.Unmap(), dst.Unmap()
	if src.Is4() != dst.Is4() {
		return Conn{}, false, fmt.Errorf("offload: lookup %s -> %s: mixed address families", src, dst)
	}
	tuples := []conntrack.Tuple{tuple(proto, src, dst, sport, dport, false)}
	if ipproto.IsICMP(proto) {
		// An echo entry's reply tuple has the reply's type: try it as well.
		tuples = append(tuples, tuple(proto, src, dst, sport, dport, true))
	}
	for _, t := range tuples {
		ae := netfilter.NewAttributeEncoder()
		encodeTuple(ae, ctaTupleOrig, t)
		c, ok, err := k.request(ctx, msgCTGet, t.IP.SourceAddress.Is6(), ae)
		if errors.Is(err, unix.ENOENT) || (err == nil && !ok) {
			continue
		}
		if err != nil {
			return Conn{}, false, fmt.Errorf("offload: look up %s: %w", t, err)
		}
		return c, true, nil
	}
	return Conn{}, false, nil
}

// request sends one ctnetlink request (typ: IPCTNL_MSG_CT_*) with an acknowledgement
// asked for, and reads the replies up to it: the entry of a GET's reply and true, or
// false. Read by hand: Linux 6.18 flags a GET's one reply message NLM_F_MULTI with no
// NLMSG_DONE after it, and the netlink library (and ti-mo/conntrack's Get over it) waits
// for that DONE for ever. (ti-mo/conntrack's Delete, for its part, sends an IPv6 tuple
// as IPv4 unless the reply tuple is filled in, and no CTA_ID.)
func (k *Kernel) request(ctx context.Context, typ uint8, ipv6 bool, ae *netlink.AttributeEncoder) (Conn, bool, error) {
	family := netfilter.ProtoIPv4
	if ipv6 {
		family = netfilter.ProtoIPv6
	}
	req, err := netfilter.EncodeNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysCTNetlink,
		MessageType: netfilter.MessageType(typ),
		Family:      family,
		Flags:       netlink.Request | netlink.Acknowledge,
	}, ae)
	if err != nil {
		return Conn{}, false, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.req == nil {
		return Conn{}, false, errors.New("offload: kernel closed")
	}
	deadline := time.Now().Add(5 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = k.req.SetDeadline(deadline)
	sent, err := k.req.Send(req)
	if err != nil {
		return Conn{}, false, err
	}
	var (
		conn  Conn
		found bool
	)
	for {
		b, err := k.reqReader.read()
		if err != nil {
			return Conn{}, false, err
		}
		ms := nlmsgs{b: b}
		for ms.next() {
			if ms.seq != sent.Header.Sequence {
				continue // a late reply to an earlier request
			}
			if ms.typ == unix.NLMSG_ERROR {
				e, ok := errno(ms.msg)
				if !ok {
					return Conn{}, false, errors.New("offload: short netlink error")
				}
				if e != 0 {
					return Conn{}, false, e
				}
				return conn, found, nil
			}
			var c Conn
			if _, ok := parseConn(ms.msg, &c); ok {
				conn, found = c, true
			}
		}
		if ms.bad {
			return Conn{}, false, errors.New("offload: malformed netlink datagram")
		}
	}
}

// encodeTuple writes a conntrack tuple (CTA_TUPLE_*: nested CTA_TUPLE_IP and
// CTA_TUPLE_PROTO).
func encodeTuple(ae *netlink.AttributeEncoder, typ uint16, t conntrack.Tuple) {
	ae.Nested(typ, func(ae *netlink.AttributeEncoder) error {
		ae.Nested(ctaTupleIP, func(ae *netlink.AttributeEncoder) error {
			if t.IP.SourceAddress.Is4() {
				ae.Bytes(ctaIPv4Src, t.IP.SourceAddress.AsSlice())
				ae.Bytes(ctaIPv4Dst, t.IP.DestinationAddress.AsSlice())
			} else {
				ae.Bytes(ctaIPv6Src, t.IP.SourceAddress.AsSlice())
				ae.Bytes(ctaIPv6Dst, t.IP.DestinationAddress.AsSlice())
			}
			return nil
		})
		ae.Nested(ctaTupleProto, func(ae *netlink.AttributeEncoder) error {
			p := t.Proto
			ae.Uint8(ctaProtoNum, p.Protocol)
			switch p.Protocol {
			case ipproto.ICMP:
				ae.Uint16(ctaProtoICMPID, p.ICMPID)
				ae.Uint8(ctaProtoICMPType, p.ICMPType)
				ae.Uint8(ctaProtoICMPCode, p.ICMPCode)
			case ipproto.ICMPv6:
				ae.Uint16(ctaProtoICMPv6ID, p.ICMPID)
				ae.Uint8(ctaProtoICMPv6Type, p.ICMPType)
				ae.Uint8(ctaProtoICMPv6Code, p.ICMPCode)
			default:
				ae.Uint16(ctaProtoSrcPort, p.SourcePort)
				ae.Uint16(ctaProtoDstPort, p.DestinationPort)
			}
			return nil
		})
		return nil
	})
}

// tuple builds a conntrack tuple; for ICMP, an echo request's, or with reply an echo
// reply's.
func tuple(proto uint8, src, dst netip.Addr, sport, dport uint16, reply bool) conntrack.Tuple {
	t := conntrack.Tuple{
		IP:    conntrack.IPTuple{SourceAddress: src, DestinationAddress: dst},
		Proto: conntrack.ProtoTuple{Protocol: proto, SourcePort: sport, DestinationPort: dport},
	}
	switch proto {
	case ipproto.ICMP:
		t.Proto.ICMPType, t.Proto.ICMPID = ipproto.EchoRequest, sport
		if reply {
			t.Proto.ICMPType = echoReply
		}
	case ipproto.ICMPv6:
		t.Proto.ICMPType, t.Proto.ICMPID = ipproto.EchoRequestV6, sport
		if reply {
			t.Proto.ICMPType = echoReplyV6
		}
	}
	return t
}

// Delete removes the kernel's entry c (matched by its original tuple and its ID, so a
// newer entry of the same tuple is left alone). The next packet of the flow creates a new
// entry, unlabelled: it goes to sgd's queue again. An entry already gone is not an error.
func (k *Kernel) Delete(ctx context.Context, c Conn) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ae := netfilter.NewAttributeEncoder()
	encodeTuple(ae, ctaTupleOrig, tuple(c.Proto, c.Src.Unmap(), c.Dst.Unmap(), c.SrcPort, c.DstPort, false))
	ae.Uint32(ctaID, c.ID)
	if _, _, err := k.request(ctx, msgCTDelete, c.Src.Unmap().Is6(), ae); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("offload: delete %v: %w", c, err)
	}
	return nil
}

// Unlabel takes sgd's labels (bits 1..MaxZone) and Mark off the kernel's entry c, in
// place: the entry, its NAT and the user's own label and mark bits stay, and its next
// packet at an sgd device goes to sgd's queue again. sgd does it at start to every entry
// a previous run (or a packet that bypassed the queue carrying Mark) left offloaded: a
// label bit means a zone of the run that set it, and zones are numbered afresh. An entry
// already gone is not an error.
func (k *Kernel) Unlabel(ctx context.Context, c Conn) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ae := netfilter.NewAttributeEncoder()
	encodeTuple(ae, ctaTupleOrig, tuple(c.Proto, c.Src.Unmap(), c.Dst.Unmap(), c.SrcPort, c.DstPort, false))
	// CTA_MARK with CTA_MARK_MASK: the new mark is (old &^ mask) ^ (mark & mask).
	ae.Uint32(ctaMark, 0)
	ae.Uint32(ctaMarkMask, Mark)
	// CTA_LABELS with CTA_LABELS_MASK: the masked bits take the new value, zero.
	var mask Labels
	for z := uint16(1); z <= MaxZone; z++ {
		mask = mask.With(z)
	}
	ae.Bytes(ctaLabels, make([]byte, 16))
	ae.Bytes(ctaLabelsMask, labelBytes(mask))
	if _, _, err := k.request(ctx, msgCTNew /* an update of an existing entry */, c.Src.Unmap().Is6(), ae); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("offload: unlabel %v: %w", c, err)
	}
	return nil
}

// labelBytes is l as CTA_LABELS carries it (labelsFrom's inverse).
func labelBytes(l Labels) []byte {
	b := make([]byte, 16)
	binary.NativeEndian.PutUint64(b[0:], l[0])
	binary.NativeEndian.PutUint64(b[8:], l[1])
	return b
}
