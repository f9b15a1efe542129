package filter

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/sgd-firewall/sgd/internal/ipproto"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// SSHSession is the SSH session a command runs in, as sshd describes it to the session
// ($SSH_CONNECTION: "client-address client-port server-address server-port").
type SSHSession struct{ Client, Server netip.AddrPort }

// ParseSSHConnection parses $SSH_CONNECTION; ok is false when it is empty or not that.
func ParseSSHConnection(s string) (SSHSession, bool) {
	f := strings.Fields(s)
	if len(f) != 4 {
		return SSHSession{}, false
	}
	c, err1 := netip.ParseAddrPort(net.JoinHostPort(f[0], f[1]))
	srv, err2 := netip.ParseAddrPort(net.JoinHostPort(f[2], f[3]))
	if err1 != nil || err2 != nil {
		return SSHSession{}, false
	}
	return SSHSession{Client: netip.AddrPortFrom(c.Addr().Unmap(), c.Port()), Server: netip.AddrPortFrom(srv.Addr().Unmap(), srv.Port())}, true
}

// RouteDev returns the index of the interface the kernel routes packets from src to dst
// through (as `ip route get DST from SRC` says).
func RouteDev(src, dst netip.Addr) (uint32, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return routeDev(c, src, dst)
}

// Lockout says, in words a person acts on, whether the policy would cut them off: the SSH
// session s crosses the interface named iface, and a new connection like it (a SYN from
// its client to its server port) would be dropped there. It returns "" when the policy
// allows it, when the interface is not one the policy filters, or when iface is "".
// adopt says whether open connections are adopted at start (the session itself survives).
func Lockout(pol *rules.Policy, h Host, exemptDHCP bool, s SSHSession, iface string, adopt bool) string {
	if iface == "" || pol.Interface(iface) == nil {
		return ""
	}
	q := rules.Query{Iface: iface, Direction: rules.Ingress, Proto: ipproto.TCP, Src: s.Client.Addr(), Dst: s.Server.Addr(),
		SrcPort: s.Client.Port(), Port: s.Server.Port()}
	ex := Explain(pol, h, exemptDHCP, q)
	if ex.Allowed {
		return ""
	}
	peer := "cidr_ipv4: " + netip.PrefixFrom(s.Client.Addr(), 32).String()
	if s.Client.Addr().Is6() {
		peer = "cidr_ipv6: \"" + netip.PrefixFrom(s.Client.Addr(), 128).String() + "\""
	}
	var b strings.Builder
	why, _, _ := strings.Cut(ex.Why, ";") // the reason, without what a drop means
	fmt.Fprintf(&b, "LOCK-OUT WARNING: you are connected over SSH from %s to %s on %s, and this config does not allow that: "+
		"a new SSH connection from %s would be dropped (%s).\n", s.Client.Addr(), s.Server, iface, s.Client.Addr(), why)
	if adopt {
		b.WriteString("  This session is open, so sgd adopts it at start and it stays; the next one will hang.\n")
	} else {
		b.WriteString("  adopt_established is off: this session hangs as soon as sgd starts.\n")
	}
	fmt.Fprintf(&b, "  To keep access, add an ingress rule to a group on %s, such as\n"+
		"    - {ip_protocol: tcp, from_port: %d, to_port: %d, %s}\n"+
		"  or start with --audit to see what would be dropped without dropping it.", iface, s.Server.Port(), s.Server.Port(), peer)
	return b.String()
}
