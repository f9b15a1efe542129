// Package etcdtest runs a real one-member etcd cluster inside a test process (etcd's embed
// package), for the tests of fleet mode: no mock of etcd stands in for it.
package etcdtest

import (
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Server is a one-member etcd cluster on a loopback address of its own (127.x.y.z) with its
// data in a temporary directory. It can be stopped and started again on the same address,
// ports and data. Not safe for use by several goroutines.
//
// The address is its own because a port asked of the kernel and then released is free for
// anyone until etcd binds it: test packages run at once, and every other listener and
// every client's source port on 127.0.0.1 comes from the same ephemeral range.
type Server struct {
	t      testing.TB
	cfg    *embed.Config
	e      *embed.Etcd
	Client string // the client URL, http://127.x.y.z:PORT
}

// binds is how many times Start tries fresh ports when etcd finds one taken.
const binds = 5

// Start starts a server that the test's cleanup stops.
func Start(t testing.TB) *Server {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.LogLevel = "error"
	s := &Server{t: t, cfg: cfg}
	t.Cleanup(s.Stop)
	for try := 1; ; try++ {
		cfg.Dir = t.TempDir()
		s.listenOn(loopback())
		err := s.start()
		if err == nil {
			return s
		}
		if !errors.Is(err, syscall.EADDRINUSE) || try == binds {
			t.Fatalf("start etcd: %v", err)
		}
	}
}

// loopback returns a random address in 127.0.0.0/8 other than 127.0.0.1.
func loopback() netip.Addr {
	for {
		a := netip.AddrFrom4([4]byte{127, byte(rand.IntN(256)), byte(rand.IntN(256)), byte(1 + rand.IntN(254))})
		if a != netip.AddrFrom4([4]byte{127, 0, 0, 1}) {
			return a
		}
	}
}

// listenOn points the server's peer and client URLs at two ports free on addr.
func (s *Server) listenOn(addr netip.Addr) {
	peer, client := freeURL(s.t, addr), freeURL(s.t, addr)
	s.cfg.ListenPeerUrls, s.cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	s.cfg.ListenClientUrls, s.cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	s.cfg.InitialCluster = s.cfg.InitialClusterFromName(s.cfg.Name)
	s.Client = client.String()
}

func freeURL(t testing.TB, addr netip.Addr) url.URL {
	t.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: l.Addr().String()}
}

// Start (re)starts the server on its address, ports and data and waits until it is ready.
func (s *Server) Start() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("start etcd: %v", err)
	}
}

func (s *Server) start() error {
	e, err := embed.StartEtcd(s.cfg)
	if err != nil {
		return err
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(10 * time.Second):
		e.Close()
		return errors.New("etcd did not become ready")
	}
	s.e = e
	return nil
}

// Stop stops the server (its data stays); a stopped server's Stop does nothing.
func (s *Server) Stop() {
	if s.e != nil {
		s.e.Close()
		s.e = nil
	}
}
