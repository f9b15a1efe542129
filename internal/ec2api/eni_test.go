package ec2api

import (
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// ModifyNetworkInterfaceAttribute's connection-tracking specification sets an interface's
// timeouts (validated as the file's: AWS's ranges), and DescribeNetworkInterfaces shows
// the timeouts in force.
func TestSDKConnectionTracking(t *testing.T) {
	r := newRig(t)
	ctx := r.ctx()
	c := r.client
	enis, err := c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{})
	if err != nil || len(enis.NetworkInterfaces) != 1 {
		t.Fatalf("DescribeNetworkInterfaces = %+v, %v", enis, err)
	}
	eni := enis.NetworkInterfaces[0].NetworkInterfaceId
	spec := func(tcp, udp, stream int32) *types.ConnectionTrackingSpecificationRequest {
		return &types.ConnectionTrackingSpecificationRequest{TcpEstablishedTimeout: aws.Int32(tcp), UdpTimeout: aws.Int32(udp), UdpStreamTimeout: aws.Int32(stream)}
	}
	if _, err := c.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: eni,
		ConnectionTrackingSpecification: spec(300, 45, 120)}); err != nil {
		t.Fatalf("ModifyNetworkInterfaceAttribute(connection tracking) = %v", err)
	}
	running := r.ctl.Running().Model.Interfaces
	if len(running) != 1 || running[0].Timeouts.TCPEstablished != 300*time.Second || running[0].Timeouts.UDP != 45*time.Second || running[0].Timeouts.UDPStream != 120*time.Second {
		t.Errorf("running timeouts = %+v; want 300/45/120 s", running)
	}
	enis, err = c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{})
	if err != nil {
		t.Fatal(err)
	}
	if ct := enis.NetworkInterfaces[0].ConnectionTrackingConfiguration; ct == nil || aws.ToInt32(ct.TcpEstablishedTimeout) != 300 ||
		aws.ToInt32(ct.UdpTimeout) != 45 || aws.ToInt32(ct.UdpStreamTimeout) != 120 {
		t.Errorf("ConnectionTrackingConfiguration = %+v; want 300/45/120", ct)
	}
	// udp_timeout is 30–60 s in AWS: refused, nothing changes.
	if _, err := c.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: eni,
		ConnectionTrackingSpecification: spec(300, 10, 120)}); code(err) != "InvalidParameterValue" {
		t.Errorf("udp timeout 10 s = %v; want InvalidParameterValue", err)
	}
	if got := r.ctl.Running().Model.Interfaces[0].Timeouts.UDP; got != 45*time.Second {
		t.Errorf("after a refused change the udp timeout is %v; want 45s still", got)
	}
	// Setting groups later keeps the timeouts: both are the API's.
	cg, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("ct"), Description: aws.String("x")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: eni, Groups: []string{*cg.GroupId}}); err != nil {
		t.Fatal(err)
	}
	if itf := r.ctl.Running().Model.Interfaces[0]; itf.Timeouts.TCPEstablished != 300*time.Second || len(itf.Groups) != 1 || itf.Groups[0] != *cg.GroupId {
		t.Errorf("after --groups: %+v; want the group and the timeouts kept", itf)
	}
}

// A port of the file (hypervisor mode) is a network interface of the API: listed with its
// ENI id and addresses, and its groups set through the API when the file gives it none.
func TestSDKPortAsENI(t *testing.T) {
	r := newRig(t)
	if err := os.WriteFile(r.file, []byte(fileConfig+"ports:\n  - {name: vweb, network_interface_id: eni-0123456789abcdef0, addresses: [198.51.100.10]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := r.ctx()
	if err := r.ctl.Reload(ctx, "test: a port in the file"); err != nil {
		t.Fatal(err)
	}
	c := r.client
	enis, err := c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{"eni-0123456789abcdef0"}})
	if err != nil || len(enis.NetworkInterfaces) != 1 || aws.ToString(enis.NetworkInterfaces[0].Description) != "vweb" ||
		aws.ToString(enis.NetworkInterfaces[0].PrivateIpAddress) != "198.51.100.10" {
		t.Fatalf("DescribeNetworkInterfaces(the port's ENI) = %+v, %v", enis, err)
	}
	if _, err := c.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String("eni-0123456789abcdef0"),
		Groups: []string{"sg-file"}}); err != nil {
		t.Fatalf("ModifyNetworkInterfaceAttribute(port, --groups) = %v", err)
	}
	ports := r.ctl.Running().Model.Ports
	if len(ports) != 1 || len(ports[0].Groups) != 1 || ports[0].Groups[0] != "sg-file" || len(r.ctl.Running().Model.Interfaces) != 0 {
		t.Errorf("running ports = %+v; want vweb carrying sg-file (and no interface of that name)", ports)
	}
}
