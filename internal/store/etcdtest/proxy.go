package etcdtest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections to an address until Cut, which closes them and refuses
// new ones until Restore: a network partition between the clients that dial it and etcd.
// Safe for use by several goroutines.
type Proxy struct {
	t    testing.TB
	Addr string // where clients connect, 127.0.0.1:PORT
	to   string

	mu    sync.Mutex
	l     net.Listener
	conns []net.Conn
}

// NewProxy returns a proxy to the address to (host:port), forwarding; the test's cleanup
// cuts it.
func NewProxy(t testing.TB, to string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{t: t, Addr: l.Addr().String(), to: to}
	p.serve(l)
	t.Cleanup(p.Cut)
	return p
}

// URL is the proxy's client URL, http://ADDR.
func (p *Proxy) URL() string { return "http://" + p.Addr }

func (p *Proxy) serve(l net.Listener) {
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.to)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go pipe(c, u)
			go pipe(u, c)
		}
	}()
}

func pipe(dst, src net.Conn) {
	io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// Cut closes every connection and refuses new ones; a cut proxy's Cut does nothing more.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Restore forwards again, on the same address.
func (p *Proxy) Restore() {
	p.t.Helper()
	l, err := net.Listen("tcp", p.Addr)
	if err != nil {
		p.t.Fatalf("restore the proxy: %v", err)
	}
	p.serve(l)
}
