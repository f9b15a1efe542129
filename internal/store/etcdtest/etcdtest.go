// Package etcdtest runs a real one-member etcd cluster inside a test process (etcd's embed
// package), for the tests of fleet mode: no mock of etcd stands in for it.
package etcdtest

import (
	"net"
	"net/url"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Server is a one-member etcd cluster on 127.0.0.1 with its data in a temporary directory.
// It can be stopped and started again on the same ports and data. Not safe for use by
// several goroutines.
type Server struct {
	t      testing.TB
	cfg    *embed.Config
	e      *embed.Etcd
	Client string // the client URL, http://127.0.0.1:PORT
}

// Start starts a server that the test's cleanup stops.
func Start(t testing.TB) *Server {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = t.TempDir()
	cfg.LogLevel = "error"
	peer, client := freeURL(t), freeURL(t)
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	s := &Server{t: t, cfg: cfg, Client: client.String()}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

func freeURL(t testing.TB) url.URL {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: l.Addr().String()}
}

// Start (re)starts the server on its ports and data and waits until it is ready.
func (s *Server) Start() {
	s.t.Helper()
	e, err := embed.StartEtcd(s.cfg)
	if err != nil {
		s.t.Fatalf("start etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(10 * time.Second):
		e.Close()
		s.t.Fatal("etcd did not become ready")
	}
	s.e = e
}

// Stop stops the server (its data stays); a stopped server's Stop does nothing.
func (s *Server) Stop() {
	if s.e != nil {
		s.e.Close()
		s.e = nil
	}
}
