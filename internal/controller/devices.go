package controller

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// device is what sgd needs to know of a network device.
type device struct {
	name   string
	index  uint32
	kind   string // IFLA_INFO_KIND: "bridge", "bond", "veth", …; "" for a plain device
	master uint32 // ifindex of the device this one is enslaved to (IFLA_MASTER); 0 for none
}

// checkDevices refuses interfaces sgd could not filter by their own name: a bridge port
// or a bond (or team) member hands every frame it receives to its master device, so the
// host's IP traffic through it reaches netfilter as traffic of the master (INPUT's -i and
// OUTPUT's -o name the bridge or the bond), and rules naming the port would silently
// filter nothing. Devices are read from rtnetlink, in the caller's own network namespace
// (sysfs would show the namespace of whoever mounted it). Interfaces that do not exist
// are not this check's business.
func checkDevices(names []string) error {
	if len(names) == 0 {
		return nil
	}
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return fmt.Errorf("rtnetlink (to check the interfaces): %w", err)
	}
	defer c.Close()
	var errs []error
	for _, name := range names {
		dev, ok, err := getLink(c, 0, name)
		if err != nil {
			errs = append(errs, fmt.Errorf("interface %s: %w", name, err))
			continue
		}
		if !ok || dev.master == 0 {
			continue
		}
		master, ok, err := getLink(c, dev.master, "")
		if err != nil {
			errs = append(errs, fmt.Errorf("interface %s is enslaved to device %d, which cannot be read: %w", name, dev.master, err))
			continue
		}
		if !ok {
			continue // the master went away meanwhile: dev is free again
		}
		if err := enslaved(name, master); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// enslaved says why naming dev, enslaved to master, would filter none of dev's IP
// traffic, and which device to name instead; nil when the master leaves the traffic on
// dev (a VRF, for one, and kinds sgd does not know).
func enslaved(dev string, master device) error {
	switch master.kind {
	case "bridge":
		return fmt.Errorf("interface %s is a port of bridge %s: its IP traffic is filtered on %s; name %s in interfaces (a future hypervisor mode will list bridge ports under ports:)",
			dev, master.name, master.name, master.name)
	case "bond", "team":
		return fmt.Errorf("interface %s is a member of %s %s: its IP traffic is filtered on %s; name %s in interfaces",
			dev, master.kind, master.name, master.name, master.name)
	case "openvswitch":
		return fmt.Errorf("interface %s is a port of an Open vSwitch bridge (%s): its IP traffic is filtered on the bridge's internal port; name that in interfaces",
			dev, master.name)
	}
	return nil
}

// getLink asks rtnetlink for one device, by index, or by name when index is 0; ok is
// false when there is no such device.
func getLink(c *netlink.Conn, index uint32, name string) (dev device, ok bool, err error) {
	req := make([]byte, unix.SizeofIfInfomsg) // ifinfomsg: family, pad, type, index, flags, change
	binary.NativeEndian.PutUint32(req[4:], index)
	if index == 0 {
		ae := netlink.NewAttributeEncoder()
		ae.String(unix.IFLA_IFNAME, name)
		attrs, err := ae.Encode()
		if err != nil {
			return device{}, false, err
		}
		req = append(req, attrs...)
	}
	msgs, err := c.Execute(netlink.Message{Header: netlink.Header{Type: unix.RTM_GETLINK, Flags: netlink.Request}, Data: req})
	if errors.Is(err, unix.ENODEV) {
		return device{}, false, nil
	}
	if err != nil {
		return device{}, false, err
	}
	for _, m := range msgs {
		if m.Header.Type == unix.RTM_NEWLINK {
			dev, err := parseLink(m.Data)
			return dev, err == nil, err
		}
	}
	return device{}, false, errors.New("rtnetlink answered without the device")
}

// parseLink reads an RTM_NEWLINK message's body (ifinfomsg and attributes).
func parseLink(b []byte) (device, error) {
	if len(b) < unix.SizeofIfInfomsg {
		return device{}, fmt.Errorf("rtnetlink: link message of %d bytes", len(b))
	}
	dev := device{index: binary.NativeEndian.Uint32(b[4:])}
	ad, err := netlink.NewAttributeDecoder(b[unix.SizeofIfInfomsg:])
	if err != nil {
		return device{}, err
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.IFLA_IFNAME:
			dev.name = ad.String()
		case unix.IFLA_MASTER:
			dev.master = ad.Uint32()
		case unix.IFLA_LINKINFO:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					if nad.Type() == unix.IFLA_INFO_KIND {
						dev.kind = nad.String()
					}
				}
				return nil
			})
		}
	}
	return dev, ad.Err()
}
