package packet

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sgd-firewall/sgd/internal/ipproto"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/fuzz/FuzzDecode from decodeCases")

// seedDir holds FuzzDecode's seed corpus: one file per decodeCases row.
var seedDir = filepath.Join("testdata", "fuzz", "FuzzDecode")

// seedFile returns a case's seed in the corpus file format of go test -fuzz.
func seedFile(b []byte) string {
	return fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
}

func seedName(caseName string) string {
	return strings.ReplaceAll(caseName, "/", "_")
}

// TestFuzzSeeds keeps the seed corpus in step with decodeCases: every case has its
// seed file. go test -run TestFuzzSeeds -update-seeds rewrites them.
func TestFuzzSeeds(t *testing.T) {
	if *updateSeeds {
		if err := os.MkdirAll(seedDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range decodeCases() {
		path := filepath.Join(seedDir, seedName(tc.name))
		want := seedFile(tc.b)
		if *updateSeeds {
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Errorf("seed %s is missing or stale (err %v); run go test -run TestFuzzSeeds -update-seeds", path, err)
		}
	}
}

// FuzzDecode checks that Decode never panics, that what it accepts is coherent, and that
// its result depends on the packet alone, not on the packets decoded before.
func FuzzDecode(f *testing.F) {
	d, ref := NewDecoder(), NewDecoder()
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Parsed
		ok := d.Decode(b, &p)
		var q Parsed
		ref.Decode(v6HopFragSYN, &q)
		if ref.Decode(b, &q) != ok || q != p {
			t.Fatalf("Decode(% x) = %v; after another packet %v", b, p.String(), q.String())
		}
		if !ok {
			if p != (Parsed{}) {
				t.Fatalf("Decode(% x) = false, %v; want the zero Parsed", b, p.String())
			}
			return
		}
		if !validAddrs(p.Family, p.Src, p.Dst) {
			t.Fatalf("Decode(% x) = true, family %d src %v dst %v; want family 4 or 6 with its addresses", b, p.Family, p.Src, p.Dst)
		}
		if p.Length <= 0 {
			t.Fatalf("Decode(% x) = Length %d; want > 0", b, p.Length)
		}
		if p.Proto != ipproto.TCP && p.Proto != ipproto.UDP && (p.SrcPort != 0 || p.DstPort != 0) || p.Proto != ipproto.TCP && p.TCPFlags != 0 {
			t.Fatalf("Decode(% x) = %v with ports %d %d flags %#x", b, p.String(), p.SrcPort, p.DstPort, p.TCPFlags)
		}
		if !isICMP(p.Family, p.Proto) && (p.ICMPType != 0 || p.ICMPCode != 0 || p.ICMPID != 0 || p.Inner != InnerHeader{}) {
			t.Fatalf("Decode(% x) = %v with ICMP fields %+v", b, p.String(), p)
		}
		if in := p.Inner; in.Valid && !validAddrs(p.Family, in.Src, in.Dst) {
			t.Fatalf("Decode(% x) = %v; inner addresses not of family %d", b, p.String(), p.Family)
		}
	})
}

// validAddrs reports whether src and dst are valid addresses of the family.
func validAddrs(family uint8, src, dst netip.Addr) bool {
	switch family {
	case 4:
		return src.Is4() && dst.Is4()
	case 6:
		return src.Is6() && dst.Is6()
	}
	return false
}
