package lab

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Frame is one link-layer frame a Capture saw.
type Frame struct {
	Time     time.Time // the kernel's receive timestamp (SO_TIMESTAMPNS)
	Outgoing bool      // sent by the namespace's stack (PACKET_OUTGOING); else it arrived
	Len      int       // its length on the wire
	Data     []byte    // the frame from its Ethernet header, at most CaptureSnap bytes
}

// CaptureSnap is how much of each frame a Capture keeps.
const CaptureSnap = 65535

// Capture records every frame that passes one interface inside a namespace, in both
// directions, through an AF_PACKET socket (what tcpdump uses): evidence of what the
// namespace's own stack was given and sent, independent of any firewall on the way.
// Its methods are safe for concurrent use; Stop ends it.
type Capture struct {
	NS, Dev string

	fd      int
	stopped atomic.Bool
	done    chan struct{}

	mu     sync.Mutex
	frames []Frame
	err    error
}

// StartCapture opens a packet socket on dev inside namespace ns and records from then
// on: a frame that passes dev after StartCapture returns is in Stop's result.
func StartCapture(ns, dev string) (*Capture, error) {
	c := &Capture{NS: ns, Dev: dev, fd: -1, done: make(chan struct{})}
	err := Do(ns, func() error {
		itf, err := net.InterfaceByName(dev)
		if err != nil {
			return fmt.Errorf("lab: capture on %s in %s: %w", dev, ns, err)
		}
		proto := htons(unix.ETH_P_ALL)
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return fmt.Errorf("lab: capture on %s in %s: packet socket: %w", dev, ns, err)
		}
		c.fd = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: itf.Index}); err != nil {
			return fmt.Errorf("lab: capture on %s in %s: bind: %w", dev, ns, err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
			return fmt.Errorf("lab: capture on %s in %s: timestamps: %w", dev, ns, err)
		}
		// Wake up now and then to notice Stop (closing the socket under a blocked read is
		// not a reliable wake-up).
		tv := unix.NsecToTimeval((20 * time.Millisecond).Nanoseconds())
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		if c.fd >= 0 {
			unix.Close(c.fd)
		}
		return nil, err
	}
	go c.read()
	return c, nil
}

func (c *Capture) read() {
	defer close(c.done)
	defer unix.Close(c.fd)
	buf := make([]byte, CaptureSnap)
	oob := make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{}))))
	for {
		n, oobn, _, from, err := unix.Recvmsg(c.fd, buf, oob, unix.MSG_TRUNC)
		switch {
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			// Nothing queued: after Stop, that means everything has been read.
			if c.stopped.Load() {
				return
			}
			continue
		case err != nil:
			c.mu.Lock()
			c.err = fmt.Errorf("lab: capture on %s in %s: %w", c.Dev, c.NS, err)
			c.mu.Unlock()
			return
		}
		f := Frame{Time: stamp(oob[:oobn]), Len: n, Data: append([]byte(nil), buf[:min(n, len(buf))]...)}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok {
			f.Outgoing = ll.Pkttype == unix.PACKET_OUTGOING
		}
		c.mu.Lock()
		c.frames = append(c.frames, f)
		c.mu.Unlock()
	}
}

// stamp is the SCM_TIMESTAMPNS of a received message, or now when there is none.
func stamp(oob []byte) time.Time {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err == nil {
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
				ts := *(*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
				return time.Unix(ts.Unix())
			}
		}
	}
	return time.Now()
}

// Stop ends the capture once the frames already queued are read, and returns every frame
// seen, in order. Later calls return the same.
func (c *Capture) Stop() ([]Frame, error) {
	c.stopped.Store(true)
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frames, c.err
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
