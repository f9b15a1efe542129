package bench

import (
	"strings"
	"testing"

	"github.com/sgd-firewall/sgd/internal/rules"
)

func TestForwardedKernelRules(t *testing.T) {
	for _, want := range []string{
		"-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n",
		"-A FORWARD -m physdev --physdev-in vclient --physdev-is-bridged ! -d 192.0.2.1/32 -j DROP\n",
		"-A FORWARD -m physdev --physdev-out vserver --physdev-is-bridged -s 192.0.2.2/32 -p tcp -m tcp --dport 5201 -j ACCEPT\n",
		"-A FORWARD -m physdev --physdev-out vserver --physdev-is-bridged -s 192.0.2.2/32 -p udp -m udp --dport 5202 -j ACCEPT\n",
		"-A FORWARD -m physdev --physdev-out vserver --physdev-is-bridged -s 192.0.2.2/32 -p tcp -m tcp --dport 5203 -j ACCEPT\n",
		"-A FORWARD -m physdev --physdev-out vserver --physdev-is-bridged -j DROP\n",
		"-A FORWARD -m physdev --physdev-out vclient --physdev-is-bridged -j DROP\nCOMMIT\n",
	} {
		if !strings.Contains(kernelForwardedRules, want) {
			t.Errorf("kernelForwardedRules lacks %q:\n%s", want, kernelForwardedRules)
		}
	}
	if strings.Contains(kernelForwardedRules, "-A INPUT") {
		t.Errorf("kernelForwardedRules filters INPUT; the hypervisor judges FORWARD only:\n%s", kernelForwardedRules)
	}
	// The veth pair's rules are what they were before the forwarded paths came.
	if want := "-A INPUT -i eth0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A INPUT -i eth0 -s 192.0.2.2/32 -p tcp -m tcp --dport 5201 -j ACCEPT\n"; !strings.Contains(kernelRules, want) {
		t.Errorf("kernelRules lacks %q:\n%s", want, kernelRules)
	}
}

func TestBenchConfigsLoad(t *testing.T) {
	for _, tc := range []struct {
		name, text            string
		ports, ifaces, groups int
	}{
		{"sgdConfig", sgdConfig, 0, 1, 1},
		{"sgdForwardedConfig", sgdForwardedConfig, 2, 0, 2},
	} {
		doc, err := rules.Parse(tc.name, []byte(tc.text))
		if err == nil {
			_, err = rules.Validate(doc, rules.Options{})
		}
		if err != nil {
			t.Errorf("rules.Parse/Validate(%s) = %v\n%s", tc.name, err, tc.text)
			continue
		}
		c := doc.Config
		if len(c.Ports) != tc.ports || len(c.Interfaces) != tc.ifaces || len(c.SecurityGroups) != tc.groups {
			t.Errorf("%s: %d ports, %d interfaces, %d groups; want %d, %d, %d", tc.name,
				len(c.Ports), len(c.Interfaces), len(c.SecurityGroups), tc.ports, tc.ifaces, tc.groups)
		}
	}
	for _, want := range []string{"name: vserver, addresses: [192.0.2.1], security_groups: [sg-bench]}",
		"name: vclient, addresses: [192.0.2.2], security_groups: [sg-bench-client]}",
		`{ip_protocol: "-1", cidr_ipv4: 192.0.2.1/32`} {
		if !strings.Contains(sgdForwardedConfig, want) {
			t.Errorf("sgdForwardedConfig lacks %q:\n%s", want, sgdForwardedConfig)
		}
	}
}

func TestPathKinds(t *testing.T) {
	for _, tc := range []struct {
		p                         Path
		forwarded, filters, isSGD bool
	}{
		{Raw, false, false, false},
		{Kernel, false, true, false},
		{SGDFastPath, false, true, true},
		{FwdRaw, true, false, false},
		{FwdKernel, true, true, false},
		{FwdSGD, true, true, true},
	} {
		if f, fl, s := tc.p.Forwarded(), tc.p.filters(), tc.p.runsSGD(); f != tc.forwarded || fl != tc.filters || s != tc.isSGD {
			t.Errorf("%s: Forwarded, filters, runsSGD = %v, %v, %v; want %v, %v, %v", tc.p, f, fl, s, tc.forwarded, tc.filters, tc.isSGD)
		}
	}
}
