package metrics

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParseQueueStats(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    []QueueStat
		wantErr string // substring of the error; "" = no error
	}{
		{name: "empty (no queue bound)", in: ""},
		{
			name: "captured on Linux 6.18 with go-nfqueue bound to queue 7 in a netns",
			in:   "    7  24761     0 2 65531     0     0        0  1\n",
			want: []QueueStat{{Queue: 7, PortID: 24761, CopyMode: 2, CopyRange: 65531}},
		},
		{
			name: "kernel lines",
			in: "    0 3221225472     0 2 65531     0     0        7  1\n" +
				"    1 2147483650    12 2 65531    40     9   123456  1\n",
			want: []QueueStat{
				{Queue: 0, PortID: 3221225472, Waiting: 0, CopyMode: 2, CopyRange: 65531, IDSequence: 7},
				{Queue: 1, PortID: 2147483650, Waiting: 12, CopyMode: 2, CopyRange: 65531, QueueDropped: 40, UserDropped: 9, IDSequence: 123456},
			},
		},
		{
			name: "largest queue and 32-bit counters at their limit",
			in:   "65535 4294967295 1024 1 128 4294967295 4294967295 4294967295  1\n",
			want: []QueueStat{{Queue: 65535, PortID: 4294967295, Waiting: 1024, CopyMode: 1, CopyRange: 128,
				QueueDropped: 4294967295, UserDropped: 4294967295, IDSequence: 4294967295}},
		},
		{
			name: "blank lines ignored, extra columns ignored",
			in:   "\n    2 77 3 2 65531 4 5 6 1 99\n\n",
			want: []QueueStat{{Queue: 2, PortID: 77, Waiting: 3, CopyMode: 2, CopyRange: 65531, QueueDropped: 4, UserDropped: 5, IDSequence: 6}},
		},
		{
			name:    "short line skipped, the others kept",
			in:      "    0 1 2 2 65531 0\n    1 1 0 2 65531 0 0 3 1\n",
			want:    []QueueStat{{Queue: 1, PortID: 1, CopyMode: 2, CopyRange: 65531, IDSequence: 3}},
			wantErr: `line 1 "    0 1 2 2 65531 0": 6 fields; want at least 8`,
		},
		{
			name:    "non-decimal field",
			in:      "    0 1 2 2 0xff 0 0 3 1\n",
			wantErr: `line 1 "    0 1 2 2 0xff 0 0 3 1": field 5`,
		},
		{
			name:    "negative field",
			in:      "    0 -1 2 2 65531 0 0 3 1\n",
			wantErr: "field 2",
		},
		{
			name:    "queue number above 16 bits",
			in:      "65536 1 0 2 65531 0 0 3 1\n",
			wantErr: "field 1",
		},
		{
			name:    "first malformed line is the one named",
			in:      "    1 1 0 2 65531 0 0 3 1\nx\ny y y y y y y y y\n",
			want:    []QueueStat{{Queue: 1, PortID: 1, CopyMode: 2, CopyRange: 65531, IDSequence: 3}},
			wantErr: `line 2 "x"`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseQueueStats(strings.NewReader(tc.in))
			if !slices.Equal(got, tc.want) {
				t.Errorf("ParseQueueStats(%q) = %+v; want %+v", tc.in, got, tc.want)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("ParseQueueStats(%q) error = %v; want nil", tc.in, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("ParseQueueStats(%q) error = %v; want one containing %q", tc.in, err, tc.wantErr)
			}
		})
	}
}

func TestParseQueueStatsReadError(t *testing.T) {
	boom := errors.New("boom")
	_, err := ParseQueueStats(iotest.ErrReader(boom))
	if !errors.Is(err, boom) {
		t.Errorf("ParseQueueStats(failing reader) error = %v; want it to wrap %v", err, boom)
	}
}
