package ec2api

import (
	"encoding/xml"

	"github.com/sgd-firewall/sgd/internal/awsjson"
	"github.com/sgd-firewall/sgd/internal/ipproto"
	"github.com/sgd-firewall/sgd/internal/rules"
	"github.com/sgd-firewall/sgd/internal/store"
)

// The XML shapes of EC2's responses (the SDK's service model, ec2 2016-11-15: element
// names in lower camel case, lists as <name><item>…</item></name>).

// list is an EC2 XML list. It is always written, empty too (<ipRanges/>), as EC2 writes
// it, so that the CLI prints "IpRanges": [] as it does against AWS.
type list[T any] struct {
	Items []T `xml:"item"`
}

type tag = store.Tag

type xmlTag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

func tagList(ts []tag) list[xmlTag] {
	var l list[xmlTag]
	for _, t := range ts {
		l.Items = append(l.Items, xmlTag{t.Key, t.Value})
	}
	return l
}

type xmlGroup struct {
	OwnerID       string              `xml:"ownerId"`
	GroupID       string              `xml:"groupId"`
	GroupName     string              `xml:"groupName"`
	Description   string              `xml:"groupDescription"`
	VpcID         string              `xml:"vpcId"`
	Arn           string              `xml:"securityGroupArn"`
	IPPermissions list[xmlPermission] `xml:"ipPermissions"`
	Egress        list[xmlPermission] `xml:"ipPermissionsEgress"`
	Tags          list[xmlTag]        `xml:"tagSet"`
}

type xmlPermission struct {
	Protocol      string              `xml:"ipProtocol"`
	FromPort      *int                `xml:"fromPort,omitempty"`
	ToPort        *int                `xml:"toPort,omitempty"`
	Groups        list[xmlPair]       `xml:"groups"`
	IPRanges      list[xmlRange]      `xml:"ipRanges"`
	IPv6Ranges    list[xmlRange6]     `xml:"ipv6Ranges"`
	PrefixListIDs list[xmlPrefixList] `xml:"prefixListIds"`
}

type xmlPair struct {
	UserID      string `xml:"userId"`
	GroupID     string `xml:"groupId"`
	Description string `xml:"description,omitempty"`
}

type xmlRange struct {
	CidrIP      string `xml:"cidrIp"`
	Description string `xml:"description,omitempty"`
}

type xmlRange6 struct {
	CidrIPv6    string `xml:"cidrIpv6"`
	Description string `xml:"description,omitempty"`
}

type xmlPrefixList struct {
	PrefixListID string `xml:"prefixListId"`
	Description  string `xml:"description,omitempty"`
}

type xmlRule struct {
	ID           string        `xml:"securityGroupRuleId"`
	GroupID      string        `xml:"groupId"`
	GroupOwnerID string        `xml:"groupOwnerId"`
	IsEgress     bool          `xml:"isEgress"`
	Protocol     string        `xml:"ipProtocol"`
	FromPort     int           `xml:"fromPort"`
	ToPort       int           `xml:"toPort"`
	CidrIPv4     string        `xml:"cidrIpv4,omitempty"`
	CidrIPv6     string        `xml:"cidrIpv6,omitempty"`
	PrefixListID string        `xml:"prefixListId,omitempty"`
	Referenced   *xmlReference `xml:"referencedGroupInfo,omitempty"`
	Description  string        `xml:"description,omitempty"`
	Arn          string        `xml:"securityGroupRuleArn"`
	Tags         list[xmlTag]  `xml:"tagSet"`
}

type xmlReference struct {
	GroupID string `xml:"groupId"`
	UserID  string `xml:"userId"`
}

type xmlRevokedRule struct {
	ID                string `xml:"securityGroupRuleId"`
	GroupID           string `xml:"groupId"`
	IsEgress          bool   `xml:"isEgress"`
	Protocol          string `xml:"ipProtocol"`
	FromPort          int    `xml:"fromPort"`
	ToPort            int    `xml:"toPort"`
	CidrIPv4          string `xml:"cidrIpv4,omitempty"`
	CidrIPv6          string `xml:"cidrIpv6,omitempty"`
	PrefixListID      string `xml:"prefixListId,omitempty"`
	ReferencedGroupID string `xml:"referencedGroupId,omitempty"`
	Description       string `xml:"description,omitempty"`
}

// rulePorts are a rule's fromPort and toPort as a SecurityGroupRule shows them: -1 and -1
// when the protocol has none.
func rulePorts(r *rules.NRule) (int, int) {
	switch r.Proto {
	case ipproto.TCP, ipproto.UDP, ipproto.ICMP, ipproto.ICMPv6:
		return r.From, r.To
	}
	return -1, -1
}

// description is a rule's description as the API shows it: AWS's implicit rules (the
// default egress of a file group) have none.
func description(r *rules.NRule) string {
	if r.Default {
		return ""
	}
	return r.Description
}

func (c *call) groupArn(id string) string {
	return "arn:aws:ec2:sgd:" + c.h.opt.OwnerID + ":security-group/" + id
}

func (c *call) xmlRule(r *rules.NRule) xmlRule {
	from, to := rulePorts(r)
	x := xmlRule{ID: r.ID, GroupID: r.GroupID, GroupOwnerID: c.h.opt.OwnerID, IsEgress: r.Direction == rules.Egress,
		Protocol: awsjson.ProtocolName(r.Proto), FromPort: from, ToPort: to, Description: description(r),
		Arn: "arn:aws:ec2:sgd:" + c.h.opt.OwnerID + ":security-group-rule/" + r.ID}
	switch r.Peer.Kind {
	case rules.PeerCIDR:
		if r.Peer.Prefix.Addr().Is4() {
			x.CidrIPv4 = r.Peer.Prefix.String()
		} else {
			x.CidrIPv6 = r.Peer.Prefix.String()
		}
	case rules.PeerPrefixList:
		x.PrefixListID = r.Peer.ID
	case rules.PeerGroup:
		x.Referenced = &xmlReference{GroupID: r.Peer.ID, UserID: c.h.opt.OwnerID}
	}
	if sr, _, _ := c.snap.Rule(r.ID); sr != nil {
		x.Tags = tagList(sr.Tags)
	}
	return x
}

func revoked(x xmlRule) xmlRevokedRule {
	r := xmlRevokedRule{ID: x.ID, GroupID: x.GroupID, IsEgress: x.IsEgress, Protocol: x.Protocol, FromPort: x.FromPort,
		ToPort: x.ToPort, CidrIPv4: x.CidrIPv4, CidrIPv6: x.CidrIPv6, PrefixListID: x.PrefixListID, Description: x.Description}
	if x.Referenced != nil {
		r.ReferencedGroupID = x.Referenced.GroupID
	}
	return r
}

// xmlPermissions is the rules as DescribeSecurityGroups shows them: awsjson.Permissions'
// folding (one permission per protocol and port range, every peer of it, in rule order)
// in EC2's XML shape.
func (c *call) xmlPermissions(rs []rules.NRule) list[xmlPermission] {
	var l list[xmlPermission]
	for _, p := range awsjson.Permissions(rs, c.h.opt.OwnerID) {
		x := xmlPermission{Protocol: p.IpProtocol, FromPort: p.FromPort, ToPort: p.ToPort}
		for _, r := range p.IpRanges {
			x.IPRanges.Items = append(x.IPRanges.Items, xmlRange{r.CidrIp, r.Description})
		}
		for _, r := range p.Ipv6Ranges {
			x.IPv6Ranges.Items = append(x.IPv6Ranges.Items, xmlRange6{r.CidrIpv6, r.Description})
		}
		for _, r := range p.PrefixListIds {
			x.PrefixListIDs.Items = append(x.PrefixListIDs.Items, xmlPrefixList{r.PrefixListId, r.Description})
		}
		for _, r := range p.UserIdGroupPairs {
			x.Groups.Items = append(x.Groups.Items, xmlPair{UserID: r.UserId, GroupID: r.GroupId, Description: r.Description})
		}
		l.Items = append(l.Items, x)
	}
	return l
}

func (c *call) xmlGroup(g *rules.GroupModel) xmlGroup {
	x := xmlGroup{OwnerID: c.h.opt.OwnerID, GroupID: g.ID, GroupName: g.Name, Description: g.Description,
		VpcID: c.h.opt.VpcID, Arn: c.groupArn(g.ID), IPPermissions: c.xmlPermissions(g.Ingress), Egress: c.xmlPermissions(g.Egress)}
	if sg := c.snap.Group(g.ID); sg != nil {
		x.Tags = tagList(sg.Tags)
	}
	return x
}

type describeGroupsResponse struct {
	XMLName xml.Name `xml:"DescribeSecurityGroupsResponse"`
	base
	Groups    list[xmlGroup] `xml:"securityGroupInfo"`
	NextToken string         `xml:"nextToken,omitempty"`
}

type describeRulesResponse struct {
	XMLName xml.Name `xml:"DescribeSecurityGroupRulesResponse"`
	base
	Rules     list[xmlRule] `xml:"securityGroupRuleSet"`
	NextToken string        `xml:"nextToken,omitempty"`
}

type createGroupResponse struct {
	XMLName xml.Name `xml:"CreateSecurityGroupResponse"`
	base
	Return  bool         `xml:"return"`
	GroupID string       `xml:"groupId"`
	Arn     string       `xml:"securityGroupArn"`
	Tags    list[xmlTag] `xml:"tagSet"`
}

type authorizeResponse struct {
	XMLName xml.Name
	base
	Return bool          `xml:"return"`
	Rules  list[xmlRule] `xml:"securityGroupRuleSet"`
}

type revokeResponse struct {
	XMLName xml.Name
	base
	Return  bool                 `xml:"return"`
	Unknown list[xmlPermission]  `xml:"unknownIpPermissionSet"`
	Revoked list[xmlRevokedRule] `xml:"revokedSecurityGroupRuleSet"`
}
