package main

import (
	"context"
	"fmt"
	"io"

	"github.com/sgd-firewall/sgd/internal/controller"
	"github.com/sgd-firewall/sgd/internal/daemon"
	"github.com/sgd-firewall/sgd/internal/rules"
)

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", "--config FILE",
		`Validate a config file (YAML, or JSON) against AWS's Security Group rules: every
mistake is reported with the group, rule, field and the AWS error code the EC2 API would
give. Exit 0 when valid, 1 when not, 2 on a usage error. Never touches the firewall.`, stderr)
	config := fs.String("config", "", "config file `path` (required)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if *config == "" {
		fmt.Fprintln(stderr, "sgd check: --config is required")
		return 2
	}
	// The controller's own load (read, validate, compile), as `sgd run` does it.
	file := controller.NewFile(*config)
	st, err := controller.Load(context.Background(), rules.Env{LocalAddrs: daemon.LocalAddrs}, file)
	if err != nil {
		fmt.Fprintln(stderr, err)
		if es, ok := err.(rules.Errors); ok {
			fmt.Fprintf(stderr, "%s: %d error(s); config rejected\n", *config, len(es))
		}
		return 1
	}
	m := st.Model
	// What `sgd run` checks before it touches netfilter (interface names it can put in a
	// rule), so that a config check passes exactly when run would accept it.
	if err := daemon.CheckNetfilter(st.Policy, file.Settings()); err != nil {
		fmt.Fprintf(stderr, "%s: %s: %v\n", *config, rules.CodeParameterValue, err)
		return 1
	}
	for _, w := range m.Warnings() {
		fmt.Fprintln(stderr, "warning:", w)
	}
	nrules := 0
	for _, g := range m.Groups {
		nrules += len(g.Ingress) + len(g.Egress)
	}
	fmt.Fprintf(stdout, "%s: OK: %d groups, %d rules, %d interfaces, %d prefix lists, %d members\n",
		*config, len(m.Groups), nrules, len(m.Interfaces), len(m.PrefixLists), len(m.Members))
	return 0
}
