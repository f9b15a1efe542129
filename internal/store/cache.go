package store

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// CacheFile is the name, in the state directory, of fleet mode's copy of the last etcd
// state this host applied (SaveCache).
const CacheFile = "etcd-cache.json"

// SaveCache writes s, with its revision, to dir/CacheFile atomically (as Dir commits): what
// a host in fleet mode starts from when etcd cannot be reached at start.
func SaveCache(dir string, s *Snapshot) error { return saveJSON(dir, CacheFile, "the etcd cache", s) }

// LoadCache reads dir/CacheFile; an error wrapping fs.ErrNotExist when there is none.
func LoadCache(dir string) (*Snapshot, error) {
	var s Snapshot
	if err := loadJSON(dir, CacheFile, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// saveJSON writes v as JSON to dir/name atomically; what names it in the error.
func saveJSON(dir, name, what string, v any) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := writeAtomic(dir, name, append(b, '\n')); err != nil {
		return fmt.Errorf("write %s: %w", what, err)
	}
	return nil
}

// loadJSON reads dir/name into v; an error wrapping fs.ErrNotExist when there is none.
func loadJSON(dir, name string, v any) error {
	path := filepath.Join(dir, name)
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
