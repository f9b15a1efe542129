// Package awsjson converts between sgd's Security Group model and the JSON the AWS CLI
// prints (SPEC 4.5): `aws ec2 describe-security-groups` (and, for prefix lists,
// `describe-managed-prefix-lists` and `get-managed-prefix-list-entries`) in, sgd's config
// out (Import); sgd's validated model in, describe-security-groups out (Export). Import
// then Export gives back the same permissions.
//
// The shapes below are the EC2 API's (service model ec2 2016-11-15: SecurityGroup,
// IpPermission, IpRange, Ipv6Range, PrefixListId, UserIdGroupPair, ManagedPrefixList,
// PrefixListEntry), with the member names and member order the CLI prints. Nothing here
// holds state; every function is safe for concurrent use.
package awsjson

// DescribeSecurityGroups is the output of aws ec2 describe-security-groups.
type DescribeSecurityGroups struct {
	SecurityGroups []SecurityGroup `json:"SecurityGroups"`
	// NextToken is set only on one page of several (the CLI's --max-items).
	NextToken string `json:"NextToken,omitempty"`
}

// SecurityGroup is one group as describe-security-groups prints it.
type SecurityGroup struct {
	Description         string         `json:"Description"`
	GroupName           string         `json:"GroupName"`
	IpPermissions       []IpPermission `json:"IpPermissions"`
	OwnerId             string         `json:"OwnerId"`
	GroupId             string         `json:"GroupId"`
	IpPermissionsEgress []IpPermission `json:"IpPermissionsEgress"`
	Tags                []Tag          `json:"Tags,omitempty"`
	VpcId               string         `json:"VpcId"`
	SecurityGroupArn    string         `json:"SecurityGroupArn,omitempty"`
}

// IpPermission is a protocol and port range with every peer it is allowed from (ingress)
// or to (egress). FromPort and ToPort are absent for protocols without ports (-1, or a
// number other than tcp, udp, icmp and icmpv6); for ICMP they are the type and the code.
type IpPermission struct {
	FromPort         *int              `json:"FromPort,omitempty"`
	IpProtocol       string            `json:"IpProtocol"`
	IpRanges         []IpRange         `json:"IpRanges"`
	Ipv6Ranges       []Ipv6Range       `json:"Ipv6Ranges"`
	PrefixListIds    []PrefixListId    `json:"PrefixListIds"`
	ToPort           *int              `json:"ToPort,omitempty"`
	UserIdGroupPairs []UserIdGroupPair `json:"UserIdGroupPairs"`
}

// IpRange is an IPv4 peer.
type IpRange struct {
	CidrIp      string `json:"CidrIp"`
	Description string `json:"Description,omitempty"`
}

// Ipv6Range is an IPv6 peer.
type Ipv6Range struct {
	CidrIpv6    string `json:"CidrIpv6"`
	Description string `json:"Description,omitempty"`
}

// PrefixListId is a prefix list peer.
type PrefixListId struct {
	Description  string `json:"Description,omitempty"`
	PrefixListId string `json:"PrefixListId"`
}

// UserIdGroupPair is a group peer: the addresses of whatever carries the group.
type UserIdGroupPair struct {
	Description            string `json:"Description,omitempty"`
	GroupId                string `json:"GroupId,omitempty"`
	GroupName              string `json:"GroupName,omitempty"`
	PeeringStatus          string `json:"PeeringStatus,omitempty"`
	UserId                 string `json:"UserId,omitempty"`
	VpcId                  string `json:"VpcId,omitempty"`
	VpcPeeringConnectionId string `json:"VpcPeeringConnectionId,omitempty"`
}

// Tag is a resource tag.
type Tag struct {
	Key   string `json:"Key"`
	Value string `json:"Value"`
}

// DescribeManagedPrefixLists is the output of aws ec2 describe-managed-prefix-lists.
type DescribeManagedPrefixLists struct {
	PrefixLists []ManagedPrefixList `json:"PrefixLists"`
	NextToken   string              `json:"NextToken,omitempty"`
}

// ManagedPrefixList is a prefix list without its entries (those come from
// get-managed-prefix-list-entries, one call per list).
type ManagedPrefixList struct {
	PrefixListId   string `json:"PrefixListId"`
	AddressFamily  string `json:"AddressFamily,omitempty"`
	State          string `json:"State,omitempty"`
	StateMessage   string `json:"StateMessage,omitempty"`
	PrefixListArn  string `json:"PrefixListArn,omitempty"`
	PrefixListName string `json:"PrefixListName,omitempty"`
	MaxEntries     *int   `json:"MaxEntries,omitempty"`
	Version        *int64 `json:"Version,omitempty"`
	Tags           []Tag  `json:"Tags,omitempty"`
	OwnerId        string `json:"OwnerId,omitempty"`
}

// GetManagedPrefixListEntries is the output of aws ec2 get-managed-prefix-list-entries
// --prefix-list-id ID. It does not name the list: the caller says which list it is.
type GetManagedPrefixListEntries struct {
	Entries   []PrefixListEntry `json:"Entries"`
	NextToken string            `json:"NextToken,omitempty"`
}

// PrefixListEntry is one CIDR of a prefix list.
type PrefixListEntry struct {
	Cidr        string `json:"Cidr"`
	Description string `json:"Description,omitempty"`
}
