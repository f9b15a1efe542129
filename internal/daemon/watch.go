package daemon

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// reloadDebounce gathers the several events an editor's save makes into one reload.
const reloadDebounce = 250 * time.Millisecond

// watchReloads reloads on SIGHUP and on changes of the config file. It watches the file's
// directory, so editors that save by renaming a new file over the old one still trigger.
func (d *Daemon) watchReloads(ctx context.Context, hup <-chan os.Signal) {

	var events <-chan fsnotify.Event
	var errs <-chan error
	path, _ := filepath.Abs(d.opt.ConfigPath)
	if w, err := fsnotify.NewWatcher(); err != nil {
		d.log.Warn("config file watch unavailable; reload with SIGHUP", zap.Error(err))
	} else {
		defer w.Close()
		if err := w.Add(filepath.Dir(path)); err != nil {
			d.log.Warn("config file watch unavailable; reload with SIGHUP", zap.Error(err))
		} else {
			events, errs = w.Events, w.Errors
		}
	}
	var timer *time.Timer
	var fire <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			_ = d.reload(ctx, "SIGHUP")
		case ev := <-events:
			if ev.Name != path || ev.Op == fsnotify.Chmod {
				continue
			}
			if timer == nil {
				timer = time.NewTimer(reloadDebounce)
			} else {
				timer.Reset(reloadDebounce)
			}
			fire = timer.C
		case <-fire:
			fire = nil
			if _, err := os.Stat(path); err != nil {
				continue // removed, or between a rename's two halves: wait for it to return
			}
			_ = d.reload(ctx, "file change")
		case err := <-errs:
			d.log.Warn("config file watch", zap.Error(err))
		}
	}
}
