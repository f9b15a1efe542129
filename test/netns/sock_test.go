package netns

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dialTimeout is how long a client waits for a blocked port: a silent drop times out, a
// refusal (RST from the host's stack) comes back within a round trip.
const dialTimeout = 1500 * time.Millisecond

// closing says how an echo server ends a connection.
type closing int

const (
	peerFirst   closing = iota // echo until the peer closes, then close (peer in TIME_WAIT)
	abortive                   // echo until the peer closes, then RST (SO_LINGER 0): no TIME_WAIT anywhere
	serverFirst                // echo one line, then close first (server in TIME_WAIT)
)

// echoServer accepts TCP connections and echoes what it reads.
type echoServer struct {
	ln     *net.TCPListener
	closed chan struct{} // one value per connection the server has closed
	wg     sync.WaitGroup
}

// listenEcho starts an echo server on addr (":PORT" listens on every address of both
// families) inside namespace ns, ending connections as mode says; t.Cleanup stops it.
func listenEcho(t testing.TB, ns, addr string, mode closing) *echoServer {
	t.Helper()
	var ln net.Listener
	var err error
	inNS(t, ns, func() { ln, err = net.Listen("tcp", addr) })
	if err != nil {
		t.Fatalf("listen tcp %s in %s: %v", addr, ns, err)
	}
	s := &echoServer{ln: ln.(*net.TCPListener), closed: make(chan struct{}, 64)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.AcceptTCP()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				switch mode {
				case serverFirst:
					if line, err := bufio.NewReader(c).ReadBytes('\n'); err == nil {
						_, _ = c.Write(line)
					}
				default:
					_, _ = io.Copy(c, c)
				}
				if mode == abortive {
					_ = c.SetLinger(0)
				}
				c.Close()
				select {
				case s.closed <- struct{}{}:
				default:
				}
			}()
		}
	}()
	t.Cleanup(s.Close)
	return s
}

func (s *echoServer) port() uint16 { return uint16(s.ln.Addr().(*net.TCPAddr).Port) }

// Close stops accepting; connections in progress end on their own (30 s deadline at most).
func (s *echoServer) Close() { s.ln.Close() }

// waitClosed waits until the server has closed one more connection.
func (s *echoServer) waitClosed(t testing.TB) {
	t.Helper()
	select {
	case <-s.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("echo server did not close its connection within 5s")
	}
}

// dialFrom opens a TCP connection from inside namespace ns to dst, from src when src is
// valid (with SO_REUSEADDR, so a port just used by a closed socket can be taken again). It
// returns the connection, how long the attempt took and the error.
func dialFrom(t testing.TB, ns string, dst, src netip.AddrPort, timeout time.Duration) (*net.TCPConn, time.Duration, error) {
	t.Helper()
	d := net.Dialer{Timeout: timeout, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	if src.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(src)
	}
	var c net.Conn
	var err error
	var took time.Duration
	inNS(t, ns, func() {
		start := time.Now()
		c, err = d.Dial("tcp", dst.String())
		took = time.Since(start)
	})
	if err != nil {
		return nil, took, err
	}
	return c.(*net.TCPConn), took, nil
}

// roundTrip sends payload and wants it back byte for byte within 5 s.
func roundTrip(t testing.TB, c net.Conn, payload []byte) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	werr := make(chan error, 1)
	go func() { _, err := c.Write(payload); werr <- err }()
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("round trip %v→%v: read: %v", c.LocalAddr(), c.RemoteAddr(), err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("round trip %v→%v: write: %v", c.LocalAddr(), c.RemoteAddr(), err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("round trip %v→%v: echoed %d bytes differ from the %d sent", c.LocalAddr(), c.RemoteAddr(), len(got), len(payload))
	}
}

// outcome is what a client sees when it connects.
type outcome int

const (
	works   outcome = iota // connects, and an echoed line comes back
	timeout                // no answer at all: the SYN was dropped silently
	refused                // RST: allowed through, nothing listening
)

func (o outcome) String() string {
	return [...]string{"works", "times out", "is refused"}[o]
}

// checkTCP connects from namespace ns to dst and checks the outcome: a timeout must be a
// timeout that took the whole dialTimeout (no RST, no ICMP error), a refusal must be
// ECONNREFUSED within 500 ms, and a working connection must echo a line.
func checkTCP(t testing.TB, ns string, dst netip.AddrPort, want outcome) {
	t.Helper()
	c, took, err := dialFrom(t, ns, dst, netip.AddrPort{}, dialTimeout)
	checkDial(t, ns, dst, c, took, err, want)
}

func checkDial(t testing.TB, ns string, dst netip.AddrPort, c *net.TCPConn, took time.Duration, err error, want outcome) {
	t.Helper()
	if c != nil {
		defer c.Close()
	}
	got := classify(err)
	if got != want {
		t.Fatalf("connect %s → %v %v after %v (err %v); want it %v", ns, dst, got, took.Round(time.Millisecond), err, want)
	}
	switch want {
	case works:
		roundTrip(t, c, []byte("hello from "+ns+"\n"))
	case timeout:
		if took < dialTimeout-100*time.Millisecond {
			t.Fatalf("connect %s → %v timed out after only %v; want ≥ %v", ns, dst, took, dialTimeout-100*time.Millisecond)
		}
	case refused:
		if took > 500*time.Millisecond {
			t.Fatalf("connect %s → %v refused after %v; want < 500ms (an RST from the host's stack)", ns, dst, took)
		}
	}
}

func classify(err error) outcome {
	var ne net.Error
	switch {
	case err == nil:
		return works
	case errors.Is(err, syscall.ECONNREFUSED):
		return refused
	case errors.As(err, &ne) && ne.Timeout():
		return timeout
	}
	return -1
}

// udpEcho starts a UDP echo server on addr inside ns; t.Cleanup stops it.
func udpEcho(t testing.TB, ns, addr string) {
	t.Helper()
	var pc net.PacketConn
	var err error
	inNS(t, ns, func() { pc, err = net.ListenPacket("udp", addr) })
	if err != nil {
		t.Fatalf("listen udp %s in %s: %v", addr, ns, err)
	}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() { pc.Close() })
}

// udpAsk sends one datagram from ns to dst and returns the answer (error on timeout).
func udpAsk(t testing.TB, ns string, dst netip.AddrPort, msg []byte, wait time.Duration) ([]byte, error) {
	t.Helper()
	var c *net.UDPConn
	var err error
	inNS(t, ns, func() { c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst)) })
	if err != nil {
		t.Fatalf("udp socket in %s: %v", ns, err)
	}
	defer c.Close()
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// ping sends one ICMP echo request from ns to dst with iputils ping (1 s wait); nil means
// a reply came back. Skips the test when ping is not installed.
func ping(t testing.TB, ns string, dst netip.Addr) error {
	t.Helper()
	if _, err := exec.LookPath("ping"); err != nil {
		t.Skip("ping (iputils-ping) is not installed")
	}
	out, err := runErr("ip", "netns", "exec", ns, "ping", "-n", "-c", "1", "-W", "1", dst.String())
	if err != nil {
		return errors.New(err.Error() + ": " + out)
	}
	return nil
}
