package filter

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// packetMessage builds a NFQNL_MSG_PACKET message as the kernel sends it.
func packetMessage(id, in, out uint32, payload []byte) []byte {
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
	body = append(body, attr(nfqaPayload, payload)...)
	msg := make([]byte, nlmsgHdrLen, nlmsgHdrLen+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(nlmsgHdrLen+len(body)))     // nlmsg_len
	binary.NativeEndian.PutUint16(msg[4:], nfnlSubsysQueue<<8|nfqnlMsgPacket) // nlmsg_type
	return append(msg, body...)
}

func TestParsePacket(t *testing.T) {
	payload := pkt("tcp", "198.51.100.7:40000", "192.0.2.10:22", syn)
	var m packetMsg
	if !parsePacket(packetMessage(7, 2, 0, payload), &m) || m.id != 7 || m.in != 2 || m.out != 0 || m.mark != 0xca6c || string(m.payload) != string(payload) {
		t.Fatalf("parsePacket = %+v; want id 7 in 2 and the payload", m)
	}
	if !parsePacket(packetMessage(8, 0, 3, payload[:21]), &m) || m.id != 8 || m.in != 0 || m.out != 3 || len(m.payload) != 21 {
		t.Fatalf("parsePacket (odd payload) = %+v", m)
	}
	good := packetMessage(9, 2, 0, payload)
	for _, bad := range [][]byte{nil, good[:10], good[:nlmsgHdrLen+nfgenHdrLen+2]} {
		if parsePacket(bad, &m) && m.id == 9 && len(m.payload) == len(payload) {
			t.Errorf("parsePacket(truncated %d bytes) accepted the whole packet", len(bad))
		}
	}
	// A corrupt attribute after the id: the packet is still reported, without payload, so
	// that it is judged malformed and dropped rather than swept into a batch accept.
	corrupt := append([]byte(nil), good...)
	binary.NativeEndian.PutUint16(corrupt[nlmsgHdrLen+nfgenHdrLen+12+8:], 0xfff0) // third attribute's nla_len
	if !parsePacket(corrupt, &m) || m.id != 9 || m.payload != nil {
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
	b := q.appendVerdict(nil, 5, nfDrop, 0, false)
	b = q.appendVerdict(b, 6, nfAccept, 0x400000, false)
	b = q.appendVerdict(b, 9, nfAccept, 0, true)
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
		q.out = q.appendVerdict(q.out[:0], 1, nfAccept, 0, true)
	}); n != 0 {
		t.Errorf("appendVerdict allocates %v times; want 0", n)
	}
}
