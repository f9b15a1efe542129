package daemon

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sgd-firewall/sgd/internal/conntrack"
	"github.com/sgd-firewall/sgd/internal/filter"
	"github.com/sgd-firewall/sgd/internal/offload"
)

func TestLimiter(t *testing.T) {
	l := limiter{rate: 2}
	var got []bool
	for _, sec := range []int64{1, 1, 1, 2, 2, 2} {
		got = append(got, l.allow(sec))
	}
	want := []bool{true, true, false, true, true, false}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("allow sequence = %v; want %v", got, want)
		}
	}
	if n := l.suppressed.Load(); n != 2 {
		t.Errorf("suppressed = %d; want 2", n)
	}
	if (&limiter{}).allow(1) {
		t.Error("a zero-rate limiter allowed a log line")
	}
}

// sshOnly allows ssh to eth0 from one address.
const sshOnly = `
security_groups:
  - group_id: sg-a
    ingress:
      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 198.51.100.7/32}
interfaces:
  - {name: eth0, security_groups: [sg-a]}
`

// judge returns a worker of a real engine judging cfg, with eth0 at index 2, and the
// engine's connection table.
func judge(t *testing.T, cfg string) (*filter.Worker, *conntrack.Table) {
	t.Helper()
	table := conntrack.New(conntrack.Config{})
	e := filter.New(filter.Options{Table: table, Now: func() int64 { return 1 },
		IfName: func(uint32) (string, bool) { return "eth0", true }})
	w := e.NewWorker()
	e.SetPolicy(policy(t, cfg), filter.Host{Index: map[string]uint32{"eth0": 2}})
	return w, table
}

// syn is a TCP SYN from src:40000 to 192.0.2.10:22.
func syn(src string) []byte {
	b := []byte{
		0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, // IPv4, total length 40, TTL 64, TCP
		0, 0, 0, 0, 192, 0, 2, 10, // source (set below), destination 192.0.2.10
		0x9c, 0x40, 0, 22, 0, 0, 0, 0, 0, 0, 0, 0, // ports 40000 → 22, seq, ack
		0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0, // data offset 5, SYN, window
	}
	a := netip.MustParseAddr(src).As4()
	copy(b[12:16], a[:])
	return b
}

// TestFlowLog feeds judged packets through a real engine and checks the VPC Flow Log v2
// records written for them.
func TestFlowLog(t *testing.T) {
	w, _ := judge(t, sshOnly)
	path := filepath.Join(t.TempDir(), "flows.log")
	fl, err := newFlowLog(path, time.Minute, "123456789012", 1)
	if err != nil {
		t.Fatal(err)
	}
	syn := func(src string) []byte {
		b := []byte{
			0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, // IPv4, total length 40, TTL 64, TCP
			0, 0, 0, 0, 192, 0, 2, 10, // source (set below), destination 192.0.2.10
			0x9c, 0x40, 0, 22, 0, 0, 0, 0, 0, 0, 0, 0, // ports 40000 → 22, seq, ack
			0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0, // data offset 5, SYN, window
		}
		var a [4]byte
		for i, part := range strings.Split(src, ".") {
			var n int
			for _, c := range part {
				n = n*10 + int(c-'0')
			}
			a[i] = byte(n)
		}
		copy(b[12:16], a[:])
		return b
	}
	for _, src := range []string{"198.51.100.7", "198.51.100.7", "203.0.113.9"} {
		r := w.Judge(syn(src), filter.Point{Dev: 2, Dir: filter.DirIngress})
		fl.record(w, r)
	}
	fl.flush(zap.NewNop())
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 {
		t.Fatalf("flow log has %d records; want 2 (one per flow and action):\n%s", len(lines), data)
	}
	var accept, reject string
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 14 {
			t.Fatalf("record %q has %d fields; want 14 (VPC Flow Logs v2)", l, len(f))
		}
		switch f[12] {
		case "ACCEPT":
			accept = strings.Join(append(f[:10:10], f[12:]...), " ")
		case "REJECT":
			reject = strings.Join(append(f[:10:10], f[12:]...), " ")
		}
	}
	if want := "2 123456789012 eth0 198.51.100.7 192.0.2.10 40000 22 6 2 80 ACCEPT OK"; accept != want {
		t.Errorf("accept record = %q; want %q", accept, want)
	}
	if want := "2 123456789012 eth0 203.0.113.9 192.0.2.10 40000 22 6 1 40 REJECT OK"; reject != want {
		t.Errorf("reject record = %q; want %q", reject, want)
	}

	// Past the cap, new flows are left out and counted in one SKIPDATA record.
	fl.maxFlows = 1
	for _, src := range []string{"198.51.100.7", "203.0.113.9", "203.0.113.10"} {
		fl.record(w, w.Judge(syn(src), filter.Point{Dev: 2, Dir: filter.DirIngress}))
	}
	fl.flush(zap.NewNop())
	data, _ = os.ReadFile(path)
	lines = strings.Split(strings.TrimSpace(string(data)), "\n")[2:]
	if len(lines) != 2 || !strings.HasSuffix(lines[1], " - SKIPDATA") || !strings.HasPrefix(lines[1], "2 123456789012 - - - - - - - ") {
		t.Errorf("records past the cap = %q; want one flow record and one SKIPDATA record", lines)
	}
}

// TestUnitFileVerifies runs systemd-analyze verify on the shipped unit, pointed at a
// built binary (verify checks that ExecStart exists).
func TestUnitFileVerifies(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (CI installs systemd)")
	}
	unit, err := os.ReadFile("../../deploy/systemd/sgd.service")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "sgd")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/sgd").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	path := filepath.Join(dir, "sgd.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/sgd", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, want := range []string{"Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure", "WatchdogSec=", "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q", want)
		}
	}
}

// The judge and the kernel agree on which zones a connection label can carry.
func TestOffloadZoneLimitsAgree(t *testing.T) {
	if filter.MaxOffloadZone != offload.MaxZone {
		t.Errorf("filter.MaxOffloadZone = %d, offload.MaxZone = %d; want them equal", filter.MaxOffloadZone, offload.MaxZone)
	}
}
