package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// EtcdBin is where Debian's etcd-server package installs etcd (3.4 in Debian 12 and 13).
const EtcdBin = "/usr/bin/etcd"

// ErrNoEtcd is returned by FindEtcd when no etcd binary is installed.
var ErrNoEtcd = errors.New("lab: etcd is not installed (" + EtcdBin + "; on Debian: apt-get install etcd-server)")

// FindEtcd returns EtcdBin when it exists, else the etcd on PATH, else ErrNoEtcd.
func FindEtcd() (string, error) {
	if fi, err := os.Stat(EtcdBin); err == nil && !fi.IsDir() {
		return EtcdBin, nil
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p, nil
	}
	return "", ErrNoEtcd
}

// EtcdClientPort is the port an Etcd serves clients on.
const EtcdClientPort = 2379

// Etcd is a one-member etcd cluster the lab runs inside a namespace: clients on
// Addr:2379, its peer port on the namespace's loopback (a cluster of one has no peers to
// reach), its data in the lab's directory. The lab stops it in Cleanup, as any Proc.
type Etcd struct {
	*Proc
	Addr    netip.Addr
	DataDir string
}

// URL is the client URL the lab's hosts are given: http://Addr:2379.
func (e *Etcd) URL() string {
	return "http://" + net.JoinHostPort(e.Addr.String(), strconv.Itoa(EtcdClientPort))
}

// StartEtcd runs bin (FindEtcd) in namespace ns as a one-member cluster named name,
// serving clients on addr (an address of ns), and waits until it answers /health with a
// leader. Elections are made fast (50 ms heartbeats, 500 ms election timeout): the
// namespaces are one machine. It fails, quoting etcd's output, when etcd exits first or
// ctx ends.
func (l *Lab) StartEtcd(ctx context.Context, bin, ns, name string, addr netip.Addr) (*Etcd, error) {
	dir := filepath.Join(l.Dir(), "etcd-"+sanitize(name))
	client := "http://" + net.JoinHostPort(addr.String(), strconv.Itoa(EtcdClientPort))
	peer := "http://127.0.0.1:2380"
	p, err := l.Start(ns, "etcd "+name, bin,
		"--name", name,
		"--data-dir", dir,
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", name+"="+peer,
		"--initial-cluster-state", "new",
		"--heartbeat-interval", "50",
		"--election-timeout", "500",
		"--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	e := &Etcd{Proc: p, Addr: addr, DataDir: dir}
	if err := e.waitHealthy(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// waitHealthy polls etcd's /health from inside its namespace until it says true.
func (e *Etcd) waitHealthy(ctx context.Context) error {
	cl := http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return DialContext(ctx, e.NS, network, addr)
		}}}
	defer cl.CloseIdleConnections()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		last := etcdHealth(ctx, &cl, e.URL()+"/health")
		if last == nil {
			return nil
		}
		select {
		case <-e.Done():
			return fmt.Errorf("%s exited (%v) before it was healthy; its output ends:\n%s", e.Name, e.Err(), indent(e.Tail(15)))
		case <-ctx.Done():
			return fmt.Errorf("%s was not healthy in time (%w; last: %v); its output ends:\n%s", e.Name, ctx.Err(), last, indent(e.Tail(15)))
		case <-t.C:
		}
	}
}

// etcdHealth is nil when GET url answers {"health":"true"} (etcd has a leader).
func etcdHealth(ctx context.Context, cl *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return err
	}
	var h struct {
		Health string `json:"health"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return fmt.Errorf("/health: %s: %w", b, err)
	}
	if h.Health != "true" {
		return fmt.Errorf("/health: %s", b)
	}
	return nil
}
