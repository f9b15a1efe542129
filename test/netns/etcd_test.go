package netns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
)

// etcdBin is Debian's etcd (package etcd-server, 3.4), by path.
const etcdBin = "/usr/bin/etcd"

// requireEtcd skips the test when etcd is not installed, and fails it under CI, which
// must run it (.ci/run installs etcd-server).
func requireEtcd(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(etcdBin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed, and CI must run this test (.ci/run installs etcd-server): %v", etcdBin, err)
		}
		t.Skipf("%s is not installed (Debian: apt-get install etcd-server): %v", etcdBin, err)
	}
}

// etcdServer is one member of an etcd cluster run from etcdBin inside its own namespace,
// serving clients on addr:2379. It can be stopped, killed and started again on the same
// data directory.
type etcdServer struct {
	t       *testing.T
	name    string
	ns      string
	addr    netip.Addr
	peer    string // its peer URL: the namespace's loopback for a cluster of one
	cluster string // --initial-cluster
	dir     string // the data directory
	cmd     *exec.Cmd
	out     *syncBuffer // every run's output, for a failing test's log
	exited  chan struct{}
}

// startEtcd starts a one-member cluster in ns on addr and waits until it answers; t.Cleanup
// stops it and, when the test failed, logs its output.
func startEtcd(t *testing.T, ns string, addr netip.Addr) *etcdServer {
	t.Helper()
	return startEtcdCluster(t, []node{{ns: ns, v4: addr}})[0]
}

// startEtcdCluster starts a cluster with one member on each node (peers on their
// addresses, port 2380) and waits until every member answers.
func startEtcdCluster(t *testing.T, on []node) []*etcdServer {
	t.Helper()
	var ms []*etcdServer
	var initial []string
	for i, n := range on {
		e := &etcdServer{t: t, name: fmt.Sprintf("e%d", i+1), ns: n.ns, addr: n.v4, dir: filepath.Join(t.TempDir(), "etcd"),
			peer: "http://" + net.JoinHostPort(n.v4.String(), "2380"), out: &syncBuffer{}}
		if len(on) == 1 {
			e.peer = "http://127.0.0.1:2380"
		}
		t.Cleanup(func() {
			e.stop()
			if t.Failed() {
				t.Logf("etcd %s output (ns %s):\n%s", e.name, e.ns, e.out)
			}
		})
		initial = append(initial, e.name+"="+e.peer)
		ms = append(ms, e)
	}
	for _, e := range ms {
		e.cluster = strings.Join(initial, ",")
		e.launch()
	}
	for _, e := range ms {
		e.waitReady()
	}
	return ms
}

// URL is the client URL the hosts are given.
func (e *etcdServer) URL() string { return "http://" + net.JoinHostPort(e.addr.String(), "2379") }

func (e *etcdServer) running() bool {
	if e.exited == nil {
		return false
	}
	select {
	case <-e.exited:
		return false
	default:
		return true
	}
}

// start (re)starts the member on its data directory and waits until it serves a
// linearizable read (the cluster has a leader).
func (e *etcdServer) start() {
	e.t.Helper()
	e.launch()
	e.waitReady()
}

func (e *etcdServer) launch() {
	t := e.t
	t.Helper()
	if e.running() {
		t.Fatalf("etcd %s is already running", e.name)
	}
	args := []string{"netns", "exec", e.ns, etcdBin,
		"--name", e.name,
		"--data-dir", e.dir,
		"--listen-client-urls", e.URL(),
		"--advertise-client-urls", e.URL(),
		"--listen-peer-urls", e.peer,
		"--initial-advertise-peer-urls", e.peer,
		"--initial-cluster", e.cluster,
		"--initial-cluster-state", "new", // ignored once the data directory holds a member
		"--heartbeat-interval", "50",
		"--election-timeout", "500",
		"--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"}
	e.cmd = exec.Command("ip", args...)
	e.cmd.Stdout, e.cmd.Stderr = e.out, e.out
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test binary
	fmt.Fprintf(e.out, "--- %s: start\n", time.Now().Format("15:04:05.000"))
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("start etcd %s: %v", e.name, err)
	}
	e.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(e.cmd, e.exited)
}

func (e *etcdServer) waitReady() {
	t := e.t
	t.Helper()
	cli := e.client()
	defer cli.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := cli.Get(ctx, "/ready")
		cancel()
		if err == nil {
			return
		}
		if !e.running() {
			t.Fatalf("etcd %s exited before it was ready (exit code %d):\n%s", e.name, e.cmd.ProcessState.ExitCode(), e.out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd %s not ready after 15s: %v\n%s", e.name, err, e.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends etcd with SIGTERM (SIGKILL after 10 s) and waits for it; its data stays.
func (e *etcdServer) stop() { e.signal(syscall.SIGTERM) }

// kill ends etcd with SIGKILL, as a crash, and waits for it; its data stays.
func (e *etcdServer) kill() { e.signal(syscall.SIGKILL) }

func (e *etcdServer) signal(sig syscall.Signal) {
	if !e.running() {
		return
	}
	fmt.Fprintf(e.out, "--- %s: %v\n", time.Now().Format("15:04:05.000"), sig)
	_ = e.cmd.Process.Signal(sig)
	select {
	case <-e.exited:
	case <-time.After(10 * time.Second):
		_ = e.cmd.Process.Kill()
		<-e.exited
		e.t.Errorf("etcd did not stop within 10s of %v; killed it", sig)
	}
}

// client returns an etcd client whose connections are made inside etcd's namespace (the
// test process itself stays in its own); the caller closes it.
func (e *etcdServer) client() *clientv3.Client {
	e.t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{e.URL()},
		DialTimeout: 2 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(nsDialer(e.ns))},
		Logger:      zap.NewNop(),
	})
	if err != nil {
		e.t.Fatalf("etcd client: %v", err)
	}
	return cli
}

// revision returns the ModRevision of key (0 when it does not exist).
func (e *etcdServer) revision(key string) int64 {
	e.t.Helper()
	cli := e.client()
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, key)
	if err != nil {
		e.t.Fatalf("etcd get %s: %v", key, err)
	}
	if len(resp.Kvs) == 0 {
		return 0
	}
	return resp.Kvs[0].ModRevision
}

// nsDialer returns a gRPC dialer whose TCP connections are made from inside namespace ns
// (a socket keeps its namespace for life, whichever thread uses it later). It switches
// its OS thread into ns and back, as inNS does, but reports errors rather than failing a
// test, since gRPC calls it from goroutines of its own. A thread must not simply be left
// to die in ns: children started from it (Pdeathsig) would be killed with it.
func nsDialer(ns string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{err: err}
				return
			}
			defer unix.Close(orig)
			target, err := unix.Open(filepath.Join("/run/netns", ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{err: err}
				return
			}
			err = unix.Setns(target, unix.CLONE_NEWNET)
			unix.Close(target)
			var c net.Conn
			if err == nil {
				var d net.Dialer
				c, err = d.DialContext(ctx, "tcp", strings.TrimPrefix(addr, "http://"))
			}
			if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			} // else the thread stays locked and ends with this goroutine, never serving others in ns
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}
