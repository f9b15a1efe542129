package ec2api

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"slices"

	"github.com/sgd-firewall/sgd/internal/store"
)

// eniID is the ENI id of an interface without one of its own: eni- and 17 hex digits of a
// hash of its name, so that it is the same on every start (STYLE 18).
func eniID(name string) string {
	sum := sha256.Sum256([]byte("sgd eni v1\x00" + name))
	return "eni-" + hex.EncodeToString(sum[:9])[:17]
}

// iface is an interface as the API knows it: its groups in force, and whether the
// config file lists it (then it is read-only).
type iface struct {
	Interface
	groups []string
	file   bool // the config file sets its groups: read-only through the API
}

// interfaces are the model's interfaces and the host's others (Options.Interfaces).
func (c *call) interfaces() []iface {
	var out []iface
	for _, m := range c.model.Interfaces {
		// An interface the file lists without groups carries the default group, and the API
		// may attach groups to it (the controller's merge gives the API's to it).
		out = append(out, iface{Interface: Interface{Name: m.Name}, groups: m.Groups, file: c.snap.Attachment(m.Name) == nil && !m.DefaultGroup})
	}
	if c.h.opt.Interfaces != nil {
		for _, itf := range c.h.opt.Interfaces() {
			i := slices.IndexFunc(out, func(o iface) bool { return o.Name == itf.Name })
			if i < 0 {
				out = append(out, iface{Interface: itf})
				continue
			}
			out[i].ID, out[i].Addresses = itf.ID, itf.Addresses
		}
	}
	for i := range out {
		if out[i].ID == "" {
			out[i].ID = eniID(out[i].Name)
		}
	}
	return out
}

type xmlENI struct {
	ID              string            `xml:"networkInterfaceId"`
	Description     string            `xml:"description"`
	InterfaceType   string            `xml:"interfaceType"`
	OwnerID         string            `xml:"ownerId"`
	VpcID           string            `xml:"vpcId"`
	Status          string            `xml:"status"`
	PrivateIP       string            `xml:"privateIpAddress,omitempty"`
	SourceDestCheck bool              `xml:"sourceDestCheck"`
	Groups          list[xmlGroupRef] `xml:"groupSet"`
	Tags            list[xmlTag]      `xml:"tagSet"`
}

type xmlGroupRef struct {
	GroupID   string `xml:"groupId"`
	GroupName string `xml:"groupName"`
}

type describeENIsResponse struct {
	XMLName xml.Name `xml:"DescribeNetworkInterfacesResponse"`
	base
	ENIs list[xmlENI] `xml:"networkInterfaceSet"`
}

func describeNetworkInterfaces(c *call) (response, error) {
	ids, filters, err := c.q.selection("NetworkInterfaceId")
	if err != nil {
		return nil, err
	}
	if err := c.read(); err != nil {
		return nil, err
	}
	all := c.interfaces()
	for _, id := range ids {
		if !slices.ContainsFunc(all, func(i iface) bool { return i.ID == id }) {
			return nil, errf(codeInterfaceNotFound, "The networkInterface ID '%s' does not exist", id)
		}
	}
	picked, _, err := filterPage(all, ids, filters, groupBounds, nil, "", func(i iface) string { return i.ID },
		func(i iface, name string) ([]string, bool) {
			switch name {
			case "network-interface-id":
				return []string{i.ID}, true
			case "description":
				return []string{i.Name}, true
			case "group-id":
				return i.groups, true
			}
			return nil, false
		}, func(string) []tag { return nil })
	if err != nil {
		return nil, err
	}
	resp := &describeENIsResponse{}
	for _, itf := range picked {
		x := xmlENI{ID: itf.ID, Description: itf.Name, InterfaceType: "interface", OwnerID: c.h.opt.OwnerID,
			VpcID: c.h.opt.VpcID, Status: "in-use", SourceDestCheck: true}
		if len(itf.Addresses) > 0 {
			x.PrivateIP = itf.Addresses[0]
		}
		for _, gid := range itf.groups {
			name := gid
			if g := c.model.Group(gid); g != nil {
				name = g.Name
			}
			x.Groups.Items = append(x.Groups.Items, xmlGroupRef{gid, name})
		}
		resp.ENIs.Items = append(resp.ENIs.Items, x)
	}
	return resp, nil
}

// modifyNetworkInterfaceAttribute sets the groups an interface carries (--groups); the
// interface must not be one the config file lists (it is read-only through the API).
func modifyNetworkInterfaceAttribute(c *call) (response, error) {
	id, err := c.q.required("NetworkInterfaceId")
	if err != nil {
		return nil, err
	}
	groups, err := c.q.strs("SecurityGroupId")
	if err != nil {
		return nil, err
	}
	if len(groups) == 0 {
		return nil, errf(codeUnsupported, "sgd sets only the groups of an interface (SecurityGroupId.N, the CLI's --groups)")
	}
	for _, g := range groups {
		if err := checkGroupID(g); err != nil {
			return nil, err
		}
	}
	all := c.interfaces()
	i := slices.IndexFunc(all, func(i iface) bool { return i.ID == id })
	if i < 0 {
		return nil, errf(codeInterfaceNotFound, "The networkInterface ID '%s' does not exist", id)
	}
	itf := all[i]
	if itf.file {
		return nil, errf(codeReadOnly, "The network interface '%s' (%s) is listed in sgd's config file and is read-only through the API; change its security_groups in the file", id, itf.Name)
	}
	err = c.change(func(s *store.Snapshot) error {
		for _, g := range groups {
			if s.Group(g) == nil && c.model.Group(g) == nil {
				return errf(codeGroupNotFound, "The security group '%s' does not exist", g)
			}
		}
		if a := s.Attachment(itf.Name); a != nil {
			a.Groups = groups
		} else {
			s.Interfaces = append(s.Interfaces, store.Attachment{Interface: itf.Name, Groups: groups})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ok("ModifyNetworkInterfaceAttribute"), nil
}
