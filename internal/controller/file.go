package controller

import (
	"context"
	"sync"

	"github.com/sgd-firewall/sgd/internal/rules"
	"github.com/sgd-firewall/sgd/internal/settings"
)

// File is the config file as a source (SPEC 2.1): one YAML or JSON document whose
// security_groups, prefix_lists, interfaces and members are the SG model's, and whose
// daemon: section is the daemon's own settings. Propose reads it whole each time (a
// reload), validates the daemon: section (internal/settings) and keeps it for the
// daemon (Settings); its quotas are the SG model's. Safe for use by several goroutines.
type File struct {
	path string

	mu     sync.Mutex
	daemon settings.Section // of the last read whose daemon: section was valid
}

// NewFile returns the file at path as a source; nothing is read yet.
func NewFile(path string) *File { return &File{path: path} }

// Name is the file's path.
func (f *File) Name() string { return f.path }

// Propose reads, parses and checks the file (rules.LoadFile: a regular file of at most
// rules.MaxConfigSize bytes, every field known).
func (f *File) Propose(context.Context) (Proposal, error) {
	var sec settings.Section
	doc, err := rules.LoadFile(f.path, sec.Of())
	if err != nil {
		return Proposal{}, err
	}
	problems := sec.Validate(doc)
	if len(problems) == 0 {
		f.mu.Lock()
		f.daemon = sec
		f.mu.Unlock()
	}
	q := sec.Quotas()
	return Proposal{Config: doc.Config, Locator: doc, Version: doc.Hash, Quotas: &q, Problems: problems}, nil
}

// Settings returns the daemon: section of the last read in which it was valid (the zero
// Section before any).
func (f *File) Settings() settings.Section {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.daemon
}
