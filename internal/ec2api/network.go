package ec2api

import (
	"encoding/xml"
	"slices"

	"github.com/sgd-firewall/sgd/internal/rules"
	"github.com/sgd-firewall/sgd/internal/store"
)

// eniID is the ENI id of this host's interface without one of its own: eni- and 17 hex
// digits of a hash of its name — and in fleet mode of the host id too — so that it is the
// same on every start (STYLE 18; store.InterfaceENI).
func (c *call) eniID(name string) string { return store.InterfaceENI(c.h.opt.HostID, name) }

// hostTag is the tag DescribeNetworkInterfaces gives each interface in fleet mode: the id
// of the host it is on (daemon.etcd.host_id); filter on it with tag:sgd:host-id.
const hostTag = "sgd:host-id"

// iface is an interface as the API knows it: its groups in force, and whether the
// config file lists it (then it is read-only).
type iface struct {
	Interface
	// host is, in fleet mode, the id of the host the interface is on; "" on a single host.
	host   string
	remote bool // on another host of the fleet (from its member record)
	groups []string
	file   bool // the config file sets its groups: read-only through the API
	fileCT bool // the config file sets its connection_tracking: read-only through the API
	// timeouts are the ones in force (AWS's defaults unless set); nil for an interface
	// the model does not list.
	timeouts *rules.Timeouts
}

// modelIface is an interface or port of the model as the API knows it: what the config
// file sets of it is read-only, unless the API has set it already.
func (c *call) modelIface(itf Interface, m *rules.IfaceModel) iface {
	a := c.snap.Attachment(c.h.opt.HostID, m.Name)
	return iface{Interface: itf, host: c.h.opt.HostID, groups: m.Groups, timeouts: &m.Timeouts,
		file:   !m.DefaultGroup && (a == nil || a.Groups == nil),
		fileCT: m.TimeoutsSet && (a == nil || a.ConnectionTracking == nil)}
}

// interfaces are the model's interfaces and ports, the host's others (Options.Interfaces),
// and in fleet mode the other hosts' (Options.Members).
func (c *call) interfaces() []iface {
	var out []iface
	for _, m := range c.model.Interfaces {
		// An interface the file lists without groups carries the default group, and the API
		// may attach groups to it (the controller's merge gives the API's to it); the same
		// for its connection-tracking timeouts.
		out = append(out, c.modelIface(Interface{Name: m.Name}, &m))
	}
	for i := range c.model.Ports {
		p := &c.model.Ports[i]
		itf := Interface{ID: p.ENI, Name: p.Name}
		for _, a := range p.Addrs {
			itf.Addresses = append(itf.Addresses, a.String())
		}
		out = append(out, c.modelIface(itf, &p.IfaceModel))
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
		out[i].host = c.h.opt.HostID
		if out[i].ID == "" {
			out[i].ID = c.eniID(out[i].Name)
		}
	}
	if c.h.opt.Members == nil {
		return out
	}
	for _, m := range c.h.opt.Members() {
		if m.HostID == c.h.opt.HostID {
			continue // this host's own record: the model is what is in force here
		}
		for _, it := range slices.Concat(m.Interfaces, m.Ports) {
			id := it.NetworkInterfaceID
			if id == "" {
				id = store.InterfaceENI(m.HostID, it.Name)
			}
			if slices.ContainsFunc(out, func(o iface) bool { return o.ID == id }) {
				continue // an ENI id two hosts both give a port: the first one listed keeps it
			}
			out = append(out, iface{Interface: Interface{ID: id, Name: it.Name, Addresses: it.Addresses}, host: m.HostID, remote: true,
				groups: it.Groups, file: it.FileGroups, fileCT: it.FileConnectionTracking})
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
	// ConnectionTracking is the NetworkInterface's ConnectionTrackingConfiguration.
	ConnectionTracking *xmlConnTrack `xml:"connectionTrackingConfiguration,omitempty"`
}

type xmlConnTrack struct {
	TCPEstablished int `xml:"tcpEstablishedTimeout"`
	UDPStream      int `xml:"udpStreamTimeout"`
	UDP            int `xml:"udpTimeout"`
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
		}, func(id string) []tag {
			if i := slices.IndexFunc(all, func(i iface) bool { return i.ID == id }); i >= 0 && all[i].host != "" {
				return []tag{{Key: hostTag, Value: all[i].host}}
			}
			return nil
		})
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
		if itf.host != "" {
			x.Tags = tagList([]tag{{Key: hostTag, Value: itf.host}})
		}
		if to := itf.timeouts; to != nil {
			x.ConnectionTracking = &xmlConnTrack{TCPEstablished: int(to.TCPEstablished.Seconds()), UDPStream: int(to.UDPStream.Seconds()), UDP: int(to.UDP.Seconds())}
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

// modifyNetworkInterfaceAttribute sets the groups an interface carries (--groups) and its
// connection-tracking timeouts (--connection-tracking-specification); what the config
// file sets of an interface is read-only through the API.
func modifyNetworkInterfaceAttribute(c *call) (response, error) {
	id, err := c.q.required("NetworkInterfaceId")
	if err != nil {
		return nil, err
	}
	groups, err := c.q.strs("SecurityGroupId")
	if err != nil {
		return nil, err
	}
	ct, err := connectionTracking(c.q.member("ConnectionTrackingSpecification"))
	if err != nil {
		return nil, err
	}
	if len(groups) == 0 && ct == nil {
		return nil, errf(codeUnsupported, "sgd sets the groups of an interface (SecurityGroupId.N, the CLI's --groups) and its connection tracking (ConnectionTrackingSpecification), nothing else")
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
	if len(groups) > 0 && itf.file {
		return nil, errf(codeReadOnly, "The network interface '%s' (%s) is listed in sgd's config file and is read-only through the API; change its security_groups in the file", id, itf.Name)
	}
	if ct != nil && itf.fileCT {
		return nil, errf(codeReadOnly, "The network interface '%s' (%s) has connection_tracking in sgd's config file, read-only through the API; change it in the file", id, itf.Name)
	}
	err = c.change(func(s *store.Snapshot) error {
		for _, g := range groups {
			// Another host knows the fleet's groups, not this host's file's.
			if s.Group(g) == nil && (itf.remote || c.model.Group(g) == nil) {
				return errf(codeGroupNotFound, "The security group '%s' does not exist", g)
			}
		}
		a := s.Attach(itf.host, itf.Name)
		if len(groups) > 0 {
			a.Groups = groups
		}
		if ct != nil {
			a.ConnectionTracking = ct
		}
		if itf.remote {
			return checkRemote(s, a)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ok("ModifyNetworkInterfaceAttribute"), nil
}

// checkRemote validates a's attachment to another host's interface as that host's
// controller will (this host's validates only its own interfaces): its groups among the
// fleet's, at most AWS's default quota of them, its timeouts in AWS's ranges. What that host
// would refuse would leave it unable to follow any later change of the fleet's state.
func checkRemote(s *store.Snapshot, a *store.Attachment) error {
	c := s.ConfigFor(a.Host)
	c.Interfaces = []rules.Interface{{Name: a.Interface, SecurityGroups: a.Groups, ConnectionTracking: a.ConnectionTracking}}
	_, err := rules.ValidateConfig(&c, remoteLocator{a}, rules.Options{})
	return err
}

// remoteLocator places every problem of checkRemote at the attachment.
type remoteLocator struct{ a *store.Attachment }

func (l remoteLocator) Locate(...any) rules.Location {
	return rules.Location{File: "api: interface " + l.a.Interface + " of host " + l.a.Host}
}

// connectionTracking reads a ConnectionTrackingSpecificationRequest (TcpEstablishedTimeout,
// UdpStreamTimeout, UdpTimeout, in seconds); nil when none is given. The ranges are
// checked with the config's, by the validator.
func connectionTracking(q *query) (*rules.ConnectionTracking, error) {
	var ct rules.ConnectionTracking
	any := false
	for _, f := range []struct {
		name string
		dst  **int
	}{{"TcpEstablishedTimeout", &ct.TCPEstablishedTimeout}, {"UdpStreamTimeout", &ct.UDPStreamTimeout}, {"UdpTimeout", &ct.UDPTimeout}} {
		n, err := q.integer(f.name)
		if err != nil {
			return nil, err
		}
		if n != nil {
			*f.dst, any = n, true
		}
	}
	if !any {
		return nil, nil
	}
	return &ct, nil
}
