package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/sgd-firewall/sgd/internal/filter"
	"github.com/sgd-firewall/sgd/internal/settings"
)

// Status is what `sgd status` prints, served as JSON on the daemon's root-only socket.
type Status struct {
	// Audit is audit mode: nothing is dropped (would-be drops count as verdict would_drop).
	Audit        bool           `json:"audit"`
	Version      string         `json:"version"`
	PID          int            `json:"pid"`
	Started      time.Time      `json:"started"`
	ConfigFile   string         `json:"config_file"`
	ConfigHash   string         `json:"config_hash"`
	LastReload   *time.Time     `json:"last_reload,omitempty"`
	ReloadsOK    uint64         `json:"reloads_ok"`
	ReloadsBad   uint64         `json:"reloads_failed"`
	LastError    string         `json:"last_reload_error,omitempty"`
	Interfaces   []IfaceStatus  `json:"interfaces"`
	Ports        []PortStatus   `json:"ports,omitempty"`
	Groups       []GroupStatus  `json:"groups"`
	TrackedFlows map[string]int `json:"tracked_flows"`
	Capacity     int            `json:"max_tracked_connections"`
	// Offloaded is how many of the tracked flows the kernel carries (the fast path, SPEC
	// 4.7); they count in TrackedFlows too.
	Offloaded int `json:"offloaded_flows"`
	// Adopted counts, per interface, the established TCP connections adopted at start
	// (nil when adopt_established is off).
	Adopted  map[string]int    `json:"adopted_at_start,omitempty"`
	Packets  map[string]uint64 `json:"packets"` // "ingress/accept/tracked" → count
	Settings settings.Daemon   `json:"settings"`
	// Store is fleet mode's etcd: connected or not, and the revision in force (nil
	// outside fleet mode).
	Store *StoreStatus `json:"store,omitempty"`
}

// IfaceStatus is one filtered interface.
type IfaceStatus struct {
	Name   string   `json:"name"`
	Groups []string `json:"groups"`
	// Missing: this host has no device of that name (yet); sgd filters it once it appears.
	Missing bool `json:"missing,omitempty"`
}

// PortStatus is one instance's port (SPEC 4.3).
type PortStatus struct {
	Name               string   `json:"name"`
	InstanceID         string   `json:"instance_id,omitempty"`
	NetworkInterfaceID string   `json:"network_interface_id"`
	Addresses          []string `json:"addresses"`
	Groups             []string `json:"groups"`
	SourceDestCheck    bool     `json:"source_dest_check"`
	Missing            bool     `json:"missing,omitempty"`
}

// GroupStatus is one group in force.
type GroupStatus struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Ingress int    `json:"ingress_rules"`
	Egress  int    `json:"egress_rules"`
}

func (d *Daemon) status() Status {
	running, reloads := d.ctl.Status()
	m := running.Model
	s := Status{Audit: d.set.Audit, Adopted: d.adopted, Version: d.opt.Version, PID: os.Getpid(), Started: d.start, ConfigFile: d.opt.ConfigPath, ConfigHash: running.Version,
		ReloadsOK: reloads.OK, ReloadsBad: reloads.Failed, LastError: reloads.LastError, Settings: d.set, Capacity: d.set.MaxTracked}
	if d.fleet != nil {
		s.Store = d.fleet.status()
	}
	if !reloads.Last.IsZero() {
		t := reloads.Last
		s.LastReload = &t
	}
	missing := d.missingInterfaces()
	for _, itf := range m.Interfaces {
		s.Interfaces = append(s.Interfaces, IfaceStatus{Name: itf.Name, Groups: itf.Groups, Missing: slices.Contains(missing, itf.Name)})
	}
	for _, pt := range m.Ports {
		ps := PortStatus{Name: pt.Name, InstanceID: pt.InstanceID, NetworkInterfaceID: pt.ENI, Groups: pt.Groups,
			SourceDestCheck: pt.SourceDestCheck, Missing: slices.Contains(missing, pt.Name), Addresses: []string{}}
		for _, a := range pt.Addrs {
			ps.Addresses = append(ps.Addresses, a.String())
		}
		s.Ports = append(s.Ports, ps)
	}
	for _, g := range m.Groups {
		s.Groups = append(s.Groups, GroupStatus{ID: g.ID, Name: g.Name, Ingress: len(g.Ingress), Egress: len(g.Egress)})
	}
	tcp, udp, icmp, other := d.table.CountByProto()
	s.TrackedFlows = map[string]int{"tcp": tcp, "udp": udp, "icmp": icmp, "other": other}
	s.Offloaded = d.table.Offloaded()
	d.readOffloaded()
	pk, _ := d.engine.Counters()
	s.Packets = map[string]uint64{}
	for dir := range 2 {
		for r := range filter.NumReasons {
			if n := pk[dir][r]; n > 0 {
				reason := filter.Reason(r)
				s.Packets[fmt.Sprintf("%s/%s/%s", filter.Dir(dir), d.verdict(reason), reason)] = n
			}
		}
	}
	return s
}

// serveStatus serves GET /status on a unix socket only root can reach (0600 in a 0700
// directory).
func (d *Daemon) serveStatus(ctx context.Context, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	_ = os.Remove(path) // a stale socket of a crashed daemon
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(d.status())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
		_ = os.Remove(path)
	}()
	return nil
}

// FetchStatus asks the daemon listening on the socket for its status.
func FetchStatus(ctx context.Context, socket string) (*Status, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", socket)
	}}, Timeout: 5 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://sgd/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("permission denied on %s: the status socket is root-only; run sgd status as root", socket)
		}
		return nil, fmt.Errorf("%w (socket %s: %v)", errNoDaemon, socket, err)
	}
	defer resp.Body.Close()
	var s Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, fmt.Errorf("status from %s: %w", socket, err)
	}
	return &s, nil
}

// SortedPackets lists the packet counters in a stable order for printing.
func (s *Status) SortedPackets() []string {
	keys := make([]string, 0, len(s.Packets))
	for k := range s.Packets {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
