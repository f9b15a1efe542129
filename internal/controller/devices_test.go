package controller

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// linkMessage builds an RTM_NEWLINK body as the kernel sends it: ifinfomsg, IFLA_IFNAME,
// IFLA_MASTER when master is set, and IFLA_LINKINFO with the kinds that are set.
func linkMessage(t *testing.T, index uint32, name string, master uint32, kind, slaveKind string) []byte {
	t.Helper()
	b := make([]byte, unix.SizeofIfInfomsg)
	b[0] = unix.AF_UNSPEC                       // ifi_family
	binary.NativeEndian.PutUint16(b[2:], 1)     // ifi_type ARPHRD_ETHER
	binary.NativeEndian.PutUint32(b[4:], index) // ifi_index
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.IFLA_IFNAME, name)
	ae.Uint32(unix.IFLA_MTU, 1500)
	if master != 0 {
		ae.Uint32(unix.IFLA_MASTER, master)
	}
	ae.Nested(unix.IFLA_LINKINFO, func(nae *netlink.AttributeEncoder) error {
		if kind != "" {
			nae.String(unix.IFLA_INFO_KIND, kind)
		}
		if slaveKind != "" {
			nae.String(unix.IFLA_INFO_SLAVE_KIND, slaveKind)
		}
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return append(b, attrs...)
}

func TestParseLink(t *testing.T) {
	for _, tc := range []struct {
		msg  []byte
		want device
	}{
		{linkMessage(t, 4, "eth1", 7, "", "bond"), device{name: "eth1", index: 4, master: 7}},
		{linkMessage(t, 7, "bond0", 0, "bond", ""), device{name: "bond0", index: 7, kind: "bond"}},
		{linkMessage(t, 9, "veth0", 3, "veth", "bridge"), device{name: "veth0", index: 9, kind: "veth", master: 3}},
	} {
		got, err := parseLink(tc.msg)
		if err != nil || got != tc.want {
			t.Errorf("parseLink(%s) = %+v, %v; want %+v", tc.want.name, got, err, tc.want)
		}
	}
	if _, err := parseLink(make([]byte, 10)); err == nil {
		t.Error("parseLink(10 bytes) succeeded; want an error (shorter than ifinfomsg)")
	}
}

// TestEnslaved: the kernel does not build bonding here (CONFIG_BONDING is off on the test
// machine), so the bond case is checked on the classification; test/netns checks a real
// bridge port end to end.
func TestEnslaved(t *testing.T) {
	for _, tc := range []struct {
		master device
		want   string // "" for no error
	}{
		{device{name: "br0", kind: "bridge"}, "interface eth1 is a port of bridge br0: its IP traffic is filtered on br0; name br0 in interfaces (a future hypervisor mode will list bridge ports under ports:)"},
		{device{name: "bond0", kind: "bond"}, "interface eth1 is a member of bond bond0: its IP traffic is filtered on bond0; name bond0 in interfaces"},
		{device{name: "team0", kind: "team"}, "interface eth1 is a member of team team0: its IP traffic is filtered on team0; name team0 in interfaces"},
		{device{name: "ovs-system", kind: "openvswitch"}, "interface eth1 is a port of an Open vSwitch bridge (ovs-system)"},
		{device{name: "vrf-blue", kind: "vrf"}, ""},
		{device{name: "x0", kind: ""}, ""},
	} {
		err := enslaved("eth1", tc.master)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("enslaved(eth1, %s %s) = %v; want nil", tc.master.kind, tc.master.name, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("enslaved(eth1, %s %s) = %v; want %q", tc.master.kind, tc.master.name, err, tc.want)
		}
	}
}

// TestCheckDevices asks this process's rtnetlink (no root needed): loopback is nobody's
// port, and a device that does not exist is not this check's business.
func TestCheckDevices(t *testing.T) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		t.Skipf("no rtnetlink here: %v", err)
	}
	defer c.Close()
	lo, ok, err := getLink(c, 0, "lo")
	if err != nil || !ok || lo.name != "lo" || lo.index == 0 || lo.master != 0 {
		t.Fatalf("getLink(lo) = %+v, %v, %v; want loopback with an index and no master", lo, ok, err)
	}
	if again, ok, err := getLink(c, lo.index, ""); err != nil || !ok || again.name != "lo" {
		t.Errorf("getLink(index %d) = %+v, %v, %v; want lo", lo.index, again, ok, err)
	}
	if _, ok, err := getLink(c, 0, "sgdnosuch0"); ok || err != nil {
		t.Errorf("getLink(sgdnosuch0) = %v, %v; want not found, no error", ok, err)
	}
	if err := checkDevices([]string{"lo", "sgdnosuch0"}); err != nil {
		t.Errorf("checkDevices(lo, sgdnosuch0) = %v; want nil", err)
	}
}
