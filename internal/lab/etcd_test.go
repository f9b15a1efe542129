package lab

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"os"
	"testing"
	"time"
)

// requireEtcd returns the etcd binary; it skips the test when there is none, and fails it
// under CI, which installs etcd-server.
func requireEtcd(t *testing.T) string {
	t.Helper()
	bin, err := FindEtcd()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v, and CI must run this test (.ci/run installs etcd-server)", err)
		}
		t.Skip(err)
	}
	return bin
}

// An etcd started in a namespace answers on its address from another namespace of the
// lab, and Cleanup stops it and removes its data.
func TestStartEtcd(t *testing.T) {
	l := newLab(t, "sgd-labtest")
	bin := requireEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := &Host{Role: "etcd", Dev: "eth0", Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/24")}}
	b := &Host{Role: "cli", Dev: "eth0", Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.3/24")}}
	if err := l.Pair(ctx, a, b); err != nil {
		t.Fatalf("Pair() = %v", err)
	}
	e, err := l.StartEtcd(ctx, bin, a.NS, "e1", netip.MustParseAddr("192.0.2.2"))
	if err != nil {
		t.Fatalf("StartEtcd() = %v", err)
	}
	if got, want := e.URL(), "http://192.0.2.2:2379"; got != want {
		t.Errorf("URL() = %q; want %q", got, want)
	}
	// From the other end of the pair: healthy.
	cl := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return DialContext(ctx, b.NS, network, addr)
	}}}
	if err := etcdHealth(ctx, cl, e.URL()+"/health"); err != nil {
		t.Errorf("/health from %s = %v; want healthy", b.NS, err)
	}
	if _, err := os.Stat(e.DataDir); err != nil {
		t.Errorf("data directory %s: %v", e.DataDir, err)
	}
	if err := l.Cleanup(); err != nil {
		t.Fatalf("Cleanup() = %v", err)
	}
	select {
	case <-e.Done():
	default:
		t.Errorf("etcd (pid %d) still runs after Cleanup", e.PID())
	}
	if _, err := os.Stat(e.DataDir); !os.IsNotExist(err) {
		t.Errorf("data directory %s after Cleanup: %v; want it gone", e.DataDir, err)
	}
	if Exists(a.NS) {
		t.Errorf("namespace %s exists after Cleanup", a.NS)
	}
}
