package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// reloadDebounce gathers the several events an editor's save makes into one reload.
const reloadDebounce = 250 * time.Millisecond

// watchReloads reloads on SIGHUP and on changes of the config file (see configWatch).
func (d *Daemon) watchReloads(ctx context.Context, hup <-chan os.Signal) {
	var changed <-chan struct{}
	if cw, err := newConfigWatch(d.opt.ConfigPath, d.log); err != nil {
		d.log.Warn("config file watch unavailable; reload with SIGHUP", zap.Error(err))
	} else {
		defer cw.close()
		changed = cw.run(ctx, reloadDebounce)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			_ = d.reload(ctx, "SIGHUP")
		case <-changed:
			_ = d.reload(ctx, "file change")
		}
	}
}

// configWatch notices changes of the file a config path names, through any symlinks on
// the way: the path's own directory entry, every symlink met while resolving it (a link
// repointed with `ln -sfn`, a Kubernetes ConfigMap's `..data` swapped), and the file at
// the end (rewritten in place, or replaced by a rename). inotify sees changes of the
// entries of a watched directory, so it watches the directory holding each of those
// names; after every relevant event it resolves the path again and moves its watches to
// the new chain, so that a link pointed elsewhere is followed and the old target let go.
type configWatch struct {
	path  string
	w     *fsnotify.Watcher
	log   *zap.Logger
	names map[string]bool // real paths whose change can change the config (see resolve)
	found bool            // the path resolved to a file at the last look
}

func newConfigWatch(path string, log *zap.Logger) (*configWatch, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	cw := &configWatch{path: abs, w: w, log: log}
	if err := cw.rewatch(); err != nil {
		w.Close()
		return nil, err
	}
	return cw, nil
}

func (cw *configWatch) close() { cw.w.Close() }

// rewatch resolves the path again and watches the directories of the names it met,
// dropping watches no longer needed. It fails only when nothing at all can be watched.
func (cw *configWatch) rewatch() error {
	target, names, rerr := resolve(cw.path)
	cw.found = rerr == nil && target != ""
	cw.names = make(map[string]bool, len(names))
	var dirs []string
	for _, n := range names {
		cw.names[n] = true
		if d := filepath.Dir(n); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	for _, have := range cw.w.WatchList() {
		if !slices.Contains(dirs, have) {
			_ = cw.w.Remove(have) // may be gone already (deleted directory)
		}
	}
	var errs []error
	watching := 0
	for _, d := range dirs {
		if err := cw.w.Add(d); err != nil {
			errs = append(errs, fmt.Errorf("watch %s: %w", d, err))
			continue
		}
		watching++
	}
	if watching == 0 {
		return errors.Join(append(errs, rerr)...)
	}
	if len(errs) > 0 {
		cw.log.Warn("config file watch incomplete; a change there needs SIGHUP", zap.Error(errors.Join(errs...)))
	}
	return nil
}

// relevant reports whether ev is about one of the names the config depends on.
func (cw *configWatch) relevant(ev fsnotify.Event) bool {
	return ev.Op != fsnotify.Chmod && cw.names[filepath.Clean(ev.Name)]
}

// run watches until ctx ends. After a relevant event it waits for debounce of quiet (an
// editor's save, a ConfigMap swap are several events) and then, if the path names a
// file, sends on the returned channel; changes made while a send is pending join it.
func (cw *configWatch) run(ctx context.Context, debounce time.Duration) <-chan struct{} {
	changed := make(chan struct{}, 1)
	go func() {
		timer := time.NewTimer(debounce)
		timer.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-cw.w.Events:
				if !ok {
					return
				}
				if !cw.relevant(ev) {
					continue
				}
				// At once, so that a write to a link's new target during the wait is seen.
				if err := cw.rewatch(); err != nil {
					cw.log.Warn("config file watch", zap.Error(err))
				}
				timer.Reset(debounce)
			case <-timer.C:
				if err := cw.rewatch(); err != nil {
					cw.log.Warn("config file watch", zap.Error(err))
				}
				if !cw.found {
					continue // removed, or between a swap's halves: wait for it to return
				}
				select {
				case changed <- struct{}{}:
				default: // one is pending already
				}
			case err, ok := <-cw.w.Errors:
				if !ok {
					return
				}
				cw.log.Warn("config file watch", zap.Error(err))
				if errors.Is(err, fsnotify.ErrEventOverflow) {
					// Events were lost: one of them may have been ours.
					_ = cw.rewatch()
					timer.Reset(debounce)
				}
			}
		}
	}()
	return changed
}

// maxLinks bounds the symlinks resolve follows, as the kernel does (MAXSYMLINKS).
const maxLinks = 40

// resolve follows path (absolute) through its symlinks like filepath.EvalSymlinks and
// returns the real path of what it names (target) and the real paths of every name whose
// change can change what path holds: each symlink met on the way, in order, and then the
// target — or, when a component does not exist, that component (err is then set and
// target is ""). A watch on the directory of each name sees every such change.
func resolve(path string) (target string, names []string, err error) {
	todo := strings.Split(path, "/")
	cur := "/"
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur) // cur holds no symlink: its parent is its real parent
			continue
		}
		next := filepath.Join(cur, c)
		fi, err := os.Lstat(next)
		if err != nil {
			return "", append(names, next), err
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		names = append(names, next)
		if links++; links > maxLinks {
			return "", names, fmt.Errorf("%s: more than %d symlinks", path, maxLinks)
		}
		dest, err := os.Readlink(next)
		if err != nil {
			return "", names, err
		}
		if filepath.IsAbs(dest) {
			cur = "/"
		}
		todo = append(strings.Split(dest, "/"), todo...)
	}
	return cur, append(names, cur), nil
}
