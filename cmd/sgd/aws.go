package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/sgd-firewall/sgd/internal/awsjson"
	"github.com/sgd-firewall/sgd/internal/controller"
	"github.com/sgd-firewall/sgd/internal/daemon"
	"github.com/sgd-firewall/sgd/internal/rules"
	"github.com/sgd-firewall/sgd/internal/settings"
)

// stdin is what `sgd import aws -` reads (a variable for the CLI test).
var stdin io.Reader = os.Stdin

const importAbout = `Turn the output of the AWS CLI into an sgd config, printed on stdout (YAML, as the
README writes configs):

  aws ec2 describe-security-groups > groups.json
  sgd import aws groups.json > sgd.yaml

FILE is the JSON (or --output yaml) of aws ec2 describe-security-groups: the whole
output, one group of it or the list of groups; - reads stdin. Each IpPermission becomes
one rule per peer (IpRanges, Ipv6Ranges, PrefixListIds, UserIdGroupPairs), each with its
own description; ports as AWS gives them (ICMP type and code in FromPort and ToPort).

Egress is left out (sgd's default: all traffic to 0.0.0.0/0 and ::/0) only where AWS lists
exactly that. AWS's default without IPv6, all traffic to 0.0.0.0/0 alone, stays an
explicit rule, so that IPv6 egress stays closed as in AWS and sgd export aws gives back
the same permissions. An empty IpPermissionsEgress is egress: [] (nothing out).

A rule that references a group not in FILE is kept, with a comment: sgd check rejects it
(InvalidGroup.NotFound) until that group is added — nothing is invented or dropped. So is
a rule whose prefix list's entries were not given (InvalidPrefixListID.NotFound). Rules keep
sgd's content-derived ids (describe-security-groups has none); the groups' OwnerId becomes
daemon.account_id; tags and VpcId become comments. AWS's JSON names no interfaces: add
interfaces: before sgd run (the first lines say how).

Prefix lists: get each referenced list's entries and name the list each file belongs to
(get-managed-prefix-list-entries does not say):

  aws ec2 describe-managed-prefix-lists > lists.json            # names (optional)
  aws ec2 get-managed-prefix-list-entries --prefix-list-id pl-0123456789abcdef0 > corp.json
  sgd import aws groups.json --prefix-lists lists.json --entries pl-0123456789abcdef0=corp.json

The printed config is checked as sgd check checks a file. Exit 0 when it passes; 1 when
an input is not the AWS output it should be (nothing printed) or when the printed config
does not pass yet (the reasons on stderr); 2 on a usage error or an input that does not
exist or cannot be opened.`

func cmdImport(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("import aws", "FILE [--prefix-lists FILE] [--entries PL-ID=FILE]...", importAbout, stderr)
	lists := fs.String("prefix-lists", "", "`file` of aws ec2 describe-managed-prefix-lists: the lists' names")
	var entries []entriesFlag
	fs.Func("entries", "`PL-ID=FILE`: FILE is the output of aws ec2 get-managed-prefix-list-entries --prefix-list-id PL-ID (repeat for each list)", func(s string) error {
		id, file, ok := strings.Cut(s, "=")
		switch {
		case !ok || id == "" || file == "":
			return errors.New("want PL-ID=FILE, such as pl-0123456789abcdef0=corp.json")
		case !strings.HasPrefix(id, "pl-"):
			return fmt.Errorf("%q is not a prefix list id (pl-…)", id)
		case slices.ContainsFunc(entries, func(e entriesFlag) bool { return e.id == id }):
			return fmt.Errorf("%s is given twice", id)
		}
		entries = append(entries, entriesFlag{id, file})
		return nil
	})
	if code, done := kind("import", "aws FILE", args, fs, stderr); done {
		return code
	}
	files, code, done := parseInterspersed(fs, args[1:])
	if done {
		return code
	}
	if len(files) != 1 {
		fmt.Fprintf(stderr, "sgd import aws: want one FILE (describe-security-groups output), not %d\n", len(files))
		return exitUsage
	}
	file := files[0]

	var warnings []string
	read := func(path string, parse func(name string, data []byte) ([]string, error)) int {
		data, err := readInput(path)
		if err != nil {
			fmt.Fprintf(stderr, "sgd import aws: %s: %v\n", path, err)
			return exitUsage
		}
		name := path
		if path == "-" {
			name = "stdin"
		}
		ws, err := parse(name, data)
		for _, w := range ws {
			warnings = append(warnings, name+": "+w)
		}
		if err != nil {
			fmt.Fprintln(stderr, err)
			fmt.Fprintf(stderr, "sgd import aws: %s rejected; nothing was printed\n", name)
			return exitNo
		}
		return exitOK
	}
	var src awsjson.Sources
	if code := read(file, func(name string, data []byte) (ws []string, err error) {
		src.File = name
		src.Groups, ws, err = awsjson.ReadSecurityGroups(name, data)
		return ws, err
	}); code != exitOK {
		return code
	}
	if *lists != "" {
		if code := read(*lists, func(name string, data []byte) (ws []string, err error) {
			src.PrefixLists, ws, err = awsjson.ReadPrefixLists(name, data)
			return ws, err
		}); code != exitOK {
			return code
		}
	}
	for _, e := range entries {
		if code := read(e.file, func(name string, data []byte) ([]string, error) {
			es, ws, err := awsjson.ReadEntries(name, data)
			src.Entries = append(src.Entries, awsjson.ListEntries{PrefixListId: e.id, File: e.file, Entries: es})
			return ws, err
		}); code != exitOK {
			return code
		}
	}

	im := awsjson.Import(src)
	out := im.YAML()
	if _, err := stdout.Write(out); err != nil {
		fmt.Fprintln(stderr, "sgd import aws:", err)
		return exitNo
	}
	for _, w := range append(warnings, im.Warnings...) {
		fmt.Fprintln(stderr, "warning:", w)
	}
	c := im.Config()
	what := fmt.Sprintf("%s, %s, %s", plural(len(c.SecurityGroups), "group"), plural(ruleCount(c), "rule"), plural(len(c.PrefixLists), "prefix list"))
	if err := checkPrinted(out); err != nil {
		fmt.Fprintln(stderr, err)
		n := 1
		if es, ok := err.(rules.Errors); ok {
			n = len(es)
		}
		fmt.Fprintf(stderr, "sgd import aws: printed %s from %s, but sgd check would reject it (%s; the comments in it say what to add)\n", what, src.File, plural(n, "error"))
		return exitNo
	}
	fmt.Fprintf(stderr, "sgd import aws: printed %s from %s; add interfaces: (see its first lines), then sgd check --config FILE\n", what, src.File)
	return exitOK
}

type entriesFlag struct{ id, file string }

// kind checks the first argument of sgd import and sgd export, the kind of JSON (aws,
// the only one so far); done with the exit code when there is nothing more to do: help
// asked for (fs's), or no kind or another one (the usage line shows what to write).
func kind(verb, usage string, args []string, fs *flag.FlagSet, stderr io.Writer) (int, bool) {
	switch {
	case len(args) == 0:
		fmt.Fprintf(stderr, "sgd %s: say what to %s: sgd %s %s (see sgd %s --help)\n", verb, verb, verb, usage, verb)
		return exitUsage, true
	case args[0] == "-h" || args[0] == "--help" || args[0] == "-help":
		fs.Usage()
		return exitOK, true
	case args[0] != "aws":
		fmt.Fprintf(stderr, "sgd %s: %q is not a kind sgd can %s; it knows aws: sgd %s %s\n", verb, args[0], verb, verb, usage)
		return exitUsage, true
	}
	return 0, false
}

// parseInterspersed parses flags and positional arguments in any order (sgd import aws
// FILE --entries … as well as --entries … FILE) and returns the positional ones; done
// with the exit code as parseFlags says it.
func parseInterspersed(fs *flag.FlagSet, args []string) (pos []string, code int, done bool) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK, true
			}
			return nil, exitUsage, true
		}
		if fs.NArg() == 0 {
			return pos, 0, false
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// readInput reads an input file (- is stdin), at most awsjson.MaxInputSize bytes and one
// more, so that the reader can say it is too big. The error is the operating system's
// reason when the file cannot be opened or read.
func readInput(path string) ([]byte, error) {
	r := stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				return nil, pe.Err
			}
			return nil, err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, awsjson.MaxInputSize+1))
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return data, err
}

func ruleCount(c rules.Config) int {
	n := 0
	for _, g := range c.SecurityGroups {
		n += len(g.Ingress)
		if g.Egress != nil {
			n += len(*g.Egress)
		}
	}
	return n
}

// checkPrinted holds the printed config to what sgd check holds a file to: the controller
// reads it from a file, validates and compiles it exactly as check does. Errors name the
// printed config "stdout", with its line numbers.
func checkPrinted(out []byte) error {
	f, err := os.CreateTemp("", "sgd-import-*.yaml")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(out)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	_, err = controller.Load(context.Background(), rules.Env{LocalAddrs: daemon.LocalAddrs}, controller.NewFile(f.Name()))
	var es rules.Errors
	switch {
	case errors.As(err, &es):
		for _, e := range es {
			if e.File == f.Name() {
				e.File = "stdout"
			}
		}
		return es
	case err != nil:
		return errors.New(strings.ReplaceAll(err.Error(), f.Name(), "stdout"))
	}
	return nil
}

func cmdExport(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("export aws", "--config FILE",
		`Print the config's security groups as aws ec2 describe-security-groups prints them
({"SecurityGroups": [...]}, JSON indented as the CLI indents it): for a diff against AWS,
or for tools that read that shape. Permissions are grouped as EC2 groups them: one
IpPermission per protocol and port range, with every peer of that range in its lists.

Defaults are as sgd enforces them: an omitted egress is all traffic to 0.0.0.0/0 and
::/0; AWS's default group appears when an interface without groups needs it. OwnerId is
daemon.account_id (default 000000000000); VpcId is sgd's one VPC, `+awsjson.VpcID+`, as the
EC2 API of sgd run shows it. Interfaces, members and rule ids are not part of the shape.
sgd import aws turns the output back into the same groups.

Exit 0 when printed; 1 when the config is rejected (sgd check says why); 2 on a usage
error or a --config that does not exist or cannot be opened.`, stderr)
	config := fs.String("config", "", "config file `path` (required)")
	if code, done := kind("export", "aws --config FILE", args, fs, stderr); done {
		return code
	}
	if code, done := parseFlags(fs, args[1:]); done {
		return code
	}
	if *config == "" {
		fmt.Fprintln(stderr, "sgd export aws: --config is required")
		return exitUsage
	}
	file := controller.NewFile(*config)
	st, err := controller.Load(context.Background(), rules.Env{LocalAddrs: daemon.LocalAddrs}, file)
	if err != nil {
		return configFailed("export", *config, err, stderr)
	}
	owner := settings.Resolve(file.Settings(), settings.Section{}).AccountID
	out, err := awsjson.JSON(awsjson.Export(st.Model, owner))
	if err == nil {
		_, err = stdout.Write(out)
	}
	if err != nil {
		fmt.Fprintln(stderr, "sgd export aws:", err)
		return exitNo
	}
	return exitOK
}
