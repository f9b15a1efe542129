package awsjson

import (
	"bytes"
	"encoding/json"

	"github.com/sgd-firewall/sgd/internal/ipproto"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// VpcID is the one VPC sgd's groups are in (the host), as the EC2 API of sgd run shows it
// (internal/ec2api's default).
const VpcID = "vpc-00000000000000sgd"

// Export is the model's groups as describe-security-groups prints them, owned by ownerID
// (DefaultOwnerID when ""): every group the model holds, AWS's default group too when the
// model added it, with defaults as the model has them (an omitted egress is all traffic
// to 0.0.0.0/0 and ::/0). Tags are not in sgd's config and are not printed.
func Export(m *rules.Model, ownerID string) DescribeSecurityGroups {
	if ownerID == "" {
		ownerID = DefaultOwnerID
	}
	out := DescribeSecurityGroups{SecurityGroups: []SecurityGroup{}}
	for _, g := range m.Groups {
		out.SecurityGroups = append(out.SecurityGroups, SecurityGroup{
			Description: g.Description, GroupName: g.Name, GroupId: g.ID, OwnerId: ownerID, VpcId: VpcID,
			IpPermissions: Permissions(g.Ingress, ownerID), IpPermissionsEgress: Permissions(g.Egress, ownerID),
		})
	}
	return out
}

// Permissions folds rules into IpPermissions as EC2 groups them: one permission per
// protocol and port range, holding every peer of that range, in the order the rules
// stand. Ports are printed for tcp, udp, icmp and icmpv6 only, as EC2 prints them; AWS's
// implicit rules (Default) have no description. The lists are never nil: the CLI prints
// an empty one as [].
func Permissions(rs []rules.NRule, ownerID string) []IpPermission {
	ps := []IpPermission{}
	at := map[[3]int]int{}
	for i := range rs {
		r := &rs[i]
		k := [3]int{r.Proto, r.From, r.To}
		j, seen := at[k]
		if !seen {
			p := IpPermission{IpProtocol: ProtocolName(r.Proto), IpRanges: []IpRange{}, Ipv6Ranges: []Ipv6Range{},
				PrefixListIds: []PrefixListId{}, UserIdGroupPairs: []UserIdGroupPair{}}
			switch r.Proto {
			case ipproto.TCP, ipproto.UDP, ipproto.ICMP, ipproto.ICMPv6:
				from, to := r.From, r.To
				p.FromPort, p.ToPort = &from, &to
			}
			j = len(ps)
			at[k] = j
			ps = append(ps, p)
		}
		p := &ps[j]
		d := r.Description
		if r.Default {
			d = ""
		}
		switch r.Peer.Kind {
		case rules.PeerCIDR:
			if r.Peer.Prefix.Addr().Is4() {
				p.IpRanges = append(p.IpRanges, IpRange{CidrIp: r.Peer.Prefix.String(), Description: d})
			} else {
				p.Ipv6Ranges = append(p.Ipv6Ranges, Ipv6Range{CidrIpv6: r.Peer.Prefix.String(), Description: d})
			}
		case rules.PeerPrefixList:
			p.PrefixListIds = append(p.PrefixListIds, PrefixListId{PrefixListId: r.Peer.ID, Description: d})
		case rules.PeerGroup:
			p.UserIdGroupPairs = append(p.UserIdGroupPairs, UserIdGroupPair{GroupId: r.Peer.ID, UserId: ownerID, Description: d})
		}
	}
	return ps
}

// ProtocolName is IpProtocol as EC2 prints it: tcp, udp, icmp, icmpv6, -1, or the number.
func ProtocolName(n int) string {
	if n == ipproto.All {
		return "-1"
	}
	return ipproto.Name(n)
}

// JSON is v as the AWS CLI prints JSON: indented by four spaces, nothing HTML-escaped, a
// final newline.
func JSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "    ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
