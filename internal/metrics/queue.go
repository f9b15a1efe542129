package metrics

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// QueueStat is one line of /proc/net/netfilter/nfnetlink_queue: the kernel side of
// one NFQUEUE queue. The kernel keeps these as 32-bit counters, so QueueDropped,
// UserDropped and IDSequence wrap at 2^32 (Prometheus reads a wrap as a reset).
type QueueStat struct {
	Queue  uint16 // queue number
	PortID uint32 // netlink port id of the listening socket
	// Waiting is the number of packets queued to user space and not yet given a verdict.
	Waiting uint64
	// CopyMode (0 none, 1 meta, 2 packet) and CopyRange are what the listener asked for.
	CopyMode, CopyRange uint64
	// QueueDropped counts packets the kernel dropped because the queue was full
	// (queue_maxlen reached) and fail-open was not set.
	QueueDropped uint64
	// UserDropped counts packets the kernel could not deliver because the netlink
	// socket's receive buffer was full (socket overrun).
	UserDropped uint64
	// IDSequence is the packet id last assigned on this queue.
	IDSequence uint64
}

// queueFields is how many leading fields a line must have. The kernel prints
//
//	queue_number peer_portid queue_total copy_mode copy_range queue_dropped user_dropped id_sequence 1
//
// (net/netfilter/nfnetlink_queue.c, seq_show); the trailing constant 1 is ignored.
const queueFields = 8

// ParseQueueStats parses the lines of /proc/net/netfilter/nfnetlink_queue.
//
// Malformed lines are skipped, never guessed at: it returns the stats of every
// well-formed line and, when some line was malformed (fewer than eight fields, a
// field that is not a decimal number, or a queue number above 65535), an error that
// quotes the first such line and gives its number. Blank lines are ignored, as are
// fields after the eighth (the kernel's constant 1, or a column a later kernel may
// add). A read error is returned as is, with the stats parsed before it.
func ParseQueueStats(r io.Reader) ([]QueueStat, error) {
	var (
		stats    []QueueStat
		firstBad error
		n        int
	)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		n++
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		st, err := parseQueueLine(f)
		if err != nil {
			if firstBad == nil {
				firstBad = fmt.Errorf("nfnetlink_queue line %d %q: %w", n, line, err)
			}
			continue
		}
		stats = append(stats, st)
	}
	if err := sc.Err(); err != nil {
		return stats, fmt.Errorf("reading nfnetlink_queue: %w", err)
	}
	return stats, firstBad
}

func parseQueueLine(f []string) (QueueStat, error) {
	if len(f) < queueFields {
		return QueueStat{}, fmt.Errorf("%d fields; want at least %d", len(f), queueFields)
	}
	var v [queueFields]uint64
	for i := range v {
		bits := 64
		switch i {
		case 0:
			bits = 16 // queue numbers are 16 bits (NFQUEUE --queue-num)
		case 1:
			bits = 32 // netlink port ids are 32 bits
		}
		x, err := strconv.ParseUint(f[i], 10, bits)
		if err != nil {
			return QueueStat{}, fmt.Errorf("field %d: %w", i+1, err)
		}
		v[i] = x
	}
	return QueueStat{
		Queue:        uint16(v[0]),
		PortID:       uint32(v[1]),
		Waiting:      v[2],
		CopyMode:     v[3],
		CopyRange:    v[4],
		QueueDropped: v[5],
		UserDropped:  v[6],
		IDSequence:   v[7],
	}, nil
}

// queueCollector reads the statistics file at each scrape and reports the queues
// sgd owns. A missing or unreadable file (module not loaded, no queue bound yet)
// makes the queue series absent; it never fails the scrape.
type queueCollector struct {
	path string
	own  map[uint16]bool

	dropped, userDropped, waiting *prometheus.Desc
}

func newQueueCollector(path string, queues []uint16) *queueCollector {
	own := make(map[uint16]bool, len(queues))
	for _, q := range queues {
		own[q] = true
	}
	l := []string{"queue"}
	return &queueCollector{
		path: path,
		own:  own,
		dropped: prometheus.NewDesc("sgd_queue_dropped_total",
			"Packets the kernel dropped because sgd's NFQUEUE queue was full (nfnetlink_queue queue_dropped).", l, nil),
		userDropped: prometheus.NewDesc("sgd_queue_user_dropped_total",
			"Packets the kernel failed to deliver to sgd because the netlink socket buffer overran (nfnetlink_queue user_dropped).", l, nil),
		waiting: prometheus.NewDesc("sgd_queue_waiting",
			"Packets queued to sgd that are waiting for a verdict (nfnetlink_queue queue_total).", l, nil),
	}
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.dropped
	ch <- c.userDropped
	ch <- c.waiting
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	if len(c.own) == 0 {
		return
	}
	f, err := os.Open(c.path)
	if err != nil {
		return
	}
	defer f.Close()
	// Malformed lines are skipped by ParseQueueStats; the good ones still count.
	stats, _ := ParseQueueStats(f)
	seen := make(map[uint16]bool, len(stats))
	for _, s := range stats {
		if !c.own[s.Queue] || seen[s.Queue] {
			continue
		}
		seen[s.Queue] = true
		q := strconv.FormatUint(uint64(s.Queue), 10)
		ch <- constMetric(c.dropped, prometheus.CounterValue, float64(s.QueueDropped), q)
		ch <- constMetric(c.userDropped, prometheus.CounterValue, float64(s.UserDropped), q)
		ch <- constMetric(c.waiting, prometheus.GaugeValue, float64(s.Waiting), q)
	}
}
