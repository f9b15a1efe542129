package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// DefaultDir is the state directory of `sgd run` (SPEC 4.4: --state-dir, daemon.state_dir).
const DefaultDir = "/var/lib/sgd"

// stateFile is the name of the state in the directory; temporary files start with it.
const stateFile = "api-state.json"

// Dir is a Store in a local directory: the whole snapshot in one JSON file, replaced by
// writing a temporary file next to it, fsyncing it, renaming it over the old one and
// fsyncing the directory.
//
// Why a whole file and not a database (bbolt): the state is small (AWS's quotas bound
// it: groups × 60 rules per direction), every change is validated against the whole state
// anyway, and rename(2) within one directory is atomic, so a reader — this process after a
// crash — finds the old file or the new one, never a mix. The fsync before the rename makes
// the new file's bytes durable before its name points at them (without it, ext4 and xfs may
// show a renamed, empty file after a power cut); the fsync of the directory after it makes
// the rename itself durable before Commit returns. The file is small enough to write whole
// at API rates, and a person can read it.
//
// An exclusive flock on the directory's lock file keeps a second sgd from writing the same
// state. Safe for use by several goroutines.
type Dir struct {
	path string
	lock *os.File

	mu  sync.Mutex // serialises Commit; guards rev
	rev uint64
}

// OpenDir opens (creating it, mode 0700, when missing) the state directory at path. A
// temporary file left by a crash mid-write is removed: it was never the state.
func OpenDir(path string) (*Dir, error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(path, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("state directory %s is in use by another sgd: %w", path, err)
	}
	d := &Dir{path: path, lock: lock}
	ents, err := os.ReadDir(path)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("state directory: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), stateFile+".tmp") {
			os.Remove(filepath.Join(path, e.Name()))
		}
	}
	s, err := d.read()
	if err != nil {
		d.Close()
		return nil, err
	}
	d.rev = s.Revision
	return d, nil
}

func (d *Dir) file() string { return filepath.Join(d.path, stateFile) }

func (d *Dir) read() (*Snapshot, error) {
	b, err := os.ReadFile(d.file())
	if errors.Is(err, os.ErrNotExist) {
		return &Snapshot{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the API state: %w", err)
	}
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		// Never start from nothing when the state cannot be read: that would silently
		// drop every group the API made. The file is only ever replaced whole, so this is
		// damage from outside sgd.
		return nil, fmt.Errorf("read the API state %s: %w", d.file(), err)
	}
	return &s, nil
}

// Load reads the committed state.
func (d *Dir) Load(context.Context) (*Snapshot, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.read()
}

// Commit writes s as the new state (see Dir for why it cannot tear).
func (d *Dir) Commit(_ context.Context, s *Snapshot) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s.Revision != d.rev {
		return ErrConflict
	}
	next := *s
	next.Revision = d.rev + 1
	b, err := json.MarshalIndent(&next, "", "  ")
	if err != nil {
		return err
	}
	if err := writeAtomic(d.path, stateFile, append(b, '\n')); err != nil {
		return fmt.Errorf("write the API state: %w", err)
	}
	d.rev = next.Revision
	s.Revision = next.Revision
	return nil
}

// writeAtomic replaces dir/name with data: temp file, fsync, rename, fsync dir.
func writeAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, name+".tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	df, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer df.Close()
	return df.Sync()
}

// Close releases the directory's lock.
func (d *Dir) Close() error { return d.lock.Close() }
