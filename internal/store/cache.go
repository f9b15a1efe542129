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
func SaveCache(dir string, s *Snapshot) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if err := writeAtomic(dir, CacheFile, append(b, '\n')); err != nil {
		return fmt.Errorf("write the etcd cache: %w", err)
	}
	return nil
}

// LoadCache reads dir/CacheFile; an error wrapping fs.ErrNotExist when there is none.
func LoadCache(dir string) (*Snapshot, error) {
	path := filepath.Join(dir, CacheFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &s, nil
}
