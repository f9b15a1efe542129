package settings_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sgd-firewall/sgd/internal/controller"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// The daemon: section as `sgd check` and `sgd run` read it: one file, loaded whole by the
// controller (internal/controller File), the section parsed strictly with the rest and
// validated here, every error with its code, where, field and line.

// lines joins its arguments as the lines of a file, so that line N of the file is
// argument N and a test can say which line an error must cite.
func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

// load loads src, written to a file called name, as the daemon does.
func load(t *testing.T, name, src string) error {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := controller.Load(context.Background(), rules.Env{}, controller.NewFile(path))
	return err
}

// fileErrors loads src and returns its errors, failing the test when there are none.
func fileErrors(t *testing.T, name, src string) rules.Errors {
	t.Helper()
	err := load(t, name, src)
	if err == nil {
		t.Fatalf("config accepted; want an error\n%s", src)
	}
	var es rules.Errors
	if errors.As(err, &es) {
		return es
	}
	var e *rules.Error
	if errors.As(err, &e) {
		return rules.Errors{e}
	}
	t.Fatalf("error %v (%T) is neither *rules.Error nor rules.Errors", err, err)
	return nil
}

func TestValidateErrors(t *testing.T) {
	for _, tt := range []struct {
		name  string
		src   string
		code  string
		where string
		field string
		line  int
	}{
		{"groups quota 17", lines(
			"daemon:",
			"  groups_per_interface_quota: 17"),
			rules.CodeParameterValue, "daemon", "groups_per_interface_quota", 2},
		{"groups quota 0", lines(
			"daemon:",
			"  groups_per_interface_quota: 0"),
			rules.CodeParameterValue, "daemon", "groups_per_interface_quota", 2},
		{"rules quota 0", lines(
			"daemon:",
			"  rules_per_group_quota: 0"),
			rules.CodeParameterValue, "daemon", "rules_per_group_quota", 2},
		{"quota product over 1000", lines(
			"daemon:",
			"  rules_per_group_quota: 63",
			"  groups_per_interface_quota: 16"),
			rules.CodeParameterValue, "daemon", "rules_per_group_quota", 2},
		{"quota product over 1000 with the default groups quota", lines(
			"daemon:",
			"  rules_per_group_quota: 201"),
			rules.CodeParameterValue, "daemon", "rules_per_group_quota", 2},
		{"quota product overflowing int", lines(
			"daemon:",
			"  rules_per_group_quota: 4611686018427387904",
			"  groups_per_interface_quota: 4"),
			rules.CodeParameterValue, "daemon", "rules_per_group_quota", 2},
		{"queue_num", lines("daemon: {queue_num: 65536}"),
			rules.CodeParameterValue, "daemon", "queue_num", 1},
		{"queue_count", lines("daemon: {queue_count: 0}"),
			rules.CodeParameterValue, "daemon", "queue_count", 1},
		{"queue_num + queue_count", lines("daemon:", "  queue_num: 65530", "  queue_count: 7"),
			rules.CodeParameterValue, "daemon", "queue_count", 3},
		{"max_tracked_connections", lines("daemon: {max_tracked_connections: 0}"),
			rules.CodeParameterValue, "daemon", "max_tracked_connections", 1},
		{"log_level", lines("daemon:", "  log_level: verbose"),
			rules.CodeParameterValue, "daemon", "log_level", 2},
		{"log_format", lines("daemon:", "  log_format: xml"),
			rules.CodeParameterValue, "daemon", "log_format", 2},
		{"metrics_listen", lines("daemon:", "  metrics_listen: localhost:9640"),
			rules.CodeParameterValue, "daemon", "metrics_listen", 2},
		{"flow_log_interval", lines("daemon:", "  flow_log_interval: 3601"),
			rules.CodeParameterValue, "daemon", "flow_log_interval", 2},
		{"denied_log_per_second", lines("daemon:", "  denied_log_per_second: -1"),
			rules.CodeParameterValue, "daemon", "denied_log_per_second", 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			es := fileErrors(t, "test.yaml", tt.src)
			if len(es) != 1 {
				t.Fatalf("Validate = %d errors; want 1\n%v", len(es), es)
			}
			e := es[0]
			got := fmt.Sprintf("%s|%s|%s|%d", e.Code, e.Where, e.Field, e.Line)
			want := fmt.Sprintf("%s|%s|%s|%d", tt.code, tt.where, tt.field, tt.line)
			if got != want {
				t.Errorf("Validate = %s; want %s (code|where|field|line)\n%v", got, want, e)
			}
			// The message a person reads names all of it.
			msg := e.Error()
			for _, part := range []string{"test.yaml:" + fmt.Sprint(tt.line) + ":", tt.where, tt.field, tt.code} {
				if !strings.Contains(msg, part) {
					t.Errorf("Error() = %q; want it to contain %q", msg, part)
				}
			}
		})
	}
}

// Everything in range, at the edges, is accepted.
func TestValidateAcceptsEdges(t *testing.T) {
	if err := load(t, "test.yaml", lines(
		"security_groups:",
		"  - group_id: sg-a",
		"interfaces:",
		"  - {name: eth0, security_groups: [sg-a]}",
		"daemon:",
		"  rules_per_group_quota: 62",
		"  groups_per_interface_quota: 16",
		"  queue_num: 65535",
		"  queue_count: 1",
		"  log_level: WARN",
		"  metrics_listen: \"[::1]:9640\"",
	)); err != nil {
		t.Errorf("Load = %v; want no error", err)
	}
}

// UnknownParameter (SPEC 1.5) in the section, with its line, as everywhere in the file;
// keys match exactly, values are read as written.
func TestParseStrict(t *testing.T) {
	for _, tt := range []struct {
		name, file, src string
		code            string
		line            int
		key             string // the key the message must name; "" for none
	}{
		{"unknown", "test.yaml", lines("daemon:", "  fail_open: true", "  queue: 3"), rules.CodeUnknownParameter, 3, "queue"},
		{"json unknown", "c.json", `{"daemon": {"failopen": true}}`, rules.CodeUnknownParameter, 1, "failopen"},
		// K (U+212A KELVIN SIGN) folds to 'k'; no sgd field has a k, so any such key is unknown.
		{"json kelvin", "c.json", lines(`{"daemon": {"ac\u212Aount_id": "1"}}`), rules.CodeUnknownParameter, 1, "ac\u212Aount_id"},
		{"yaml bool as yes", "c.yaml", lines("daemon:", "  fail_open: yes"), rules.CodeMalformedConfig, 2, ""},
		{"json bool as text", "c.json", lines(`{"daemon": {`, `"fail_open": "on"}}`), rules.CodeMalformedConfig, 2, ""},
		// SPEC 4.8's switches are booleans as written, and a misspelt one is never ignored
		// (an ignored "audit" would enforce; an ignored "adopt_established: false" would not).
		{"audit as yes", "c.yaml", lines("daemon:", "  audit: yes"), rules.CodeMalformedConfig, 2, ""},
		{"adopt as text", "c.json", lines(`{"daemon": {`, `"adopt_established": "false"}}`), rules.CodeMalformedConfig, 2, ""},
		{"audit misspelt", "c.yaml", lines("daemon:", "  audit_mode: true"), rules.CodeUnknownParameter, 2, "audit_mode"},
		{"allow missing misspelt", "c.yaml", lines("daemon:", "  allow_missing_interface: true"), rules.CodeUnknownParameter, 2, "allow_missing_interface"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			es := fileErrors(t, tt.file, tt.src)
			e := es[0]
			if len(es) != 1 || e.Code != tt.code || e.Line != tt.line || (tt.key != "" && !strings.Contains(e.Msg, fmt.Sprintf("%q", tt.key))) {
				t.Errorf("Load(%q) = %v; want one %s at line %d naming %q", tt.src, es, tt.code, tt.line, tt.key)
			}
		})
	}
}

// The README's settings table offers `off` for metrics_listen and status_socket; the
// file takes it as the flags do.
func TestValidateOff(t *testing.T) {
	for _, tt := range []struct {
		src string
		ok  bool
	}{
		{"daemon: {metrics_listen: \"off\"}", true},
		{"daemon: {metrics_listen: off}", true},
		{"daemon: {status_socket: off}", true},
		{"daemon: {metrics_listen: off, status_socket: off}", true},
		{"daemon: {metrics_listen: OFF}", false}, // the daemon turns only "off" into no server
		{"daemon: {metrics_listen: \"127.0.0.1:9640\"}", true},
	} {
		if err := load(t, "c.yaml", tt.src); (err == nil) != tt.ok {
			t.Errorf("Load(%q) = %v; want ok=%v", tt.src, err, tt.ok)
		}
	}
}

// Fleet mode's etcd: mapping (SPEC 4.6): strict, with clear messages.
func TestEtcdSection(t *testing.T) {
	for _, tt := range []struct {
		src, field string // field "": accepted
	}{
		{"daemon: {etcd: {endpoints: [\"https://10.0.0.1:2379\", \"http://10.0.0.2:2379\"], cacert: /ca.pem, cert: /c.pem, key: /k.pem, prefix: /x/}}", ""},
		{"daemon: {etcd: {endpoints: [\"10.0.0.1:2379\"]}}", "etcd.endpoints"},
		{"daemon: {etcd: {endpoints: [\"ftp://10.0.0.1:2379\"]}}", "etcd.endpoints"},
		{"daemon: {etcd: {endpoints: [\"http://10.0.0.1\"]}}", "etcd.endpoints"},
		{"daemon: {etcd: {endpoints: [\"http://10.0.0.1:2379\"], cert: /c.pem}}", "etcd.cert"},
		{"daemon: {etcd: {endpoints: [\"http://10.0.0.1:2379\"], prefix: sgd}}", "etcd.prefix"},
		{"daemon: {etcd: {endpoints: [\"http://10.0.0.1:2379\"], host_id: web-1.example_2, member_ttl: 2}}", ""},
		{"daemon: {etcd: {host_id: a, member_ttl: 600}}", ""},
		{"daemon: {etcd: {host_id: \"a/b\"}}", "etcd.host_id"},
		{"daemon: {etcd: {host_id: \"a b\"}}", "etcd.host_id"},
		{"daemon: {etcd: {host_id: -a}}", "etcd.host_id"},
		{"daemon: {etcd: {host_id: " + strings.Repeat("h", 129) + "}}", "etcd.host_id"},
		{"daemon: {etcd: {member_ttl: 1}}", "etcd.member_ttl"},
		{"daemon: {etcd: {member_ttl: 601}}", "etcd.member_ttl"},
		{"daemon: {etcd: {member_ttl: 0}}", "etcd.member_ttl"},
	} {
		err := load(t, "c.yaml", tt.src)
		if tt.field == "" {
			if err != nil {
				t.Errorf("Load(%q) = %v; want it accepted", tt.src, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("Load(%q) = %v; want an error on %s", tt.src, err, tt.field)
		}
	}
	es := fileErrors(t, "c.yaml", lines("daemon:", "  etcd:", "    endpoint: [\"http://10.0.0.1:2379\"]"))
	if es[0].Code != rules.CodeUnknownParameter || es[0].Line != 3 {
		t.Errorf("a misspelt etcd key = %v; want UnknownParameter at line 3", es)
	}
}
