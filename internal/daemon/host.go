package daemon

import (
	"net"
	"net/netip"
)

// LocalAddrs returns the addresses of a local interface (none when it does not exist):
// a rule referencing a group matches the addresses of this host's interfaces carrying it.
func LocalAddrs(name string) []netip.Addr {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}
