package daemon

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// fakeReaders stand for filter.Queues: each count moves as a queue reader's heartbeat does
// (odd while waiting in its receive, even while judging a burst).
type fakeReaders []atomic.Uint64

func (f fakeReaders) beats(dst []uint64) []uint64 {
	for i := range f {
		dst = append(dst, f[i].Load())
	}
	return dst
}

func (f fakeReaders) receive(i int) { f[i].Add(1) } // enters its receive: waiting (odd)
func (f fakeReaders) judge(i int)   { f[i].Add(1) } // the receive returned a burst (even)
func (f fakeReaders) burst(i int)   { f.judge(i); f.receive(i) }

func TestLiveness(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	f := make(fakeReaders, 3)
	for i := range f {
		f.receive(i) // every reader starts waiting for packets
	}
	var l liveness
	for i, step := range []struct {
		name string
		act  func()
		want []int
	}{
		{"first look: baseline only", func() {}, nil},
		{"all idle in their receive", func() {}, nil},
		{"busy readers finishing bursts", func() { f.burst(0); f.burst(1); f.burst(1) }, nil},
		{"reader 1 took a burst and is judging it", func() { f.judge(1) }, nil},
		{"reader 1 still on the same burst: wedged", func() {}, []int{1}},
		{"reader 1 still wedged, the others busy or idle", func() { f.burst(0) }, []int{1}},
		{"reader 1 finishes and waits again", func() { f.receive(1) }, nil},
		{"reader 2 left its receive and never came back (stopped)", func() { f.judge(2) }, nil},
		{"reader 2 stopped", func() {}, []int{2}},
		{"reader 2 and a wedge of reader 0", func() { f.judge(0) }, []int{2}},
		{"readers 0 and 2", func() {}, []int{0, 2}},
	} {
		step.act()
		if got := l.check(t0.Add(time.Duration(i)*15*time.Second), f.beats(nil)); !slices.Equal(got, step.want) {
			t.Errorf("step %d (%s): check = %v; want %v", i, step.name, got, step.want)
		}
	}
}

// TestWatchdogPings drives the watchdog loop with a fake clock (the tick channel) and fake
// readers: it pings while they are alive, stops while one is wedged (logging it once),
// resumes when it moves again, and says STOPPING at the end.
func TestWatchdogPings(t *testing.T) {
	f := make(fakeReaders, 2)
	f.receive(0)
	f.receive(1)
	core, logs := observer.New(zap.InfoLevel)
	looked := make(chan struct{})
	beats := func(dst []uint64) []uint64 {
		dst = f.beats(dst)
		looked <- struct{}{} // the loop has its look: the readers may change now
		return dst
	}
	wd := &watchdogState{log: zap.New(core), queues: []uint16{100, 101}, beats: beats}
	ticks := make(chan time.Time)
	var sent []string // written by the loop, read here between ticks or after it ended
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		runWatchdog(ctx, ticks, wd, func(s string) { sent = append(sent, s) })
	}()
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var want []string
	tick := func(ping bool) {
		now = now.Add(15 * time.Second)
		ticks <- now
		<-looked
		if ping {
			want = append(want, sd.SdNotifyWatchdog)
		}
	}
	tick(true) // baseline
	tick(true) // idle
	f.burst(0)
	tick(true)
	f.judge(1) // reader of queue 101 takes a burst and never finishes it
	tick(true) // it moved since the last look
	tick(false)
	f.burst(0)
	tick(false) // the other reader's progress does not hide the wedge
	tick(false)
	f.receive(1)
	tick(true)
	cancel()
	<-done
	want = append(want, sd.SdNotifyStopping)
	if !slices.Equal(sent, want) {
		t.Errorf("watchdog sent %q; want %q", sent, want)
	}
	stuck := logs.FilterMessageSnippet("queue reader stuck").All()
	if len(stuck) != 1 {
		t.Fatalf("logged %d 'queue reader stuck' lines; want 1 (once per episode)", len(stuck))
	}
	if q := fmt.Sprint(stuck[0].ContextMap()["queues"]); q != "[101]" {
		t.Errorf("stuck line names queues %s; want [101]", q)
	}
	if n := logs.FilterMessageSnippet("moving again").Len(); n != 1 {
		t.Errorf("logged %d 'moving again' lines; want 1", n)
	}
}
