package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sgd-firewall/sgd/internal/daemon"
	"github.com/sgd-firewall/sgd/internal/settings"
)

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("run", "--config FILE [flags]",
		`Run the daemon in the foreground (systemd runs this). It validates the config (refusing
to start on any error), binds its NFQUEUE queues, installs its own iptables/ip6tables
chains for the configured interfaces, and judges every packet on them. SIGHUP or a change
of the config file reloads; SIGINT/SIGTERM stop it and remove exactly the rules it added.
It refuses a config that lists no interface, or one this host does not have (unless
--allow-missing-interfaces). It adopts the host's established TCP connections, so
starting it cuts none, and warns when the SSH session it is started from would be
denied. --audit judges and counts everything and drops nothing.
If it is killed, the rules stay: traffic on the filtered interfaces is dropped until it
runs again (fail-closed), or passes unfiltered with fail_open.

Flags override the config's daemon: section.

Exit 0 after a clean stop; 1 when the config is rejected or sgd cannot start or fails
(the message says what: the config's errors, or the flag, file or queue at fault); 2 on a
usage error: a bad flag, or a --config that does not exist or cannot be opened.`, stderr)
	config := fs.String("config", "", "config file `path` (required)")
	metricsListen := fs.String("metrics-listen", "", "Prometheus `address:port` (default 127.0.0.1:9640; \"off\" disables)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (default info)")
	logFormat := fs.String("log-format", "", "json or console (default json)")
	queueNum := fs.Int("queue-num", 0, "first NFQUEUE `number` (default 100)")
	queueCount := fs.Int("queue-count", 0, "number of queues, one reader each, spread by CPU (default 1)")
	failOpen := fs.Bool("fail-open", false, "let traffic pass while no daemon answers (default: fail closed)")
	fastPath := fs.Bool("fast-path", true, "let the kernel carry flows sgd allowed, with their timeouts, counters and flow logs kept (SPEC 4.7); --fast-path=false judges every packet in sgd")
	statusSocket := fs.String("status-socket", "", "`path` of the root-only status socket (default /run/sgd/sgd.sock; \"off\" disables)")
	flowLog := fs.String("flow-log", "", "append VPC Flow Log records to this `file`")
	apiListen := fs.String("api-listen", "", "serve the EC2 Query API on `address:port` (off by default; requests signed with a key of daemon.api_credentials_file)")
	stateDir := fs.String("state-dir", "", "`directory` where objects created through the API are kept (default /var/lib/sgd)")
	etcdEndpoints := fs.String("etcd-endpoints", "", "fleet mode: etcd client `URL[,URL…]`; the API's groups live there and every host enforces them")
	etcdCACert := fs.String("etcd-cacert", "", "CA certificate `file` that verifies etcd's servers")
	etcdCert := fs.String("etcd-cert", "", "client certificate `file` for etcd (with --etcd-key)")
	etcdKey := fs.String("etcd-key", "", "client key `file` for etcd (with --etcd-cert)")
	etcdHostID := fs.String("etcd-host-id", "", "fleet mode: this host's `id` among the fleet's members (default: the host name)")
	audit := fs.Bool("audit", false, "judge, track, count and log every packet but drop none (would-be drops count as would_drop)")
	allowMissing := fs.Bool("allow-missing-interfaces", false, "start although a configured interface does not exist; filter it once it appears")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if *config == "" {
		fmt.Fprintln(stderr, "sgd run: --config is required (see --help)")
		return 2
	}
	var o settings.Section
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	o.MetricsListen, o.LogLevel, o.LogFormat, o.StatusSocket, o.FlowLogFile = *metricsListen, *logLevel, *logFormat, *statusSocket, *flowLog
	o.APIListen, o.StateDir = *apiListen, *stateDir
	if set["queue-num"] {
		o.QueueNum = queueNum
	}
	if set["queue-count"] {
		o.QueueCount = queueCount
	}
	o.FailOpen = *failOpen
	if set["fast-path"] {
		o.FastPath = fastPath
	}
	o.Audit, o.AllowMissingInterfaces = *audit, *allowMissing
	if *etcdEndpoints != "" || *etcdCACert != "" || *etcdCert != "" || *etcdKey != "" || *etcdHostID != "" {
		o.Etcd = &settings.EtcdSection{CACert: *etcdCACert, Cert: *etcdCert, Key: *etcdKey, HostID: *etcdHostID}
		if *etcdEndpoints != "" {
			o.Etcd.Endpoints = strings.Split(*etcdEndpoints, ",")
		}
	}
	if err := checkOverrides(o); err != nil {
		fmt.Fprintln(stderr, "sgd run:", err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "sgd run: needs root (CAP_NET_ADMIN) to bind NFQUEUE and install iptables rules")
		return 1
	}
	opt := daemon.Options{ConfigPath: *config, Overrides: o, Version: buildVersion(),
		SSHConnection: os.Getenv("SSH_CONNECTION"), Stderr: stderr}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := daemon.Run(ctx, opt)
	if err != nil {
		// Only the config's own problems say it was rejected; a flag, a file or a queue
		// at fault is named by the error itself.
		var ce *daemon.ConfigError
		if errors.As(err, &ce) {
			return configFailed("run", *config, ce.Err, stderr)
		}
		fmt.Fprintln(stderr, "sgd run:", err)
		return exitNo
	}
	return exitOK
}

func checkOverrides(o settings.Section) error {
	// The same checks as the file's daemon: section, in the flags' names.
	for _, e := range o.Validate(nil) {
		return fmt.Errorf("%s: %s", flagName(e.Field), e.Msg)
	}
	if o.QueueNum != nil && (*o.QueueNum < 0 || *o.QueueNum > 65535) {
		return fmt.Errorf("--queue-num %d is outside 0–65535", *o.QueueNum)
	}
	if o.QueueCount != nil && (*o.QueueCount < 1 || *o.QueueCount > 64) {
		return fmt.Errorf("--queue-count %d is outside 1–64", *o.QueueCount)
	}
	return nil
}

// flagName is the flag of sgd run that sets the daemon: section's field.
func flagName(field string) string {
	if field == "flow_log_file" {
		return "--flow-log"
	}
	return "--" + strings.NewReplacer("_", "-", ".", "-").Replace(field)
}
