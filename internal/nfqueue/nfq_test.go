package nfqueue

import (
	"encoding/binary"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// packetMessage builds a NFQNL_MSG_PACKET message as the kernel sends it.
func packetMessage(id, in, out uint32, payload []byte) []byte {
	return packetMessagePhys(id, in, out, 0, 0, payload)
}

// packetMessagePhys is packetMessage with the bridge ports of a bridged packet.
func packetMessagePhys(id, in, out, physIn, physOut uint32, payload []byte) []byte {
	attr := func(typ uint16, v []byte) []byte {
		a := make([]byte, 4, 4+len(v)+3)
		binary.NativeEndian.PutUint16(a[0:], uint16(4+len(v))) // nla_len (unpadded)
		binary.NativeEndian.PutUint16(a[2:], typ)              // nla_type
		a = append(a, v...)
		for len(a)%4 != 0 {
			a = append(a, 0) // padding to 4 bytes
		}
		return a
	}
	hdr := make([]byte, 7)
	binary.BigEndian.PutUint32(hdr, id) // packet id, then hw protocol and hook
	var body []byte
	body = append(body, unix.AF_INET, 0, 0, 100) // nfgenmsg: family, version, queue 100
	body = append(body, attr(nfqaPacketHdr, hdr)...)
	body = append(body, attr(nfqaMark, binary.BigEndian.AppendUint32(nil, 0xca6c))...) // an application's fwmark
	if in != 0 {
		body = append(body, attr(nfqaIfInDev, binary.BigEndian.AppendUint32(nil, in))...)
	}
	if out != 0 {
		body = append(body, attr(nfqaIfOutDev, binary.BigEndian.AppendUint32(nil, out))...)
	}
	if physIn != 0 {
		body = append(body, attr(nfqaPhysInDev, binary.BigEndian.AppendUint32(nil, physIn))...)
	}
	if physOut != 0 {
		body = append(body, attr(nfqaPhysOutDev, binary.BigEndian.AppendUint32(nil, physOut))...)
	}
	body = append(body, attr(nfqaPayload, payload)...)
	msg := make([]byte, nlmsgHdrLen, nlmsgHdrLen+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(nlmsgHdrLen+len(body)))     // nlmsg_len
	binary.NativeEndian.PutUint16(msg[4:], nfnlSubsysQueue<<8|nfqnlMsgPacket) // nlmsg_type
	return append(msg, body...)
}

func TestParsePacket(t *testing.T) {
	payload := []byte("\x45\x00\x00\x28 an IPv4 header and what follows it, as queued")
	var m Packet
	if !parsePacket(packetMessage(7, 2, 0, payload), &m) || m.ID != 7 || m.InDev != 2 || m.OutDev != 0 || m.Mark != 0xca6c || string(m.Payload) != string(payload) {
		t.Fatalf("parsePacket = %+v; want id 7 in 2 and the payload", m)
	}
	if !parsePacket(packetMessage(8, 0, 3, payload[:21]), &m) || m.ID != 8 || m.InDev != 0 || m.OutDev != 3 || len(m.Payload) != 21 {
		t.Fatalf("parsePacket (odd payload) = %+v", m)
	}
	// A bridged packet in FORWARD: in and out are the bridge, the ports are the physdevs.
	if !parsePacket(packetMessagePhys(10, 4, 4, 5, 6, payload), &m) || m.InDev != 4 || m.OutDev != 4 || m.PhysIn != 5 || m.PhysOut != 6 || string(m.Payload) != string(payload) {
		t.Fatalf("parsePacket (bridged) = %+v; want in/out 4, ports 5 and 6", m)
	}
	good := packetMessage(9, 2, 0, payload)
	for _, bad := range [][]byte{nil, good[:10], good[:nlmsgHdrLen+nfgenHdrLen+2]} {
		if parsePacket(bad, &m) && m.ID == 9 && len(m.Payload) == len(payload) {
			t.Errorf("parsePacket(truncated %d bytes) accepted the whole packet", len(bad))
		}
	}
	// A corrupt attribute after the id: the packet is still reported, without payload, so
	// that it is judged malformed and dropped rather than swept into a batch accept.
	corrupt := append([]byte(nil), good...)
	binary.NativeEndian.PutUint16(corrupt[nlmsgHdrLen+nfgenHdrLen+12+8:], 0xfff0) // third attribute's nla_len
	if !parsePacket(corrupt, &m) || m.ID != 9 || m.Payload != nil {
		t.Errorf("parsePacket(corrupt attributes) = %+v; want id 9 and no payload", m)
	}
	notPacket := append([]byte(nil), good...)
	binary.NativeEndian.PutUint16(notPacket[4:], unix.NLMSG_ERROR)
	if parsePacket(notPacket, &m) {
		t.Error("parsePacket accepted a netlink error message")
	}
}

func TestAppendVerdict(t *testing.T) {
	q := &nfq{num: 0x1234}
	mark := uint32(0x400000)
	b := q.appendVerdict(nil, 5, nfDrop, nil, false)
	b = q.appendVerdict(b, 6, nfAccept, &mark, false)
	b = q.appendVerdict(b, 9, nfAccept, nil, true)
	type want struct {
		typ     uint16
		verdict uint32
		id      uint32
		mark    uint32
	}
	for i, w := range []want{
		{nfnlSubsysQueue<<8 | nfqnlMsgVerdict, nfDrop, 5, 0},
		{nfnlSubsysQueue<<8 | nfqnlMsgVerdict, nfAccept, 6, 0x400000},
		{nfnlSubsysQueue<<8 | nfqnlMsgVerdictBt, nfAccept, 9, 0},
	} {
		l := int(binary.NativeEndian.Uint32(b))
		m := b[:l]
		b = b[l:]
		if got := binary.NativeEndian.Uint16(m[4:]); got != w.typ {
			t.Errorf("message %d type = %#x; want %#x", i, got, w.typ)
		}
		if got := binary.BigEndian.Uint16(m[18:]); got != 0x1234 {
			t.Errorf("message %d queue = %#x; want 0x1234", i, got)
		}
		if v, id := binary.BigEndian.Uint32(m[24:]), binary.BigEndian.Uint32(m[28:]); v != w.verdict || id != w.id {
			t.Errorf("message %d verdict/id = %d/%d; want %d/%d", i, v, id, w.verdict, w.id)
		}
		var mark uint32
		if l > 32 && binary.NativeEndian.Uint16(m[34:]) == nfqaMark {
			mark = binary.BigEndian.Uint32(m[36:])
		}
		if mark != w.mark {
			t.Errorf("message %d mark = %#x; want %#x", i, mark, w.mark)
		}
	}
	if len(b) != 0 {
		t.Errorf("%d bytes left after the three messages", len(b))
	}
	if n := testing.AllocsPerRun(100, func() {
		q.out = q.appendVerdict(q.out[:0], 1, nfAccept, nil, true)
	}); n != 0 {
		t.Errorf("appendVerdict allocates %v times; want 0", n)
	}
}

// TestSocketCallsNoAllocs: a burst's receive (recvmmsg) and its verdicts' send (sendto)
// allocate nothing, whichever way the poller goes. A datagram socket pair stands in for
// the netlink socket: the calls are the same.
func TestSocketCallsNoAllocs(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours, peer := os.NewFile(uintptr(fds[0]), "ours"), os.NewFile(uintptr(fds[1]), "peer")
	defer ours.Close()
	defer peer.Close()
	q := &nfq{}
	if q.raw, err = ours.SyscallConn(); err != nil {
		t.Fatal(err)
	}
	q.buffers()
	lens := make([]int, burstMax)
	in, verdicts, back := []byte("a packet message"), []byte("its verdict"), make([]byte, 64)
	round := func() {
		if _, err := unix.Write(fds[1], in); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Write(fds[1], in); err != nil {
			t.Fatal(err)
		}
		if n, err := q.recvBurst(lens); n != 2 || err != nil || lens[0] != len(in) || string(q.slots[1][:lens[1]]) != string(in) {
			t.Fatalf("recvBurst = %d, %v (lengths %v); want the 2 messages", n, err, lens[:n])
		}
		if err := q.send(verdicts); err != nil {
			t.Fatal(err)
		}
		if n, err := unix.Read(fds[1], back); err != nil || string(back[:n]) != string(verdicts) {
			t.Fatalf("the peer read %q, %v; want %q", back[:n], err, verdicts)
		}
	}
	round()
	if n := testing.AllocsPerRun(200, round); n != 0 {
		t.Errorf("a burst's receive and send allocate %v times; want 0", n)
	}
	// A receive that waits (nothing queued yet) allocates nothing either: a writer, started
	// once, sends a moment after each go.
	kick := make(chan struct{})
	defer close(kick)
	go func() {
		for range kick {
			time.Sleep(time.Millisecond)
			_, _ = unix.Write(fds[1], in)
		}
	}()
	if n := testing.AllocsPerRun(50, func() {
		kick <- struct{}{}
		if n, err := q.recvBurst(lens); n != 1 || err != nil {
			t.Fatalf("recvBurst after a wait = %d, %v; want 1 message", n, err)
		}
	}); n != 0 {
		t.Errorf("a receive that waits allocates %v times; want 0", n)
	}
}
