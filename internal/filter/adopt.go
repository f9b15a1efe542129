package filter

import (
	"github.com/sgd-firewall/sgd/internal/conntrack"
	"github.com/sgd-firewall/sgd/internal/ipproto"
)

// Adopt tracks the host's own established TCP connections (ReadEstablished) as flows sgd
// had seen open, each on the configured interface it is routed through, so that starting
// sgd never cuts them (SPEC 4.8); they then live and idle out as any tracked flow. It
// returns how many it adopted per interface. Connections through an interface the policy
// does not list (loopback among them) are not sgd's to track.
func (e *Engine) Adopt(conns []Conn) map[string]int {
	now := e.opt.Now()
	adopted := map[string]int{}
	for _, c := range conns {
		st := e.state.Load()
		is := st.byIndex[c.Dev]
		if is == nil {
			if _, is, _ = e.learn(c.Dev); is == nil {
				continue
			}
		}
		t := conntrack.Tuple{Proto: ipproto.TCP, Src: c.Local.Addr(), Dst: c.Remote.Addr(), SrcPort: c.Local.Port(), DstPort: c.Remote.Port(), Zone: is.id}
		if c.Inbound {
			t.Src, t.Dst, t.SrcPort, t.DstPort = t.Dst, t.Src, t.DstPort, t.SrcPort
		}
		if e.table.Adopt(&t, conntrack.Meta{Timeouts: is.timeouts, Ingress: c.Inbound}, now) == conntrack.Inserted {
			adopted[is.name]++
		}
	}
	return adopted
}
