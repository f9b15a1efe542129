package filter

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Conn is one of the host's own established TCP connections.
type Conn struct {
	Local, Remote netip.AddrPort
	// Inbound: the remote end opened it (its local port is one the host listens on).
	Inbound bool
	// Dev is the index of the interface the kernel routes it through (0: not known).
	Dev uint32
}

// ReadEstablished reads the host's established TCP connections from the kernel's socket
// tables (/proc/net/tcp and /proc/net/tcp6 of the caller's network namespace), with the
// interface each one is routed through.
func ReadEstablished() ([]Conn, error) {
	var conns []Conn
	for _, path := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // no IPv6 in this kernel
		} else if err != nil {
			return nil, err
		}
		c, err := parseSockets(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		conns = append(conns, c...)
	}
	if len(conns) == 0 {
		return nil, nil
	}
	rt, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return conns, fmt.Errorf("rtnetlink (to route the connections): %w", err)
	}
	defer rt.Close()
	for i := range conns {
		conns[i].Dev, _ = routeDev(rt, conns[i].Local.Addr(), conns[i].Remote.Addr())
	}
	return conns, nil
}

// TCP states in the socket tables (include/net/tcp_states.h).
const (
	tcpEstablished = 0x01
	tcpListen      = 0x0a
)

// parseSockets reads one /proc/net/tcp{,6} table: its established connections, each
// marked inbound when the host listens on its local port (on its address or on any).
func parseSockets(r io.Reader) ([]Conn, error) {
	type listener struct {
		addr netip.Addr // unspecified: every address
		port uint16
	}
	listening := map[listener]bool{}
	var est []Conn
	sc := bufio.NewScanner(r)
	sc.Scan() // the header line
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			continue
		}
		st, err := strconv.ParseUint(f[3], 16, 8)
		if err != nil || (st != tcpEstablished && st != tcpListen) {
			continue
		}
		local, err := parseSockAddr(f[1])
		if err != nil {
			return nil, err
		}
		if st == tcpListen {
			listening[listener{local.Addr(), local.Port()}] = true
			continue
		}
		remote, err := parseSockAddr(f[2])
		if err != nil {
			return nil, err
		}
		est = append(est, Conn{Local: local, Remote: remote})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for i, c := range est {
		any4, any6 := netip.IPv4Unspecified(), netip.IPv6Unspecified()
		p := c.Local.Port()
		est[i].Inbound = listening[listener{c.Local.Addr(), p}] || listening[listener{any4, p}] || listening[listener{any6, p}]
	}
	return est, nil
}

// parseSockAddr reads an address:port of the socket tables: the address as the kernel's
// 32-bit words in host byte order, in hex (8 digits for IPv4, 32 for IPv6), the port in
// hex. IPv4-mapped IPv6 addresses (dual-stack sockets) come back as IPv4, as their
// packets are on the wire.
func parseSockAddr(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	port, err := strconv.ParseUint(p, 16, 16)
	if !ok || err != nil || (len(a) != 8 && len(a) != 32) {
		return netip.AddrPort{}, fmt.Errorf("socket address %q", s)
	}
	raw, err := hex.DecodeString(a)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("socket address %q", s)
	}
	for w := 0; w < len(raw); w += 4 {
		binary.BigEndian.PutUint32(raw[w:], binary.NativeEndian.Uint32(raw[w:]))
	}
	ip, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(ip.Unmap(), uint16(port)), nil
}

// routeDev asks the kernel which interface it routes packets from src to dst through
// (RTM_GETROUTE, as `ip route get DST from SRC` does).
func routeDev(c *netlink.Conn, src, dst netip.Addr) (uint32, error) {
	family, bits := byte(unix.AF_INET), byte(32)
	if dst.Is6() {
		family, bits = unix.AF_INET6, 128
	}
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(unix.RTA_DST, dst.AsSlice())
	ae.Bytes(unix.RTA_SRC, src.AsSlice())
	attrs, err := ae.Encode()
	if err != nil {
		return 0, err
	}
	// struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
	rtm := []byte{family, bits, bits, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETROUTE, Flags: netlink.Request},
		Data:   append(rtm, attrs...),
	})
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		if len(m.Data) < len(rtm) {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[len(rtm):])
		if err != nil {
			return 0, err
		}
		for ad.Next() {
			if ad.Type() == unix.RTA_OIF {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, errors.New("no route")
}
