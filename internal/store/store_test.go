package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sgd-firewall/sgd/internal/controller"
	"github.com/sgd-firewall/sgd/internal/rules"
)

func port(p int) *int { return &p }

func group(id string, ports ...int) Group {
	g := Group{ID: id, Name: "name-" + id[3:], Description: "test", Egress: []Rule{}}
	for i, p := range ports {
		g.Ingress = append(g.Ingress, Rule{ID: fmt.Sprintf("sgr-%017x", p*100+i), Protocol: "tcp", FromPort: port(p), ToPort: port(p), CidrIPv4: "10.0.0.0/8"})
	}
	return g
}

func open(t *testing.T, dir string) *Dir {
	t.Helper()
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatalf("OpenDir(%s) = %v", dir, err)
	}
	return d
}

func TestDirPersists(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	d := open(t, dir)
	if _, err := OpenDir(dir); err == nil {
		t.Fatal("a second OpenDir of a directory in use = nil; want an error")
	}
	s, _ := d.Load(ctx)
	if s.Revision != 0 || len(s.Groups) != 0 {
		t.Fatalf("Load of a new directory = %+v; want the empty state", s)
	}
	s.Groups = append(s.Groups, group("sg-0123456789abcdef0", 22))
	s.Groups[0].Tags = []Tag{{"Name", "web"}}
	if err := d.Commit(ctx, s); err != nil || s.Revision != 1 {
		t.Fatalf("Commit = %v, revision %d; want nil, 1", err, s.Revision)
	}
	stale := &Snapshot{}
	if err := d.Commit(ctx, stale); !errors.Is(err, ErrConflict) {
		t.Errorf("Commit(revision 0) after revision 1 = %v; want ErrConflict", err)
	}
	d.Close()

	d = open(t, dir)
	defer d.Close()
	got, err := d.Load(ctx)
	if err != nil || got.Revision != 1 || len(got.Groups) != 1 || got.Groups[0].Tags[0].Value != "web" || *got.Groups[0].Ingress[0].FromPort != 22 {
		t.Fatalf("Load after reopening = %+v, %v; want the committed group", got, err)
	}
}

// A broken state file is an error, never an empty state: starting from nothing would drop
// every group the API made.
func TestDirRefusesDamage(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, stateFile), []byte(`{"revision": 3, "groups": [`), 0o600)
	if d, err := OpenDir(dir); err == nil {
		d.Close()
		t.Fatal("OpenDir on a torn state file = nil; want an error")
	}
}

// The child of TestDirCrash: commits in a loop until it is killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv("SGD_STORE_CRASH_DIR"); dir != "" {
		d, err := OpenDir(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		ctx := context.Background()
		s, _ := d.Load(ctx)
		for i := 0; ; i++ {
			// Each revision holds revision-many rules: a torn write would not add up.
			g := group("sg-0123456789abcdef0")
			for j := 0; j <= int(s.Revision); j++ {
				g.Ingress = append(g.Ingress, Rule{ID: fmt.Sprintf("sgr-%017x", j), Protocol: "tcp", FromPort: port(j % 65536), ToPort: port(j % 65536), CidrIPv4: "10.0.0.0/8", Description: strings.Repeat("x", 200)})
			}
			s.Groups = []Group{g}
			if err := d.Commit(ctx, s); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			if i == 0 {
				fmt.Println("writing")
			}
		}
	}
	os.Exit(m.Run())
}

// Killed with SIGKILL in the middle of a burst of writes, the store is whole: the state is
// one of the committed revisions, complete.
func TestDirCrash(t *testing.T) {
	dir := t.TempDir()
	for round := range 5 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "SGD_STORE_CRASH_DIR="+dir)
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 8)
		if _, err := out.Read(buf); err != nil {
			t.Fatalf("round %d: the writer did not start: %v", round, err)
		}
		time.Sleep(time.Duration(20+round*17) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()

		d := open(t, dir)
		s, err := d.Load(context.Background())
		d.Close()
		if err != nil {
			t.Fatalf("round %d: Load after SIGKILL = %v", round, err)
		}
		if s.Revision == 0 || len(s.Groups) != 1 || len(s.Groups[0].Ingress) != int(s.Revision) {
			t.Fatalf("round %d: after SIGKILL revision %d holds %d rules; want as many as the revision", round, s.Revision, len(s.Groups[0].Ingress))
		}
		t.Logf("round %d: revision %d, whole", round, s.Revision)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("a temporary file outlived OpenDir: %s", e.Name())
		}
	}
}

// reloader is a controller started on the source alone; the real validator judges.
func startController(t *testing.T, src *Source) *controller.Controller {
	t.Helper()
	ctl := controller.New(controller.Options{Sources: []controller.Source{src}})
	st, err := ctl.Load(context.Background())
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	if err := ctl.Start(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	return ctl
}

// A change the validator refuses changes neither the store nor the running state; a good
// one is in force and committed.
func TestApply(t *testing.T) {
	ctx := context.Background()
	d := open(t, t.TempDir())
	defer d.Close()
	src, err := NewSource(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	ctl := startController(t, src)
	apply := src.Applier(ctl)

	if err := apply(ctx, "test", func(s *Snapshot) error {
		s.Groups = append(s.Groups, group("sg-0123456789abcdef0", 22))
		return nil
	}); err != nil {
		t.Fatalf("apply(a good group) = %v", err)
	}
	if g := ctl.Running().Model.Group("sg-0123456789abcdef0"); g == nil || g.Ingress[0].ID != fmt.Sprintf("sgr-%017x", 2200) {
		t.Fatalf("the running model lacks the group or its stored rule id: %+v", g)
	}
	before := ctl.Running()

	err = apply(ctx, "test", func(s *Snapshot) error {
		s.Groups[0].Ingress[0].ToPort = port(70000)
		return nil
	})
	var es rules.Errors
	if !errors.As(err, &es) || es[0].Code != rules.CodePermissionMalformed || !strings.Contains(es[0].File, "sgr-") {
		t.Fatalf("apply(port 70000) = %v; want InvalidPermission.Malformed placed at the rule", err)
	}
	if ctl.Running() != before {
		t.Error("a refused change changed the running state")
	}
	if s, _ := d.Load(ctx); *s.Groups[0].Ingress[0].ToPort != 22 || s.Revision != 1 {
		t.Errorf("a refused change reached the store: %+v", s.Groups[0].Ingress[0])
	}
	if *src.Snapshot().Groups[0].Ingress[0].ToPort != 22 {
		t.Error("a refused change is in the source's snapshot")
	}

	// A change whose own function fails is not even proposed.
	sentinel := errors.New("no")
	if err := apply(ctx, "test", func(*Snapshot) error { return sentinel }); err != sentinel {
		t.Errorf("apply(failing change) = %v; want its error", err)
	}
}

// In fleet mode a host proposes its own attachments, and those for every host (written
// before hosts had ids) where it has none of its own; a single host proposes what it
// always did.
func TestConfigForHost(t *testing.T) {
	s := &Snapshot{Interfaces: []Attachment{
		{Interface: "eth0", Groups: []string{"sg-all"}},
		{Interface: "eth0", Host: "a", Groups: []string{"sg-a"}},
		{Interface: "eth1", Host: "b", Groups: []string{"sg-b"}},
		{Interface: "eth2", Groups: []string{"sg-all2"}},
	}}
	names := func(host string) string {
		var out []string
		for _, itf := range s.ConfigFor(host).Interfaces {
			out = append(out, itf.Name+"="+strings.Join(itf.SecurityGroups, ","))
		}
		return strings.Join(out, " ")
	}
	for host, want := range map[string]string{"": "eth0=sg-all eth2=sg-all2", "a": "eth0=sg-a eth2=sg-all2",
		"b": "eth0=sg-all eth1=sg-b eth2=sg-all2", "c": "eth0=sg-all eth2=sg-all2"} {
		if got := names(host); got != want {
			t.Errorf("ConfigFor(%q) interfaces = %s; want %s", host, got, want)
		}
	}
	if a := s.Attachment("b", "eth0"); a == nil || a.Groups[0] != "sg-all" {
		t.Errorf("Attachment(b, eth0) = %+v; want the one for every host", a)
	}
	// Attach gives b its own, from the one in force.
	a := s.Attach("b", "eth0")
	a.Groups = append(a.Groups, "sg-more")
	if got := names("b"); got != "eth1=sg-b eth2=sg-all2 eth0=sg-all,sg-more" {
		t.Errorf("after Attach(b, eth0): %s", got)
	}
	if got := names(""); got != "eth0=sg-all eth2=sg-all2" {
		t.Errorf("after Attach(b, eth0) a single host's: %s; want unchanged", got)
	}
}

// ENI ids: a single host's derive from the name, as they always did; a fleet host's from
// its id and the name.
func TestInterfaceENI(t *testing.T) {
	if InterfaceENI("", "eth0") != rules.PortENI("eth0") {
		t.Error("a single host's ENI id changed")
	}
	a, b := InterfaceENI("a", "eth0"), InterfaceENI("b", "eth0")
	if a == b || a == InterfaceENI("", "eth0") || len(a) != len("eni-")+17 || a != InterfaceENI("a", "eth0") {
		t.Errorf("InterfaceENI(a, eth0) = %s, (b, eth0) = %s; want distinct stable eni- ids", a, b)
	}
}
