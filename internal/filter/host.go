package filter

import (
	"net"
	"net/netip"
	"sync"
)

// Host is what the judge knows of the host around the policy: which index each
// configured interface has, the host's own addresses, and each configured interface's
// on-link IPv4 prefixes. It is read at start and at each reload (ReadHost).
type Host struct {
	// Index maps configured interface names to their current indexes; names that do not
	// exist yet are left out (their packets are resolved on arrival).
	Index map[string]uint32
	// Local are the addresses of every interface of the host (not only the configured
	// ones, loopback included). An arriving packet whose source is one of them is spoofed:
	// a VPC never delivers such a packet to an instance.
	Local []netip.Addr
	// Nets are the IPv4 prefixes of each configured interface's addresses: the link the
	// DHCPv4 exemption is scoped to.
	Nets map[string][]netip.Prefix
}

// ReadHost reads the host's interfaces for the configured names.
func ReadHost(names []string) Host {
	h := Host{Index: make(map[string]uint32, len(names)), Nets: make(map[string][]netip.Prefix, len(names))}
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return h
	}
	for _, ifi := range ifs {
		if want[ifi.Name] {
			h.Index[ifi.Name] = uint32(ifi.Index)
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			h.Local = append(h.Local, ip)
			ones, _ := ipn.Mask.Size()
			if want[ifi.Name] && ip.Is4() {
				h.Nets[ifi.Name] = append(h.Nets[ifi.Name], netip.PrefixFrom(ip, ones).Masked())
			}
		}
	}
	return h
}

func ifNameByIndex(index uint32) (string, bool) {
	ifi, err := net.InterfaceByIndex(int(index))
	if err != nil {
		return "", false
	}
	return ifi.Name, true
}

// Zones numbers attachment points (interfaces; later ports) for the connection table's
// per-interface tracking (SPEC 4.2). A name keeps its number for the life of the Zones,
// across reloads that add or remove other names, so that a flow tracked on one interface
// can never be found under another one's number. Zone 0 is never given out. Safe for
// concurrent use; the zero value is not usable (NewZones).
type Zones struct {
	mu    sync.Mutex
	byID  map[string]uint16
	names []string // names[id-1] is numbered id
}

// NewZones returns an empty numbering.
func NewZones() *Zones { return &Zones{byID: map[string]uint16{}} }

// Of returns name's zone, numbering it on first use. After 65535 names it returns 0, which
// callers treat as "cannot be tracked" (NewZones again, at a restart, starts over).
func (z *Zones) Of(name string) uint16 {
	z.mu.Lock()
	defer z.mu.Unlock()
	if id, ok := z.byID[name]; ok {
		return id
	}
	if len(z.byID) >= 1<<16-1 {
		return 0
	}
	id := uint16(len(z.byID) + 1)
	z.byID[name] = id
	z.names = append(z.names, name)
	return id
}

// Name returns the name numbered id, if any.
func (z *Zones) Name(id uint16) (string, bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if id == 0 || int(id) > len(z.names) {
		return "", false
	}
	return z.names[id-1], true
}

// addrSet is a set of addresses asked on every arriving packet (the host's own). A host
// has a handful: comparing them in a row costs less than hashing the packet's address
// (measured 2026-12-01: a map lookup added ~20 ns per packet); a long list goes to a map.
type addrSet struct {
	few  []netip.Addr
	many map[netip.Addr]struct{}
}

const addrSetFew = 16

func newAddrSet(addrs []netip.Addr) addrSet {
	if len(addrs) <= addrSetFew {
		return addrSet{few: addrs}
	}
	m := make(map[netip.Addr]struct{}, len(addrs))
	for _, a := range addrs {
		m[a] = struct{}{}
	}
	return addrSet{many: m}
}

func (s *addrSet) has(a netip.Addr) bool {
	if s.many != nil {
		_, ok := s.many[a]
		return ok
	}
	for _, b := range s.few {
		if a == b {
			return true
		}
	}
	return false
}
