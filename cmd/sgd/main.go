// Command sgd gives a Linux host AWS Security Group semantics: packets reach it through
// netfilter NFQUEUE and are accepted, or dropped silently, by the rules of the groups on
// their interface. See README.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// command is one verb of the sgd binary.
type command struct {
	name, summary string
	run           func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"run", "run the daemon in the foreground (systemd runs this)", cmdRun},
		{"check", "validate a config file without touching the firewall", cmdCheck},
		{"explain", "say whether one packet would pass, and which rule allows it", cmdExplain},
		{"import", "turn aws ec2 describe-security-groups JSON into an sgd config", cmdImport},
		{"export", "print the config's groups as aws ec2 describe-security-groups JSON", cmdExport},
		{"status", "show what the running daemon enforces", cmdStatus},
		{"demo", "lab demo in network namespaces: timeout vs connection refused", cmdDemo},
		{"bench", "benchmark: no filter vs kernel conntrack vs sgd", cmdBench},
		{"version", "print the version", cmdVersion},
	}
}

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "help":
		if len(args) > 1 {
			// sgd help run: the command's own help.
			return dispatch([]string{args[1], "--help"}, stdout, stderr)
		}
		usage(stdout)
		return 0
	case "-h", "--help":
		usage(stdout)
		return 0
	case "--version", "-version":
		return cmdVersion(nil, stdout, stderr)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "sgd: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, `sgd gives a Linux host AWS Security Group semantics: allow-only rules merged from every
group on an interface, stateful replies, silent drops (clients time out).

Usage: sgd <command> [flags]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\nRun 'sgd <command> --help' (or 'sgd help <command>') for a command's flags.\n")
}

// newFlags makes a FlagSet whose --help prints the command's description and flags.
func newFlags(name, synopsis, about string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("sgd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sgd %s %s\n\n%s\n\nFlags:\n", name, synopsis, about)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; it returns (exit code, done): help exits 0, a usage error 2.
func parseFlags(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, true
		}
		return 2, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2, true
	}
	return 0, false
}
