package daemon

import (
	"context"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
)

// notifyReady tells systemd (Type=notify) that the rules are installed and enforced.
func notifyReady(log *zap.Logger) {
	if ok, err := sd.SdNotify(false, sd.SdNotifyReady); err != nil {
		log.Warn("systemd notify", zap.Error(err))
	} else if ok {
		log.Info("told systemd: ready")
	}
}

// watchdog pings systemd's watchdog at half its interval while every queue reader is
// alive (see liveness): a reader wedged on one burst, or gone, stops the pings, and
// systemd restarts sgd (Restart=on-failure) instead of leaving a host whose packets
// queue up unjudged. beats is filter.Queues.Beats.
func watchdog(ctx context.Context, log *zap.Logger, queues []uint16, beats func([]uint64) []uint64) {
	every, err := sd.SdWatchdogEnabled(false)
	if err != nil || every == 0 {
		return
	}
	t := time.NewTicker(every / 2)
	defer t.Stop()
	wd := &watchdogState{log: log, queues: queues, beats: beats}
	runWatchdog(ctx, t.C, wd, func(state string) { _, _ = sd.SdNotify(false, state) })
}

// runWatchdog takes one look at the readers per tick and pings when they are alive; it
// says STOPPING when ctx ends. The clock is the ticks' times.
func runWatchdog(ctx context.Context, ticks <-chan time.Time, wd *watchdogState, notify func(state string)) {
	for {
		select {
		case <-ctx.Done():
			notify(sd.SdNotifyStopping)
			return
		case now := <-ticks:
			if wd.tick(now) {
				notify(sd.SdNotifyWatchdog)
			}
		}
	}
}

// watchdogState decides, tick by tick, whether to ping, and logs when the answer changes.
// It is used by one goroutine.
type watchdogState struct {
	log    *zap.Logger
	queues []uint16 // queue number of each reader, for the log
	beats  func([]uint64) []uint64
	live   liveness
	buf    []uint64
	stuck  bool // the last tick found a stuck reader
}

// tick looks at the readers at now and reports whether systemd may be told all is well.
func (wd *watchdogState) tick(now time.Time) bool {
	wd.buf = wd.beats(wd.buf[:0])
	stuck := wd.live.check(now, wd.buf)
	if len(stuck) == 0 {
		if wd.stuck {
			wd.log.Warn("queue readers are moving again; systemd watchdog pings resume")
		}
		wd.stuck = false
		return true
	}
	if !wd.stuck {
		var qs []int
		var longest time.Duration
		for _, i := range stuck {
			q := i
			if i < len(wd.queues) {
				q = int(wd.queues[i])
			}
			qs = append(qs, q)
			longest = max(longest, now.Sub(wd.live.since[i]))
		}
		wd.log.Error("queue reader stuck judging a burst (or stopped): no more systemd watchdog pings, so systemd restarts sgd",
			zap.Ints("queues", qs), zap.Duration("stuck_for", longest))
	}
	wd.stuck = true
	return false
}

// liveness tells, from successive looks at the queue readers' heartbeats
// (filter.Queues.Beats), which readers are not alive. A reader is alive when it is
// waiting in its receive (an odd count: idle is healthy, however long it lasts) or when
// its count moved since the previous look (it finished bursts in between). A count that
// is even and unchanged means the reader has been on the same burst since the previous
// look — wedged in judging — or has stopped. The first look only sets the baseline.
// The zero value is ready; it is used by one goroutine.
type liveness struct {
	last  []uint64
	since []time.Time // when each reader was last seen alive
}

// check records the look beats taken at now and returns the indexes of the readers that
// are not alive (nil when all are).
func (l *liveness) check(now time.Time, beats []uint64) (stuck []int) {
	if len(l.last) != len(beats) {
		l.last = append(l.last[:0], beats...)
		l.since = l.since[:0]
		for range beats {
			l.since = append(l.since, now)
		}
		return nil
	}
	for i, b := range beats {
		switch {
		case b != l.last[i]:
			l.last[i], l.since[i] = b, now
		case b%2 == 1:
			l.since[i] = now // idle in its receive
		default:
			stuck = append(stuck, i)
		}
	}
	return stuck
}
