package offload

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLabels(t *testing.T) {
	var l Labels
	if l.Any() || l.Has(1) {
		t.Errorf("zero Labels: Any %v, Has(1) %v; want false, false", l.Any(), l.Has(1))
	}
	l = l.With(1).With(64).With(127)
	for z, want := range map[uint16]bool{0: false, 1: true, 2: false, 63: false, 64: true, 127: true, 128: false, 65535: false} {
		if got := l.Has(z); got != want {
			t.Errorf("Labels %x .Has(%d) = %v; want %v", l, z, got, want)
		}
	}
	if got := (Labels{}).With(0).With(128); got != (Labels{}) {
		t.Errorf("With(0).With(128) = %x; want nothing set (not sgd's bits)", got)
	}
	if got := fmt.Sprint(l.Zones(nil)); got != "[1 64 127]" {
		t.Errorf("Zones of bits 1, 64, 127 = %s; want [1 64 127]", got)
	}
	if got := fmt.Sprint((Labels{1 | 1<<9, 1 << 63}).Zones([]uint16{7})); got != "[7 9 127]" {
		t.Errorf("Zones of bits 0, 9, 127 appended to [7] = %s; want [7 9 127] (bit 0 is not sgd's)", got)
	}
	if (Labels{1, 0}).Any() {
		t.Error("Labels with bit 0 alone: Any() = true; want false (bit 0 is not sgd's)")
	}
	// CTA_LABELS is the kernel's bitmap in host order: bit z is bit z%64 of word z/64.
	b := make([]byte, 16)
	binary.NativeEndian.PutUint64(b, 1<<5)
	binary.NativeEndian.PutUint64(b[8:], 1<<(100-64))
	if got := labelsFrom(b); !got.Has(5) || !got.Has(100) || got.Has(6) {
		t.Errorf("labelsFrom(bits 5, 100) = %x; want bits 5 and 100", got)
	}
	if got := labelsFrom(b[:4]); got != (Labels{}) {
		t.Errorf("labelsFrom(4 bytes) = %x; want zero", got)
	}
}

func TestTimeoutNames(t *testing.T) {
	for _, tc := range []struct {
		t        Timeouts
		tcp, udp string
	}{
		{Timeouts{432000, 30, 180}, "sgd-tcp-432000", "sgd-udp-30-180"},
		{Timeouts{60, 30, 60}, "sgd-tcp-60", "sgd-udp-30-60"},
	} {
		if tcp, udp := tc.t.Names(); tcp != tc.tcp || udp != tc.udp {
			t.Errorf("%+v.Names() = %q, %q; want %q, %q", tc.t, tcp, udp, tc.tcp, tc.udp)
		}
	}
	if got := PolicyName("sgd-tcp-60", false); got != "sgd-tcp-60-ipv4" {
		t.Errorf("PolicyName(ipv4) = %q", got)
	}
	if got := PolicyName("sgd-tcp-60", true); got != "sgd-tcp-60-ipv6" {
		t.Errorf("PolicyName(ipv6) = %q", got)
	}
	// The longest names fit the kernel's 31 bytes.
	big := Timeouts{maxTimeout, maxTimeout, maxTimeout}
	for _, o := range big.objects() {
		if len(o.name) > nameMax {
			t.Errorf("object %q: %d bytes; the kernel takes %d", o.name, len(o.name), nameMax)
		}
	}
	for _, tc := range []struct {
		t    Timeouts
		want string
	}{
		{Timeouts{1, 1, 1}, ""},
		{big, ""},
		{Timeouts{0, 30, 60}, "tcp_established"},
		{Timeouts{60, 0, 60}, "udp timeout 0"},
		{Timeouts{60, 30, maxTimeout + 1}, "udp_stream"},
	} {
		err := tc.t.Validate()
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v.Validate() = %v; want %q", tc.t, err, tc.want)
		}
	}
}

func TestSysctls(t *testing.T) {
	dir := t.TempDir()
	write := func(name, v string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	read := func(name string) string {
		v, err := readSysctl(dir, name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	write("nf_conntrack_acct", "0")
	write("nf_conntrack_events", "1")
	s := &Sysctls{Dir: dir}
	changed, err := s.Enable()
	if err != nil || len(changed) != 1 || changed[0] != "nf_conntrack_acct=0→1" {
		t.Fatalf("Enable() = %q, %v; want [nf_conntrack_acct=0→1]", changed, err)
	}
	if again, err := s.Enable(); err != nil || len(again) != 0 {
		t.Errorf("Enable() again = %q, %v; want nothing changed", again, err)
	}
	if read("nf_conntrack_acct") != "1" || read("nf_conntrack_events") != "1" {
		t.Errorf("after Enable: acct %s, events %s; want 1, 1", read("nf_conntrack_acct"), read("nf_conntrack_events"))
	}
	if err := s.Restore(); err != nil {
		t.Fatal(err)
	}
	if read("nf_conntrack_acct") != "0" || read("nf_conntrack_events") != "1" {
		t.Errorf("after Restore: acct %s, events %s; want 0, 1 (as found)", read("nf_conntrack_acct"), read("nf_conntrack_events"))
	}
	if _, err := (&Sysctls{Dir: filepath.Join(dir, "absent")}).Enable(); err == nil {
		t.Error("Enable() without the sysctls = nil; want an error")
	}
}

func TestKernelDefaultsParse(t *testing.T) {
	if _, err := os.Stat(filepath.Join(SysctlDir, "nf_conntrack_udp_timeout")); err != nil {
		t.Skip("no conntrack sysctls here")
	}
	d, err := KernelDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if d.Validate() != nil {
		t.Errorf("KernelDefaults() = %+v: not a valid Timeouts", d)
	}
}
