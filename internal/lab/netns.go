package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Do runs f on a fresh goroutine whose OS thread has entered network namespace ns (the
// bind mount iproute2 keeps at /run/netns/ns), and returns f's error.
//
// Sockets take the namespace of the thread that creates them and keep it for life, so a
// listener or connection made inside f may be used afterwards from any goroutine (accepted
// connections inherit the listener's namespace). Only socket creation, and anything else
// that reads the thread's namespace (opening /proc/sys/net files, /proc/thread-self/net),
// must happen inside f, on f's own goroutine: goroutines f starts run elsewhere, and so do
// helpers that dial on their own goroutines (net/http's Transport — give it a DialContext
// that calls Do, see DialContext).
//
// The goroutine locks its thread and never unlocks it: when it returns, the Go runtime
// terminates that thread instead of handing a thread in the wrong namespace to other
// goroutines. The cost is one thread per call, so a loop that opens many sockets (a load
// generator) should run inside one Do rather than call Do per socket.
func Do(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread, on purpose (see above).
		fd, err := unix.Open(filepath.Join("/run/netns", ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("lab: open namespace %s: %w", ns, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("lab: enter namespace %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// DialContext dials addr from inside namespace ns. Its signature fits
// net/http.Transport.DialContext and similar hooks once ns is bound.
func DialContext(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := Do(ns, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen opens a listener inside namespace ns ("tcp", "tcp4", "tcp6").
func Listen(ns, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := Do(ns, func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacket opens a packet socket inside namespace ns ("udp4", "ip4:icmp", ...).
func ListenPacket(ns, network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := Do(ns, func() error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// Sysctl writes a network sysctl (like "net.ipv4.tcp_tw_reuse") inside namespace ns.
// Only net.* settings are per namespace.
func Sysctl(ns, key, value string) error {
	if !strings.HasPrefix(key, "net.") {
		return fmt.Errorf("lab: sysctl %s is not per network namespace", key)
	}
	path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	return Do(ns, func() error {
		if err := os.WriteFile(path, []byte(value), 0); err != nil {
			return fmt.Errorf("lab: sysctl %s=%s in %s: %w", key, value, ns, err)
		}
		return nil
	})
}
