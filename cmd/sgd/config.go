package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/sgd-firewall/sgd/internal/rules"
)

// Exit codes, one rule for every verb (README "Exit codes"; each command's --help):
//
//	0  yes: the config is valid (check), the packet passes (explain), a clean stop (run)
//	1  no: the config is rejected (check, run), the packet is denied (explain), or run
//	   could not start or stopped on an error
//	2  the question could not be asked: a bad flag or argument, or a --config path that
//	   does not exist or cannot be opened — nothing was read, so nothing was judged.
//	   explain also answers 2 for a config it reads and rejects: its 1 means DENY
//	   (SPEC 2.2), and a config it cannot use gives no verdict on the packet.
const (
	exitOK    = 0
	exitNo    = 1
	exitUsage = 2
)

// unreadable returns the operating system's reason when err says the config file could
// not be opened or read at all (it does not exist, permission denied), or nil. A file sgd
// read and refused — a directory, a FIFO, too big, not a valid config — is not that: it
// is the config being rejected.
func unreadable(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return nil
}

// configFailed prints why the config at path could not be used by verb and returns the
// exit code: exitUsage when the file could not be read, exitNo when it was rejected. The
// problems are printed one a line, as the config's errors say them, then a summary.
func configFailed(verb, path string, err error, stderr io.Writer) int {
	if why := unreadable(err); why != nil {
		fmt.Fprintf(stderr, "sgd %s: --config %s: %v\n", verb, path, why)
		return exitUsage
	}
	fmt.Fprintln(stderr, err)
	n := 1
	if es, ok := err.(rules.Errors); ok {
		n = len(es)
	}
	what := plural(n, "error")
	if verb == "run" {
		what = "nothing was changed (" + what + ")"
	}
	fmt.Fprintf(stderr, "sgd %s: %s rejected; %s\n", verb, path, what)
	return exitNo
}

// plural writes n and the noun, with an s when n is not 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
