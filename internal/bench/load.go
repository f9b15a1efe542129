package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/sgd-firewall/sgd/internal/lab"
)

const (
	udpPayload  = 64 // bytes of UDP payload per datagram
	udpBatch    = 64 // datagrams per sendmmsg/recvmmsg
	connWorkers = 4  // concurrent connection generators
)

// loadServers are the receiving ends in the server namespace; they run for the whole lab.
type loadServers struct {
	udp      *net.UDPConn
	udpCount atomic.Uint64 // datagrams received
	conn     net.Listener
	iperf    *lab.Proc
	wg       sync.WaitGroup
}

func startLoadServers(ctx context.Context, l *lab.Lab, ns string, iperf bool) (*loadServers, error) {
	s := &loadServers{}
	pc, err := lab.ListenPacket(ns, "udp4", net.JoinHostPort(serverAddr.String(), strconv.Itoa(portUDP)))
	if err != nil {
		return nil, err
	}
	s.udp = pc.(*net.UDPConn)
	_ = s.udp.SetReadBuffer(4 << 20)
	s.conn, err = lab.Listen(ns, "tcp4", net.JoinHostPort(serverAddr.String(), strconv.Itoa(portConn)))
	if err != nil {
		s.close()
		return nil, err
	}
	s.wg.Add(2)
	go s.receiveUDP()
	go s.serveConns()
	if iperf {
		s.iperf, err = l.Start(ns, "iperf3 server", "iperf3", "-s", "--forceflush", "-p", strconv.Itoa(portTCP), "-B", serverAddr.String())
		if err == nil {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = s.iperf.WaitFor(wctx, "Server listening")
			cancel()
		}
		if err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

func (b *bencher) closeLoad() {
	for _, t := range []*topology{b.direct, b.fwd} {
		if t != nil && t.load != nil {
			t.load.close()
		}
	}
}

// close stops the in-process servers (the lab stops iperf3).
func (s *loadServers) close() {
	if s.udp != nil {
		s.udp.Close()
	}
	if s.conn != nil {
		s.conn.Close()
	}
	s.wg.Wait()
}

func (s *loadServers) receiveUDP() {
	defer s.wg.Done()
	pc := ipv4.NewPacketConn(s.udp)
	msgs := make([]ipv4.Message, udpBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			if isClosed(err) {
				return
			}
			continue
		}
		s.udpCount.Add(uint64(n))
	}
}

func (s *loadServers) serveConns() {
	defer s.wg.Done()
	for {
		c, err := s.conn.Accept()
		if err != nil {
			if isClosed(err) {
				return
			}
			continue
		}
		go answer(c)
	}
}

// answer reads the request line, writes "OK\n" and waits for the client to close first
// (so that TIME_WAIT stays on the client, which reuses its ports).
func answer(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReaderSize(c, 64)
	if _, err := r.ReadString('\n'); err != nil {
		return
	}
	if _, err := io.WriteString(c, "OK\n"); err != nil {
		return
	}
	_, _ = r.ReadByte() // EOF when the client closes
}

func isClosed(err error) bool { return errors.Is(err, net.ErrClosed) }

// Sample is one measurement.
type Sample struct {
	Path   Path   `json:"path"`
	Rules  int    `json:"rules"` // non-matching rules in front (0 on the raw paths)
	Figure Figure `json:"figure"`
	Repeat int    `json:"repeat"`
	// Seq is the measurement's place in the run (1 = first), for the order.
	Seq     int     `json:"seq"`
	Value   float64 `json:"value"` // in Figure.Unit
	Seconds float64 `json:"seconds"`
	// Errors counts failed attempts (connections that timed out or were reset).
	Errors int `json:"errors,omitempty"`
	// Sent is what the sender pushed in the window (UDP datagrams, TCP bytes).
	Sent float64 `json:"sent,omitempty"`
	// SGDCPUSeconds is the CPU time the sgd process used during the measurement.
	SGDCPUSeconds float64 `json:"sgd_cpu_seconds,omitempty"`
	// SGDSysSeconds is the part of SGDCPUSeconds spent in the kernel (system calls, and
	// the packets' way on after a verdict, which runs in the verdict's sendmsg).
	SGDSysSeconds float64 `json:"sgd_sys_seconds,omitempty"`
	// QueueDrops is what the kernel dropped on sgd's queues during the measurement.
	QueueDrops uint64 `json:"queue_drops,omitempty"`
}

func (b *bencher) measure(ctx context.Context, f Figure) (Sample, error) {
	switch f {
	case TCP:
		return b.measureTCP(ctx)
	case UDP:
		return b.measureUDP(ctx)
	case Conn:
		return b.measureConn(ctx)
	}
	return Sample{}, fmt.Errorf("unknown figure %q", f)
}

// warmup is the time load runs before the measured window opens.
func (b *bencher) warmup() time.Duration {
	return min(500*time.Millisecond, b.o.Duration/4)
}

// window runs load (which must return when stop is closed) and counts, with count,
// what the receiver got in a window of Duration after the warm-up.
func (b *bencher) window(ctx context.Context, count func() uint64, load func(stop <-chan struct{})) (n uint64, secs float64, err error) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		load(stop)
	}()
	defer func() {
		close(stop)
		<-done
	}()
	select {
	case <-time.After(b.warmup()):
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	c0, t0 := count(), time.Now()
	select {
	case <-time.After(b.o.Duration):
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	c1, t1 := count(), time.Now()
	return c1 - c0, t1.Sub(t0).Seconds(), nil
}

// measureUDP sends 64-byte datagrams from the client as fast as sendmmsg goes and counts
// what the server's socket delivers.
func (b *bencher) measureUDP(ctx context.Context) (Sample, error) {
	var sent atomic.Uint64
	var sendErr error
	n, secs, err := b.window(ctx, b.t.load.udpCount.Load, func(stop <-chan struct{}) {
		sendErr = lab.Do(b.t.client.NS, func() error {
			c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: serverAddr.AsSlice(), Port: portUDP})
			if err != nil {
				return err
			}
			defer c.Close()
			pc := ipv4.NewPacketConn(c)
			payload := make([]byte, udpPayload)
			msgs := make([]ipv4.Message, udpBatch)
			for i := range msgs {
				msgs[i].Buffers = [][]byte{payload}
			}
			for {
				select {
				case <-stop:
					return nil
				default:
				}
				k, err := pc.WriteBatch(msgs, 0)
				if err != nil {
					// ENOBUFS, or ECONNREFUSED from an ICMP error: keep pushing.
					continue
				}
				sent.Add(uint64(k))
			}
		})
	})
	if err != nil {
		return Sample{}, err
	}
	if sendErr != nil {
		return Sample{}, sendErr
	}
	s := Sample{Value: float64(n) / secs, Seconds: secs}
	if secs > 0 {
		s.Sent = float64(sent.Load()) // over warm-up and window: context only
	}
	return s, nil
}

// measureConn runs connWorkers loops of connect, request, response, close from the client
// and counts the completed ones.
func (b *bencher) measureConn(ctx context.Context) (Sample, error) {
	var ok, failed atomic.Uint64
	addr := net.JoinHostPort(serverAddr.String(), strconv.Itoa(portConn))
	n, secs, err := b.window(ctx, ok.Load, func(stop <-chan struct{}) {
		var wg sync.WaitGroup
		for range connWorkers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// One namespace switch per worker; every socket of the loop is made on
				// this thread, so in the client namespace.
				_ = lab.Do(b.t.client.NS, func() error {
					d := net.Dialer{Timeout: 3 * time.Second}
					buf := make([]byte, 8)
					for {
						select {
						case <-stop:
							return nil
						default:
						}
						if oneConn(d, addr, buf) {
							ok.Add(1)
						} else {
							failed.Add(1)
						}
					}
				})
			}()
		}
		wg.Wait()
	})
	if err != nil {
		return Sample{}, err
	}
	return Sample{Value: float64(n) / secs, Seconds: secs, Errors: int(failed.Load())}, nil
}

func oneConn(d net.Dialer, addr string, buf []byte) bool {
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "GET\n"); err != nil {
		return false
	}
	n, err := io.ReadAtLeast(c, buf, 3)
	return err == nil && n >= 3
}

// measureTCP runs iperf3 from the client for Duration (rounded up to whole seconds, as
// iperf3 wants) and takes the receiver's figure from its JSON.
func (b *bencher) measureTCP(ctx context.Context) (Sample, error) {
	secs := int(math.Ceil(b.o.Duration.Seconds()))
	rctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+30*time.Second)
	defer cancel()
	out, err := b.l.Run(rctx, b.t.client.NS, "iperf3", "-c", serverAddr.String(), "-p", strconv.Itoa(portTCP),
		"-B", clientAddr.String(), "-t", strconv.Itoa(secs), "-J")
	var res struct {
		End struct {
			SumSent struct {
				Bytes float64 `json:"bytes"`
			} `json:"sum_sent"`
			SumReceived struct {
				Bytes         float64 `json:"bytes"`
				Seconds       float64 `json:"seconds"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal([]byte(out), &res); jerr != nil {
		if err != nil {
			return Sample{}, err
		}
		return Sample{}, fmt.Errorf("iperf3 output: %w", jerr)
	}
	if res.Error != "" {
		return Sample{}, fmt.Errorf("iperf3: %s", res.Error)
	}
	if err != nil {
		return Sample{}, err
	}
	return Sample{Value: res.End.SumReceived.BitsPerSecond, Seconds: res.End.SumReceived.Seconds, Sent: res.End.SumSent.Bytes}, nil
}
