package ipproto

import "testing"

func TestNumberAndName(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		ok   bool
		name string
	}{
		{"tcp", TCP, true, "tcp"}, {" UDP ", UDP, true, "udp"}, {"icmp", ICMP, true, "icmp"}, {"ICMPv6", ICMPv6, true, "icmpv6"},
		{"-1", All, true, "all"}, {"all", All, true, "all"}, {"6", TCP, true, "tcp"}, {"47", 47, true, "47"}, {"0", 0, true, "0"},
		{"255", 255, true, "255"}, {"256", 0, false, ""}, {"-2", 0, false, ""}, {"gre", 0, false, ""}, {"", 0, false, ""},
	} {
		n, ok := Number(c.in)
		if n != c.n || ok != c.ok {
			t.Errorf("Number(%q) = %d, %v; want %d, %v", c.in, n, ok, c.n, c.ok)
		}
		if ok && Name(n) != c.name {
			t.Errorf("Name(%d) = %q; want %q", n, Name(n), c.name)
		}
	}
}

// The ICMP classes, by RFC 792 and RFC 4443 type numbers.
func TestICMPClasses(t *testing.T) {
	type class struct{ echo, request, ndp, quotes, related bool }
	for _, c := range []struct {
		proto, typ uint8
		want       class
	}{
		{ICMP, 8, class{echo: true, request: true}},
		{ICMP, 0, class{echo: true}},
		{ICMP, 3, class{quotes: true, related: true}},
		{ICMP, 11, class{quotes: true, related: true}},
		{ICMP, 4, class{quotes: true}},
		{ICMP, 5, class{quotes: true}},
		{ICMP, 12, class{quotes: true}},
		{ICMP, 13, class{}},
		{ICMP, 135, class{}},
		{ICMPv6, 128, class{echo: true, request: true}},
		{ICMPv6, 129, class{echo: true}},
		{ICMPv6, 1, class{quotes: true, related: true}},
		{ICMPv6, 2, class{quotes: true, related: true}},
		{ICMPv6, 3, class{quotes: true, related: true}},
		{ICMPv6, 4, class{quotes: true}},
		{ICMPv6, 133, class{ndp: true}},
		{ICMPv6, 137, class{ndp: true}},
		{ICMPv6, 138, class{}},
		{ICMPv6, 8, class{}},
	} {
		got := class{IsEcho(c.proto, c.typ), IsEchoRequest(c.proto, c.typ), IsNDP(c.proto, c.typ), QuotesPacket(c.proto, c.typ), IsRelatedError(c.proto, c.typ)}
		if got != c.want {
			t.Errorf("%s type %d: %+v; want %+v", Name(int(c.proto)), c.typ, got, c.want)
		}
	}
}
