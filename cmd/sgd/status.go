package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/sgd-firewall/sgd/internal/daemon"
	"github.com/sgd-firewall/sgd/internal/settings"
)

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("status", "[--socket PATH] [--json]",
		`Ask the running daemon what it enforces: interfaces and their groups, the config hash,
reloads, tracked flows and packet counters. Exit 0 when a daemon answers, 1 when none
runs (or the socket is not reachable: it is root-only).`, stderr)
	socket := fs.String("socket", settings.DefaultStatusSocket, "status socket `path`")
	asJSON := fs.Bool("json", false, "print the raw JSON")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	s, err := daemon.FetchStatus(context.Background(), *socket)
	if err != nil {
		fmt.Fprintln(stderr, "sgd status:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s)
		return 0
	}
	printStatus(stdout, s)
	return 0
}

// printStatus writes the status as `sgd status` shows it: audit mode first, so that
// nobody takes an auditing sgd for an enforcing one.
func printStatus(stdout io.Writer, s *daemon.Status) {
	w := func(format string, a ...any) { fmt.Fprintf(stdout, format, a...) }
	if s.Audit {
		w("AUDIT MODE: nothing is dropped; packets the rules deny pass and are counted as would_drop\n")
	}
	w("sgd %s, pid %d, running since %s\n", s.Version, s.PID, s.Started.Format("2006-01-02 15:04:05 MST"))
	w("config:   %s (sha256 %s)\n", s.ConfigFile, short(s.ConfigHash))
	w("reloads:  %d ok, %d failed", s.ReloadsOK, s.ReloadsBad)
	if s.LastReload != nil {
		w(", last good %s", s.LastReload.Format("15:04:05"))
	}
	w("\n")
	if s.LastError != "" {
		w("last reload error: %s\n", strings.ReplaceAll(s.LastError, "\n", "\n  "))
	}
	w("queues:   %d–%d, fail %s, fast path %s\n", s.Settings.QueueNum, s.Settings.QueueNum+s.Settings.QueueCount-1,
		map[bool]string{true: "open", false: "closed"}[s.Settings.FailOpen],
		map[bool]string{true: "on (the kernel carries tracked flows)", false: "off (every packet judged in sgd)"}[s.Settings.FastPath])
	if st := s.Store; st != nil {
		state := "connected"
		if !st.Connected {
			state = "DISCONNECTED: keeping the last applied state until etcd returns"
		}
		w("store:    etcd %s, %s, applied revision %d\n", st.Endpoints, state, st.AppliedRevision)
		seen := st.Members
		if len(seen) > maxHostsShown {
			seen = append(slices.Clone(seen[:maxHostsShown]), fmt.Sprintf("… %d more", len(st.Members)-maxHostsShown))
		}
		w("fleet:    host %s, %s; %d %s seen (%s)\n", st.HostID, leaseSummary(st), len(st.Members),
			map[bool]string{true: "host", false: "hosts"}[len(st.Members) == 1], strings.Join(seen, ", "))
	}
	if s.Settings.AdoptEstablished {
		w("adopted:  %s at start\n", adoptedSummary(s.Adopted))
	} else {
		w("adopted:  none (adopt_established: false)\n")
	}
	w("\ninterfaces:\n")
	for _, i := range s.Interfaces {
		w("  %-15s %s", i.Name, strings.Join(i.Groups, ", "))
		if i.Missing {
			w("  (MISSING: no such device here; filtered once it appears)")
		}
		w("\n")
	}
	if len(s.Ports) > 0 {
		w("\nports:\n")
	}
	for _, pt := range s.Ports {
		inst := pt.InstanceID
		if inst == "" {
			inst = "-"
		}
		w("  %-15s %-12s %-21s %s  groups %s", pt.Name, inst, pt.NetworkInterfaceID, strings.Join(pt.Addresses, " "), strings.Join(pt.Groups, ", "))
		if !pt.SourceDestCheck {
			w("  (source/dest check off)")
		}
		if pt.Missing {
			w("  (MISSING: no such device here; filtered once it appears)")
		}
		w("\n")
	}
	w("\ngroups:\n")
	for _, g := range s.Groups {
		w("  %-20s %-24s %3d ingress, %3d egress rules\n", g.ID, g.Name, g.Ingress, g.Egress)
	}
	w("\ntracked flows: tcp %d, udp %d, icmp %d, other %d (max %d); %d offloaded to the kernel\n",
		s.TrackedFlows["tcp"], s.TrackedFlows["udp"], s.TrackedFlows["icmp"], s.TrackedFlows["other"], s.Capacity, s.Offloaded)
	w("\npackets (direction/verdict/reason):\n")
	for _, k := range s.SortedPackets() {
		w("  %-36s %d\n", k, s.Packets[k])
	}
}

// maxHostsShown is how many of the fleet's hosts `sgd status` names (--json lists all).
const maxHostsShown = 10

// leaseSummary says where this host's membership stands, in words.
func leaseSummary(st *daemon.StoreStatus) string {
	switch st.Lease {
	case "held":
		return fmt.Sprintf("member (lease held, ttl %d s)", st.LeaseTTL)
	case "waiting":
		return "JOINING: waiting for an earlier lease of this host id to expire"
	case "lost":
		return "NOT A MEMBER: lease lost (etcd cut off for longer than member_ttl); joining again when etcd answers"
	case "duplicate":
		return "NOT A MEMBER: another live host has this host id (daemon.etcd.host_id)"
	case "none":
		return "NOT A MEMBER yet: joining when etcd answers"
	}
	return "lease " + st.Lease
}

// adoptedSummary is "3 established TCP connections (eth0 2, eth1 1)".
func adoptedSummary(by map[string]int) string {
	total := 0
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(by)) {
		total += by[name]
		parts = append(parts, fmt.Sprintf("%s %d", name, by[name]))
	}
	noun := "connections"
	if total == 1 {
		noun = "connection"
	}
	if total == 0 {
		return "no established TCP connections"
	}
	return fmt.Sprintf("%d established TCP %s (%s)", total, noun, strings.Join(parts, ", "))
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
