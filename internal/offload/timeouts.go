package offload

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"

	"github.com/sgd-firewall/sgd/internal/ipproto"
)

// Timeouts are the connection_tracking timeouts of an interface or port that the kernel
// applies to the flows it tracks for it, in seconds: TCPEstablished for an established
// TCP connection (the other TCP states keep the namespace's defaults), UDP for a UDP flow
// before it counts as a stream, UDPStream after.
//
// The kernel's UDP rule (nf_conntrack_proto_udp.c, measured here on Linux 6.18): a UDP
// entry gets UDP after every packet until a packet comes in either direction more than
// 2 s after the entry was created with a reply already seen; from then on it gets
// UDPStream. So a single request and its reply, or a burst within 2 s, stay on UDP.
type Timeouts struct {
	TCPEstablished, UDP, UDPStream uint32
}

// maxTimeout keeps a timeout in jiffies within the kernel's 32 bits at HZ=1000.
const maxTimeout = 1<<32/1000 - 1

// policyPrefix starts the name of every kernel object sgd creates; Prune never touches
// any other.
const policyPrefix = "sgd-"

// Names returns the names of t's TCP and UDP policies: "sgd-tcp-EST" and
// "sgd-udp-UNREPLIED-STREAM" (seconds), so that equal timeouts share objects. Each name
// is held in the kernel by one object per family: PolicyName.
func (t Timeouts) Names() (tcp, udp string) {
	return fmt.Sprintf("%stcp-%d", policyPrefix, t.TCPEstablished), fmt.Sprintf("%sudp-%d-%d", policyPrefix, t.UDP, t.UDPStream)
}

// Validate reports a timeout of 0 (the kernel would expire the flow at once) or one too
// large for the kernel's clock.
func (t Timeouts) Validate() error {
	for _, v := range [...]struct {
		name string
		s    uint32
	}{{"tcp_established", t.TCPEstablished}, {"udp", t.UDP}, {"udp_stream", t.UDPStream}} {
		if v.s == 0 || v.s > maxTimeout {
			return fmt.Errorf("offload: %s timeout %d s: want 1..%d", v.name, v.s, maxTimeout)
		}
	}
	return nil
}

// PolicyName is the name of the kernel object that holds policy name for one address
// family: name + "-ipv4" or "-ipv6". The kernel keys policies by name alone but lets the
// CT target use a policy only for the family it was created for, so each family has its
// own (iptables uses the first, ip6tables the second).
func PolicyName(name string, ipv6 bool) string {
	if ipv6 {
		return name + "-ipv6"
	}
	return name + "-ipv4"
}

// nfnetlink_cttimeout (include/uapi/linux/netfilter/nfnetlink_cttimeout.h).
const (
	msgTimeoutNew    = 0 // IPCTNL_MSG_TIMEOUT_NEW
	msgTimeoutGet    = 1 // IPCTNL_MSG_TIMEOUT_GET
	msgTimeoutDelete = 2 // IPCTNL_MSG_TIMEOUT_DELETE

	attrTimeoutName    = 1 // CTA_TIMEOUT_NAME, NUL-terminated, at most 31 bytes
	attrTimeoutL3Proto = 2 // CTA_TIMEOUT_L3PROTO, be16
	attrTimeoutL4Proto = 3 // CTA_TIMEOUT_L4PROTO, u8
	attrTimeoutData    = 4 // CTA_TIMEOUT_DATA, nested per protocol, be32 seconds
	attrTimeoutUse     = 5 // CTA_TIMEOUT_USE, be32 reference count

	attrTCPEstablished = 3 // CTA_TIMEOUT_TCP_ESTABLISHED
	attrUDPUnreplied   = 1 // CTA_TIMEOUT_UDP_UNREPLIED
	attrUDPReplied     = 2 // CTA_TIMEOUT_UDP_REPLIED

	nameMax = 31 // CTNL_TIMEOUT_NAME_MAX - 1
)

// object is one cttimeout object: its name, family, protocol and the values sgd sets.
type object struct {
	name    string
	l3      uint16 // unix.AF_INET or AF_INET6
	l4      uint8
	values  map[uint16]uint32 // CTA_TIMEOUT_DATA attribute → seconds
	use     uint32            // references (rules) the kernel reports, in a listing
	decoded bool              // values came from the kernel
}

// objects returns the four objects of t: TCP and UDP, for IPv4 and IPv6.
func (t Timeouts) objects() []object {
	tcp, udp := t.Names()
	var objs []object
	for _, v6 := range [...]bool{false, true} {
		l3 := uint16(unix.AF_INET)
		if v6 {
			l3 = unix.AF_INET6
		}
		objs = append(objs,
			object{name: PolicyName(tcp, v6), l3: l3, l4: ipproto.TCP, values: map[uint16]uint32{attrTCPEstablished: t.TCPEstablished}},
			object{name: PolicyName(udp, v6), l3: l3, l4: ipproto.UDP, values: map[uint16]uint32{attrUDPUnreplied: t.UDP, attrUDPReplied: t.UDPStream}})
	}
	return objs
}

// same reports whether the kernel's object k is o: same family, protocol and the values
// sgd sets (the others are the namespace's defaults, copied when it was created).
func (o object) same(k object) bool {
	if o.l3 != k.l3 || o.l4 != k.l4 {
		return false
	}
	for a, v := range o.values {
		if k.values[a] != v {
			return false
		}
	}
	return true
}

// Ensure creates the kernel objects of every policy in ts that are missing, in the
// namespace of the calling thread, and replaces (in place: rules and entries that use it
// keep it) one whose values differ. It is idempotent. An object of the right name but of
// another family or protocol (not sgd's making) is an error. Call it before applying
// rules that name the policies: the CT target refuses a policy that does not exist.
func Ensure(ctx context.Context, ts []Timeouts) error {
	for _, t := range ts {
		if err := t.Validate(); err != nil {
			return err
		}
	}
	return withObjects(ctx, func(c *netfilter.Conn, have map[string]object) error {
		return ensure(ctx, c, have, ts)
	})
}

func ensure(ctx context.Context, c *netfilter.Conn, have map[string]object, ts []Timeouts) error {
	var errs []error
	for _, t := range ts {
		for _, o := range t.objects() {
			k, ok := have[o.name]
			switch {
			case ok && o.same(k):
				continue
			case ok && (k.l3 != o.l3 || k.l4 != o.l4):
				errs = append(errs, fmt.Errorf("offload: timeout policy %s exists for family %d protocol %d, not %d/%d: delete it", o.name, k.l3, k.l4, o.l3, o.l4))
				continue
			}
			if err := newObject(ctx, c, o); err != nil {
				errs = append(errs, err)
				continue
			}
			have[o.name] = o
		}
	}
	return errors.Join(errs...)
}

// Prune deletes sgd's kernel objects (named sgd-*) that belong to no policy in keep, in
// the namespace of the calling thread. One still named by a rule cannot be deleted
// (EBUSY): it is left for a later Prune, without error. A deleted policy's entries fall
// back to the namespace's default timeouts, so prune after the rules that used it are
// gone and its offloaded flows have been dealt with.
func Prune(ctx context.Context, keep []Timeouts) error {
	return withObjects(ctx, func(c *netfilter.Conn, have map[string]object) error {
		return prune(ctx, c, have, keep)
	})
}

func prune(ctx context.Context, c *netfilter.Conn, have map[string]object, keep []Timeouts) error {
	wanted := map[string]bool{}
	for _, t := range keep {
		for _, o := range t.objects() {
			wanted[o.name] = true
		}
	}
	var errs []error
	for name := range have {
		if !strings.HasPrefix(name, policyPrefix) || wanted[name] {
			continue
		}
		err := deleteObject(ctx, c, name)
		if err != nil && !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Policies lists the names of sgd's kernel objects (sgd-*) in the namespace of the
// calling thread, with the number of rules that name each.
func Policies(ctx context.Context) (map[string]uint32, error) {
	out := map[string]uint32{}
	err := withObjects(ctx, func(_ *netfilter.Conn, have map[string]object) error {
		for name, o := range have {
			if strings.HasPrefix(name, policyPrefix) {
				out[name] = o.use
			}
		}
		return nil
	})
	return out, err
}

// withObjects opens a netfilter socket in the calling thread's namespace and calls fn
// with it and the kernel's timeout objects by name.
func withObjects(ctx context.Context, fn func(c *netfilter.Conn, have map[string]object) error) error {
	c, err := netfilter.Dial(nil)
	if err != nil {
		return fmt.Errorf("offload: open netfilter netlink socket: %w", err)
	}
	defer c.Close()
	have, err := listObjects(ctx, c)
	if err != nil {
		return err
	}
	return fn(c, have)
}

// query sends one cttimeout request and returns the replies, within ctx's deadline.
func query(ctx context.Context, c *netfilter.Conn, typ netfilter.MessageType, flags netlink.HeaderFlags, ae *netlink.AttributeEncoder) ([]netlink.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		if err := c.SetDeadline(d); err != nil {
			return nil, err
		}
	}
	if ae == nil {
		ae = netfilter.NewAttributeEncoder()
	}
	req, err := netfilter.EncodeNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysCTNetlinkTimeout,
		MessageType: typ,
		Family:      netfilter.ProtoUnspec,
		Flags:       netlink.Request | flags,
	}, ae)
	if err != nil {
		return nil, err
	}
	return c.Query(req)
}

func listObjects(ctx context.Context, c *netfilter.Conn) (map[string]object, error) {
	msgs, err := query(ctx, c, msgTimeoutGet, netlink.Dump, nil)
	if err != nil {
		return nil, fmt.Errorf("offload: list timeout policies: %w", err)
	}
	out := make(map[string]object, len(msgs))
	for _, m := range msgs {
		o, err := decodeObject(m)
		if err != nil {
			return nil, fmt.Errorf("offload: list timeout policies: %w", err)
		}
		out[o.name] = o
	}
	return out, nil
}

func decodeObject(m netlink.Message) (object, error) {
	_, ad, err := netfilter.DecodeNetlink(m)
	if err != nil {
		return object{}, err
	}
	o := object{values: map[uint16]uint32{}, decoded: true}
	for ad.Next() {
		switch ad.Type() {
		case attrTimeoutName:
			o.name = ad.String()
		case attrTimeoutL3Proto:
			o.l3 = ad.Uint16()
		case attrTimeoutL4Proto:
			o.l4 = ad.Uint8()
		case attrTimeoutUse:
			o.use = ad.Uint32()
		case attrTimeoutData:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					o.values[nad.Type()] = nad.Uint32()
				}
				return nil
			})
		}
	}
	return o, ad.Err()
}

func newObject(ctx context.Context, c *netfilter.Conn, o object) error {
	if len(o.name) > nameMax {
		return fmt.Errorf("offload: timeout policy name %q longer than %d bytes", o.name, nameMax)
	}
	ae := netfilter.NewAttributeEncoder()
	ae.String(attrTimeoutName, o.name)
	ae.Uint16(attrTimeoutL3Proto, o.l3)
	ae.Uint8(attrTimeoutL4Proto, o.l4)
	ae.Nested(attrTimeoutData, func(nae *netlink.AttributeEncoder) error {
		for a, v := range o.values {
			nae.Uint32(a, v)
		}
		return nil
	})
	// Create, or replace the values of an existing object of that name in place.
	if _, err := query(ctx, c, msgTimeoutNew, netlink.Acknowledge|netlink.Create|netlink.Replace, ae); err != nil {
		return fmt.Errorf("offload: create timeout policy %s: %w", o.name, err)
	}
	return nil
}

func deleteObject(ctx context.Context, c *netfilter.Conn, name string) error {
	ae := netfilter.NewAttributeEncoder()
	ae.String(attrTimeoutName, name)
	if _, err := query(ctx, c, msgTimeoutDelete, netlink.Acknowledge, ae); err != nil {
		return fmt.Errorf("offload: delete timeout policy %s: %w", name, err)
	}
	return nil
}

// SysctlDir is where the namespace's conntrack sysctls live.
const SysctlDir = "/proc/sys/net/netfilter"

// KernelDefaults reads the timeouts the kernel gives flows created without an sgd policy
// (a device sgd has no policy for, or entries older than sgd's rules), in the namespace
// of the calling thread.
func KernelDefaults() (Timeouts, error) {
	var t Timeouts
	for _, v := range [...]struct {
		name string
		dst  *uint32
	}{
		{"nf_conntrack_tcp_timeout_established", &t.TCPEstablished},
		{"nf_conntrack_udp_timeout", &t.UDP},
		{"nf_conntrack_udp_timeout_stream", &t.UDPStream},
	} {
		s, err := readSysctl(SysctlDir, v.name)
		if err != nil {
			return Timeouts{}, err
		}
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return Timeouts{}, fmt.Errorf("offload: %s = %q: %w", v.name, s, err)
		}
		*v.dst = uint32(n)
	}
	return t, nil
}

func readSysctl(dir, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return "", fmt.Errorf("offload: read %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}
