package ec2api

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/sgd-firewall/sgd/internal/store"
)

// In fleet mode (SPEC 4.6) the API of host a lists every host's interfaces, each ENI
// id its host's own, and sets the groups of another host's interface as an attachment of
// that host's; what that host's file sets, or could not validate, is refused.
func TestFleetENIs(t *testing.T) {
	b := store.Member{HostID: "b",
		Interfaces: []store.MemberInterface{
			{Name: "eth0", NetworkInterfaceID: store.InterfaceENI("b", "eth0"), Addresses: []string{"192.0.2.20"}, Groups: []string{"sg-b-file"}},
			{Name: "eth1", NetworkInterfaceID: store.InterfaceENI("b", "eth1"), Addresses: []string{"192.0.2.21"}, Groups: []string{"sg-b-file"}, FileGroups: true}},
		Ports: []store.MemberInterface{{Name: "vweb", NetworkInterfaceID: "eni-web", Addresses: []string{"198.51.100.10"}, Groups: []string{"sg-x"}}}}
	r := &rig{t: t, dir: t.TempDir(), host: "a", options: func(o *Options) {
		o.HostID = "a"
		o.Members = func() []store.Member { return []store.Member{{HostID: "a"}, b} }
	}}
	r.file = filepath.Join(r.dir, "sgd.yaml")
	if err := os.WriteFile(r.file, []byte(fileConfig+"interfaces: [{name: eth0}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.open(filepath.Join(r.dir, "state"))
	ctx, c := r.ctx(), r.client

	out, err := c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{})
	if err != nil {
		t.Fatal(err)
	}
	type eni struct{ id, host, addr string }
	var got []eni
	for _, n := range out.NetworkInterfaces {
		host := ""
		for _, tg := range n.TagSet {
			if aws.ToString(tg.Key) == "sgd:host-id" {
				host = aws.ToString(tg.Value)
			}
		}
		got = append(got, eni{aws.ToString(n.NetworkInterfaceId), host, aws.ToString(n.PrivateIpAddress)})
	}
	want := []eni{{store.InterfaceENI("a", "eth0"), "a", "192.0.2.10"}, {store.InterfaceENI("b", "eth0"), "b", "192.0.2.20"},
		{store.InterfaceENI("b", "eth1"), "b", "192.0.2.21"}, {"eni-web", "b", "198.51.100.10"}}
	if !slices.Equal(got, want) {
		t.Fatalf("DescribeNetworkInterfaces = %v; want %v", got, want)
	}
	only, err := c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{
		Filters: []types.Filter{{Name: aws.String("tag:sgd:host-id"), Values: []string{"a"}}}})
	if err != nil || len(only.NetworkInterfaces) != 1 {
		t.Errorf("DescribeNetworkInterfaces(tag:sgd:host-id=a) = %+v, %v; want a's one interface", only, err)
	}

	cg, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("web"), Description: aws.String("web")})
	if err != nil {
		t.Fatal(err)
	}
	modify := func(id string, groups ...string) error {
		_, err := c.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String(id), Groups: groups})
		return err
	}
	spec := func(id string, udp int32) error {
		_, err := c.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String(id),
			ConnectionTrackingSpecification: &types.ConnectionTrackingSpecificationRequest{UdpTimeout: aws.Int32(udp)}})
		return err
	}
	// b's eth0 carries the fleet's group: stored as b's attachment, nothing changes on a.
	if err := modify(store.InterfaceENI("b", "eth0"), *cg.GroupId); err != nil {
		t.Fatalf("ModifyNetworkInterfaceAttribute(b's eth0) = %v", err)
	}
	if a := r.src.Snapshot().Attachment("b", "eth0"); a == nil || a.Host != "b" || !slices.Equal(a.Groups, []string{*cg.GroupId}) {
		t.Errorf("b's attachment = %+v; want b's eth0 carrying %s", a, *cg.GroupId)
	}
	if a := r.src.Snapshot().Attachment("a", "eth0"); a != nil {
		t.Errorf("a's attachment = %+v; want none", a)
	}
	if g := r.ctl.Running().Model.Interfaces[0].Groups; len(g) != 1 || g[0] == *cg.GroupId {
		t.Errorf("a's eth0 carries %v; want its default group still", g)
	}
	for _, tt := range []struct {
		what, code string
		err        error
	}{
		{"a group of a's own file, unknown to b", "InvalidGroup.NotFound", modify(store.InterfaceENI("b", "eth0"), "sg-file")},
		{"b's eth1, whose groups b's file sets", "OperationNotPermitted", modify(store.InterfaceENI("b", "eth1"), *cg.GroupId)},
		{"a udp timeout b would refuse", "InvalidParameterValue", spec(store.InterfaceENI("b", "eth0"), 10)},
		{"an interface of a single host's id", "InvalidNetworkInterfaceID.NotFound", modify(store.InterfaceENI("", "eth0"), *cg.GroupId)},
	} {
		if code(tt.err) != tt.code {
			t.Errorf("%s: %v; want %s", tt.what, tt.err, tt.code)
		}
	}
	if err := spec(store.InterfaceENI("b", "eth0"), 45); err != nil {
		t.Errorf("a udp timeout in range on b's eth0 = %v", err)
	}
	// b's attachment depends on the group, though a's model does not know it.
	if _, err := c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: cg.GroupId}); code(err) != "DependencyViolation" {
		t.Errorf("DeleteSecurityGroup of a group b's eth0 carries = %v; want DependencyViolation", err)
	}
	// a's own eth0: a's attachment, in force on a.
	if err := modify(store.InterfaceENI("a", "eth0"), *cg.GroupId); err != nil {
		t.Fatal(err)
	}
	if a := r.src.Snapshot().Attachment("a", "eth0"); a == nil || a.Host != "a" {
		t.Errorf("a's attachment = %+v; want a's own", a)
	}
	if g := r.ctl.Running().Model.Interfaces[0].Groups; !slices.Equal(g, []string{*cg.GroupId}) {
		t.Errorf("a's eth0 carries %v; want %s", g, *cg.GroupId)
	}
}
