package settings

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/sgd-firewall/sgd/internal/rules"
)

func intp(i int) *int    { return &i }
func boolp(b bool) *bool { return &b }

func TestResolve(t *testing.T) {
	def := Resolve(Section{}, Section{})
	if def.MetricsListen != "127.0.0.1:9640" || def.QueueNum != DefaultQueueNum || def.QueueCount != 1 || def.FailOpen ||
		!def.ExemptDHCP || def.MaxTracked != 262144 || def.StatusSocket != DefaultStatusSocket || def.LogFormat != "json" {
		t.Errorf("Resolve(defaults) = %+v", def)
	}
	cfg := Section{QueueNum: intp(7), QueueCount: intp(2), FailOpen: true, ExemptDHCP: boolp(false),
		MetricsListen: "127.0.0.1:9999", MaxTrackedConnections: intp(10)}
	got := Resolve(cfg, Section{QueueNum: intp(9), MetricsListen: "off", StatusSocket: "off"})
	if got.QueueNum != 9 || got.QueueCount != 2 || !got.FailOpen || got.ExemptDHCP || got.MetricsListen != "" ||
		got.StatusSocket != "" || got.MaxTracked != 10 {
		t.Errorf("Resolve(config, flags) = %+v; want flags over config over defaults", got)
	}
}

// SPEC 4.8's switches: audit and allow_missing_interfaces are off and adoption on by
// default; the first two are on when the file or a flag turns them on (as fail_open
// is), and adopt_established is the flag's value where one is set, else the file's.
func TestResolveSafety(t *testing.T) {
	for _, tt := range []struct {
		file, flags        Section
		audit, adopt, miss bool
	}{
		{Section{}, Section{}, false, true, false},
		{Section{Audit: true}, Section{}, true, true, false},
		{Section{}, Section{Audit: true, AllowMissingInterfaces: true}, true, true, true},
		{Section{AdoptEstablished: boolp(false), AllowMissingInterfaces: true}, Section{}, false, false, true},
		{Section{AdoptEstablished: boolp(false)}, Section{AdoptEstablished: boolp(true)}, false, true, false},
	} {
		got := Resolve(tt.file, tt.flags)
		if got.Audit != tt.audit || got.AdoptEstablished != tt.adopt || got.AllowMissingInterfaces != tt.miss {
			t.Errorf("Resolve(%+v, %+v) = audit %v, adopt %v, allow missing %v; want %v, %v, %v", tt.file, tt.flags,
				got.Audit, got.AdoptEstablished, got.AllowMissingInterfaces, tt.audit, tt.adopt, tt.miss)
		}
		// Audit mode drops nothing, not even while no daemon answers.
		if got.FailOpen != tt.audit {
			t.Errorf("Resolve(%+v, %+v).FailOpen = %v; want %v (audit implies fail_open)", tt.file, tt.flags, got.FailOpen, tt.audit)
		}
	}
}

// The section's quotas reach the SG validator as written (Validate refuses those out of
// range); unset is the zero Quotas, AWS's defaults.
func TestQuotas(t *testing.T) {
	for _, tt := range []struct {
		s    Section
		want rules.Quotas
	}{
		{Section{}, rules.Quotas{}},
		{Section{RulesPerGroupQuota: intp(62)}, rules.Quotas{RulesPerGroup: 62}},
		{Section{GroupsPerInterfaceQuota: intp(16)}, rules.Quotas{GroupsPerInterface: 16}},
		{Section{RulesPerGroupQuota: intp(100), GroupsPerInterfaceQuota: intp(10)}, rules.Quotas{RulesPerGroup: 100, GroupsPerInterface: 10}},
		{Section{GroupsPerInterfaceQuota: intp(17)}, rules.Quotas{GroupsPerInterface: 17}},
	} {
		if got := tt.s.Quotas(); got != tt.want {
			t.Errorf("Quotas(%+v) = %+v; want %+v", tt.s, got, tt.want)
		}
	}
}

// The section is decoded by yaml tags like the rest of the file (rules.Parse); the json
// tags, used to print it, must say the same, with no options that would change a name.
func TestSectionTags(t *testing.T) {
	typ := reflect.TypeFor[Section]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		y, j := f.Tag.Get("yaml"), f.Tag.Get("json")
		if y == "" || y != j || strings.ContainsAny(y, ",-") {
			t.Errorf("%s.%s tags yaml:%q json:%q; want one plain snake_case name, the same in both", typ.Name(), f.Name, y, j)
		}
	}
}

// The flags' etcd settings win field by field; the prefix defaults to /sgd/.
func TestResolveEtcd(t *testing.T) {
	d := Section{Etcd: &EtcdSection{Endpoints: []string{"http://a:2379"}, CACert: "/ca"}}
	o := Section{Etcd: &EtcdSection{Endpoints: []string{"http://b:2379", "http://c:2379"}}}
	got := Resolve(d, o).Etcd
	hostname, _ := os.Hostname()
	want := Etcd{Endpoints: "http://b:2379,http://c:2379", CACert: "/ca", Prefix: "/sgd/", HostID: hostname, MemberTTL: DefaultMemberTTL}
	if got != want || !got.Fleet() || len(got.EndpointList()) != 2 {
		t.Errorf("Resolve = %+v; want %+v", got, want)
	}
	if e := Resolve(Section{}, Section{}).Etcd; e.Fleet() || e.EndpointList() != nil || e.HostID != "" {
		t.Errorf("Resolve of nothing = %+v; want no fleet mode (and no host id)", e)
	}
	ttl := 3
	d.Etcd.HostID, d.Etcd.MemberTTL = "file-id", &ttl
	o.Etcd.HostID = "flag-id"
	if e := Resolve(d, o).Etcd; e.HostID != "flag-id" || e.MemberTTL != 3 {
		t.Errorf("Resolve = %+v; want the flag's host id and the file's member_ttl 3", e)
	}
}

func TestCheckHostID(t *testing.T) {
	for _, tt := range []struct {
		id string
		ok bool
	}{
		{"web-1", true}, {"host.example.com", true}, {"A_b.9", true}, {"7", true}, {strings.Repeat("x", MaxHostIDLen), true},
		{"", false}, {"-web", false}, {".web", false}, {"a/b", false}, {"a b", false}, {"a\nb", false}, {"é", false},
		{strings.Repeat("x", MaxHostIDLen+1), false}, {"a:b", false},
	} {
		if msg := CheckHostID(tt.id); (msg == "") != tt.ok {
			t.Errorf("CheckHostID(%q) = %q; want ok=%v", tt.id, msg, tt.ok)
		}
	}
}
