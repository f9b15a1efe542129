package nfqueue

import (
	"encoding/binary"
	"fmt"
	"syscall"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nfnetlink_queue wire format (include/uapi/linux/netfilter/nfnetlink_queue.h). sgd talks
// to the queue itself instead of through go-nfqueue because the packet path must not
// allocate and must batch verdicts: go-nfqueue's hook sees one packet at a time (it cannot
// know where a burst ends) and allocates several objects per packet (measured 2026-11-22:
// its accept-all consumer made 0.55× the kernel path's TCP throughput here).
const (
	nfnlSubsysQueue   = 3
	nfqnlMsgPacket    = 0
	nfqnlMsgVerdict   = 1
	nfqnlMsgConfig    = 2
	nfqnlMsgVerdictBt = 3

	nfqaPacketHdr  = 1
	nfqaVerdictHdr = 2
	nfqaMark       = 3
	nfqaIfInDev    = 5
	nfqaIfOutDev   = 6
	nfqaPhysInDev  = 7
	nfqaPhysOutDev = 8
	nfqaPayload    = 10

	nfqaCfgCmd    = 1
	nfqaCfgParams = 2
	nfqaCfgMaxLen = 3
	nfqaCfgMask   = 4
	nfqaCfgFlags  = 5

	cfgCmdBind   = 1
	cfgCmdUnbind = 2

	copyPacket = 2

	cfgFlagGSO = 1 << 2

	nfDrop   = 0
	nfAccept = 1

	nlmsgHdrLen = 16
	nfgenHdrLen = 4
)

// nfq is one bound queue: a netlink socket, and the buffers its reader reuses.
type nfq struct {
	num  uint16
	conn *netlink.Conn
	raw  syscall.RawConn

	slots [][]byte // receive buffers, one packet message each
	iov   []unix.Iovec
	mm    []mmsghdr
	out   []byte // verdict messages of one burst, sent in one sendto

	// The raw socket's callbacks and what they pass back, made once (Open) so that a
	// burst's receive and send allocate nothing: a closure made per call escapes.
	recvFn, sendFn func(fd uintptr) bool
	lens           []int  // recvFn's: the length of each message received
	n              int    // recvFn's: how many
	send1          []byte // sendFn's datagram
	sysErr         error  // either's error from the system call
}

const (
	burstMax = 64   // packets judged before their verdicts go out
	slotSize = 4096 // one packet message: copy range (≤ 1024) + attributes
)

func openNFQ(num uint16, qc Config) (*nfq, error) {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	q := &nfq{num: num, conn: conn}
	fail := func(step string, err error) (*nfq, error) {
		conn.Close()
		return nil, fmt.Errorf("nfqueue %d: %s: %w", num, step, err)
	}
	// The kernel would rather drop (counted in nfnetlink_queue) than fail the socket.
	if err := conn.SetOption(netlink.NoENOBUFS, true); err != nil {
		return fail("NETLINK_NO_ENOBUFS", err)
	}
	if q.raw, err = conn.SyscallConn(); err != nil {
		return fail("raw socket", err)
	}
	if qc.ReadBuffer > 0 {
		var serr error
		_ = q.raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, qc.ReadBuffer)
		})
		if serr != nil {
			_ = conn.SetReadBuffer(qc.ReadBuffer)
		}
	}
	params := make([]byte, 5)
	binary.BigEndian.PutUint32(params, qc.CopyRange)
	params[4] = copyPacket
	// GSO only. Not NFQA_CFG_F_FAIL_OPEN: it accepts unjudged packets whenever the queue
	// overflows, which a flood of denied packets could force. fail_open is the iptables
	// rule's --queue-bypass: packets pass only while no reader is bound.
	flags := uint32(cfgFlagGSO)
	for _, step := range []struct {
		name  string
		attrs []netlink.Attribute
	}{
		{"bind (is another sgd, or another program, using this queue?)", []netlink.Attribute{{Type: nfqaCfgCmd, Data: []byte{cfgCmdBind, 0, 0, 0}}}},
		{"copy mode", []netlink.Attribute{{Type: nfqaCfgParams, Data: params}}},
		{"queue length", []netlink.Attribute{{Type: nfqaCfgMaxLen, Data: be32(qc.MaxQueueLen)}}},
		{"flags (GSO)", []netlink.Attribute{{Type: nfqaCfgMask, Data: be32(flags)}, {Type: nfqaCfgFlags, Data: be32(flags)}}},
	} {
		if err := q.config(step.attrs); err != nil {
			return fail(step.name, err)
		}
	}
	q.buffers()
	return q, nil
}

// buffers makes q's receive slots, its verdict buffer and its socket callbacks.
func (q *nfq) buffers() {
	q.slots = make([][]byte, burstMax)
	q.iov = make([]unix.Iovec, burstMax)
	q.mm = make([]mmsghdr, burstMax)
	for i := range q.slots {
		q.slots[i] = make([]byte, slotSize)
		q.iov[i].Base = &q.slots[i][0]
		q.iov[i].SetLen(slotSize)
		q.mm[i].hdr.Iov = &q.iov[i]
		q.mm[i].hdr.SetIovlen(1)
	}
	q.out = make([]byte, 0, burstMax*40)
	q.recvFn, q.sendFn = q.recvmmsg, q.sendto
}

func be32(v uint32) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, v)
	return b
}

func (q *nfq) config(attrs []netlink.Attribute) error {
	ad, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return err
	}
	data := append([]byte{unix.AF_UNSPEC, 0, byte(q.num >> 8), byte(q.num)}, ad...)
	_, err = q.conn.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(nfnlSubsysQueue<<8 | nfqnlMsgConfig), Flags: netlink.Request | netlink.Acknowledge},
		Data:   data,
	})
	return err
}

func (q *nfq) close() {
	_ = q.config([]netlink.Attribute{{Type: nfqaCfgCmd, Data: []byte{cfgCmdUnbind, 0, 0, 0}}})
	q.conn.Close()
}

// parsePacket reads a NFQNL_MSG_PACKET message without allocating; ok is false for any
// other or malformed message.
func parsePacket(b []byte, m *Packet) (ok bool) {
	if len(b) < nlmsgHdrLen+nfgenHdrLen {
		return false
	}
	l := int(binary.NativeEndian.Uint32(b))
	typ := binary.NativeEndian.Uint16(b[4:])
	if l < nlmsgHdrLen+nfgenHdrLen || l > len(b) || typ != nfnlSubsysQueue<<8|nfqnlMsgPacket {
		return false
	}
	*m = Packet{}
	seenID := false
	a := b[nlmsgHdrLen+nfgenHdrLen : l]
	for len(a) >= 4 {
		al := int(binary.NativeEndian.Uint16(a))
		at := binary.NativeEndian.Uint16(a[2:]) & 0x3fff // strip NLA_F_NESTED / byte-order flags
		if al < 4 || al > len(a) {
			// Corrupt attributes: with the id known, the packet is judged without a
			// payload (a counted malformed drop) rather than left to a batch accept.
			m.Payload = nil
			return seenID
		}
		v := a[4:al]
		var u32 *uint32 // the field a 32-bit attribute goes to
		switch at {
		case nfqaPacketHdr:
			u32, seenID = &m.ID, seenID || len(v) >= 4
		case nfqaIfInDev:
			u32 = &m.InDev
		case nfqaIfOutDev:
			u32 = &m.OutDev
		case nfqaPhysInDev:
			u32 = &m.PhysIn
		case nfqaPhysOutDev:
			u32 = &m.PhysOut
		case nfqaMark:
			u32 = &m.Mark
		case nfqaPayload:
			m.Payload = v
		}
		if u32 != nil && len(v) >= 4 {
			*u32 = binary.BigEndian.Uint32(v) // the packet header starts with the id
		}
		adv := (al + 3) &^ 3
		if adv > len(a) {
			break
		}
		a = a[adv:]
	}
	return seenID
}

// appendVerdict appends one verdict message; batch makes it a NFQNL_MSG_VERDICT_BATCH that
// applies to every queued packet with an id up to id. A nil mark leaves the packet's mark
// alone; a non-nil one replaces it (with *mark, which may be 0).
func (q *nfq) appendVerdict(b []byte, id uint32, verdict uint32, mark *uint32, batch bool) []byte {
	typ := uint16(nfnlSubsysQueue<<8 | nfqnlMsgVerdict)
	if batch {
		typ = nfnlSubsysQueue<<8 | nfqnlMsgVerdictBt
	}
	n := nlmsgHdrLen + nfgenHdrLen + 12
	if mark != nil {
		n += 8
	}
	start := len(b)
	b = append(b, make([]byte, n)...)[:start+n]
	m := b[start:]
	binary.NativeEndian.PutUint32(m[0:], uint32(n))
	binary.NativeEndian.PutUint16(m[4:], typ)
	binary.NativeEndian.PutUint16(m[6:], unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(m[8:], 0)  // sequence
	binary.NativeEndian.PutUint32(m[12:], 0) // port id: the kernel
	m[16], m[17] = unix.AF_UNSPEC, 0
	binary.BigEndian.PutUint16(m[18:], q.num)
	a := m[20:]
	binary.NativeEndian.PutUint16(a[0:], 12) // nla_len
	binary.NativeEndian.PutUint16(a[2:], nfqaVerdictHdr)
	binary.BigEndian.PutUint32(a[4:], verdict)
	binary.BigEndian.PutUint32(a[8:], id)
	if mark != nil {
		binary.NativeEndian.PutUint16(a[12:], 8)
		binary.NativeEndian.PutUint16(a[14:], nfqaMark)
		binary.BigEndian.PutUint32(a[16:], *mark)
	}
	return b
}

// mmsghdr is struct mmsghdr for recvmmsg(2): x/sys/unix has no type for it. Msghdr holds
// pointers, so Go aligns the struct as C does (64 bytes on 64-bit, 32 on 32-bit).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// recvBurst fills slots with the messages waiting on the socket, in one recvmmsg: it blocks
// (in the Go poller) until at least one arrives, then takes what is already there, up to
// burstMax.
func (q *nfq) recvBurst(lens []int) (int, error) {
	q.lens, q.n, q.sysErr = lens, 0, nil
	err := q.raw.Read(q.recvFn)
	q.lens = nil
	if err != nil {
		return q.n, err
	}
	return q.n, q.sysErr
}

// recvmmsg is recvBurst's callback: false while nothing is waiting.
func (q *nfq) recvmmsg(fd uintptr) bool {
	for {
		r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&q.mm[0])), uintptr(len(q.mm)), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			q.n = int(r)
			for i := range q.n {
				q.lens[i] = int(q.mm[i].n)
			}
			return true
		case unix.EAGAIN:
			return false // nothing yet: let the poller wait
		case unix.EINTR, unix.ENOBUFS:
			continue // ENOBUFS: messages were lost; carry on with what comes
		}
		q.sysErr = errno
		return true
	}
}

// send writes the burst's verdicts in one datagram (netlink processes every message in it).
// It tries a few times: a lost datagram would leave its drops to the next batch accept.
func (q *nfq) send(b []byte) error {
	var err error
	for range 3 {
		if err = q.sendOnce(b); err == nil {
			return nil
		}
	}
	return err
}

func (q *nfq) sendOnce(b []byte) error {
	q.send1, q.sysErr = b, nil
	err := q.raw.Write(q.sendFn)
	q.send1 = nil
	if err != nil {
		return err
	}
	return q.sysErr
}

// sendto is sendOnce's callback: false while the socket cannot take the datagram.
func (q *nfq) sendto(fd uintptr) bool {
	for {
		b := q.send1
		_, _, errno := unix.Syscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0, 0, 0)
		switch errno {
		case 0:
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		q.sysErr = errno
		return true
	}
}
