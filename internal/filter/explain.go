package filter

import (
	"github.com/sgd-firewall/sgd/internal/packet"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// Explain says what the packet path does with the first packet of a flow, q, on the host
// h: first what the hooks and the screen stage decide before any rule (the same decision
// the judge makes, from the same code), then the rules (rules.Policy.Explain).
// exemptDHCP is the daemon's exempt_dhcp setting.
func Explain(pol *rules.Policy, h Host, exemptDHCP bool, q rules.Query) rules.Explanation {
	if q.Iface == "lo" {
		// sgd's hooks never queue loopback (netfilter.Spec).
		return rules.Explanation{Allowed: true, Exempt: "loopback traffic is never filtered"}
	}
	if itf := pol.Interface(q.Iface); itf != nil {
		p := packet.Parsed{Family: 6, Proto: q.Proto, Src: q.Src, Dst: q.Dst, SrcPort: q.SrcPort, DstPort: q.Port,
			ICMPType: q.ICMPType, ICMPCode: q.ICMPCode}
		if q.Src.Is4() {
			p.Family = 4
		}
		local := newAddrSet(h.Local)
		if sc := screen(&p, q.Direction, newPortScreen(itf.Port), h.Nets[q.Iface], &local, exemptDHCP); sc != screenPass {
			s := screenings[sc]
			if s.reason.Verdict() == Accept {
				return rules.Explanation{Allowed: true, Exempt: s.why}
			}
			return rules.Explanation{Why: s.why + " (reason " + s.reason.String() + ")"}
		}
	}
	return pol.Explain(q)
}
