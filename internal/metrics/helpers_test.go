package metrics

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fullSnapshot has an entry in every field, so every sgd_ family is present.
func fullSnapshot() Snapshot {
	return Snapshot{
		Packets: []Count{
			{"ingress", "accept", "rule", 10},
			{"ingress", "accept", "tracked", 90},
			{"ingress", "drop", "no_rule", 3},
			{"egress", "accept", "untracked", 5},
			{"egress", "drop", "conntrack_full", 2},
			{"ingress", "drop", "malformed", 1},
			{"ingress", "would_drop", "no_rule", 4}, // audit mode
		},
		Bytes: []Count{
			{"ingress", "accept", "rule", 600},
			{"ingress", "accept", "tracked", 90000},
			{"ingress", "drop", "no_rule", 180},
			{"egress", "accept", "untracked", 300},
			{"egress", "drop", "conntrack_full", 120},
			{"ingress", "drop", "malformed", 20},
		},
		RuleHits: []RuleHit{
			{"sg-web", "sg-web/ingress/0", 7},
			{"sg-web", "sg-web/ingress/2", 3},
			{"sg-db", "sg-db/egress/0", 5},
		},
		TrackedFlows:               map[string]int{"tcp": 4, "udp": 2, "icmp": 1, "other": 0},
		OffloadedFlows:             3,
		OffloadedPackets:           1234,
		ConntrackAllowanceExceeded: 2,
		Interfaces:                 []string{"eth0", "veth-sgd"},
		Missing:                    []string{"veth-sgd"},
	}
}

// snapshotSource is a Snapshot the test can change between scrapes.
type snapshotSource struct {
	mu sync.Mutex
	s  Snapshot
}

func (p *snapshotSource) get() Snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.s
}

func (p *snapshotSource) set(s Snapshot) {
	p.mu.Lock()
	p.s = s
	p.mu.Unlock()
}

// queueFile writes a fake nfnetlink_queue file and returns its path.
func queueFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "nfnetlink_queue")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Lines as the kernel prints them ("%5u %6u %5u %1u %5u %5u %5u %8u %2d").
const realQueueLines = "" +
	"    0 3221225472     0 2 65531     0     0        7  1\n" +
	"    1 2147483650    12 2 65531    40     9   123456  1\n" +
	"    3   4242     2 2 65531     0     0       99  1\n" // a queue sgd does not own

// series parses a text-format scrape into "name{a="x",b="y"}" -> value. Label pairs
// appear sorted by name, as client_golang writes them.
func series(t *testing.T, r io.Reader) map[string]string {
	t.Helper()
	out := make(map[string]string)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("scrape line %q has no value", line)
		}
		out[line[:i]] = line[i+1:]
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// scrape GETs url and returns its series.
func scrape(t *testing.T, url string) map[string]string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %s", url, resp.Status)
	}
	return series(t, resp.Body)
}
