package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mdlayher/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// followDebounce gathers the burst of rtnetlink events one change makes (a device is
// created, renamed, brought up, given addresses) into one Refresh.
const followDebounce = 100 * time.Millisecond

// FollowHost keeps the running policy in step with the host's devices until ctx is done:
// it listens to rtnetlink's link and address events and, after each burst, has Refresh
// publish the running model again. So a configured interface that does not exist yet
// (daemon.allow_missing_interfaces) is filtered from the moment it appears: sgd's
// netfilter rules name interfaces by name, so they queue its packets already, and the
// refreshed judge knows its index, its addresses and its link. A configured device that
// appears, goes or is renamed is logged. It returns an error only when it cannot listen
// at all; the caller says so and sgd runs on without following.
func (c *Controller) FollowHost(ctx context.Context) error {
	conn, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{
		Groups: unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR})
	if err != nil {
		return fmt.Errorf("rtnetlink (to follow the host's devices): %w", err)
	}
	f := &follower{c: c, byName: map[string]uint32{}, byIndex: map[uint32]device{}}
	// Seed after subscribing: a change between the two is both seen in the seed and
	// received as an event, never lost.
	f.seed()
	changed := make(chan string, 1)
	go f.receive(ctx, conn, changed)
	defer conn.Close()
	// One refresh at once: a device that appeared between the start's look at the host
	// and the subscription is taken in now.
	var why []string
	timer := time.NewTimer(0)
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case w := <-changed:
			if !slices.Contains(why, w) {
				why = append(why, w)
			}
			timer.Reset(followDebounce)
		case <-timer.C:
			reason := "start"
			if len(why) > 0 {
				reason = strings.Join(why, ", ")
			}
			if ctx.Err() == nil {
				_ = c.Refresh(ctx, reason)
			}
			why = why[:0]
		}
	}
}

// follower tracks the host's device names and indexes, to tell which events concern a
// configured interface.
type follower struct {
	c       *Controller
	byName  map[string]uint32
	byIndex map[uint32]device
}

func (f *follower) seed() {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return
	}
	defer c.Close()
	msgs, err := c.Execute(netlink.Message{Header: netlink.Header{Type: unix.RTM_GETLINK, Flags: netlink.Request | netlink.Dump},
		Data: make([]byte, unix.SizeofIfInfomsg)})
	if err != nil {
		return
	}
	for _, m := range msgs {
		if dev, err := parseLink(m.Data); err == nil && m.Header.Type == unix.RTM_NEWLINK {
			f.byName[dev.name], f.byIndex[dev.index] = dev.index, dev
		}
	}
}

// configured says whether the running policy lists the interface.
func (f *follower) configured(name string) bool {
	s := f.c.Running()
	return name != "" && s != nil && s.Policy.Interface(name) != nil
}

// receive reads events until the connection is closed, sending what changed (without
// blocking: one pending value is enough to schedule a refresh).
func (f *follower) receive(ctx context.Context, conn *netlink.Conn, changed chan<- string) {
	go func() { <-ctx.Done(); conn.Close() }()
	send := func(why string) {
		select {
		case changed <- why:
		default:
		}
	}
	for {
		msgs, err := conn.Receive()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, unix.ENOBUFS) {
				// Events were lost: look at the host afresh.
				f.c.log.Warn("rtnetlink events overran; looking at the host's devices again")
				f.byName, f.byIndex = map[string]uint32{}, map[uint32]device{}
				f.seed()
				send("events lost")
				continue
			}
			f.c.log.Error("rtnetlink: no longer following the host's devices; devices that appear from now on are filtered, but their addresses are not learnt until a reload", zap.Error(err))
			return
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.RTM_NEWLINK, unix.RTM_DELLINK:
				dev, err := parseLink(m.Data)
				if err == nil {
					if why := f.link(dev, m.Header.Type == unix.RTM_NEWLINK); why != "" {
						send(why)
					}
				}
			case unix.RTM_NEWADDR, unix.RTM_DELADDR:
				// Any address of the host counts: the judge refuses arriving packets that
				// claim one as their source, and group references match the configured
				// interfaces' own.
				send("address change")
			}
		}
	}
}

// link records a link event and returns what it changed for the policy ("" for
// nothing: a flag change, or a device sgd does not filter). A configured device that is
// enslaved (to a bridge, a bond) counts: the refresh's check then says that it is no
// longer filtered by its own name.
func (f *follower) link(dev device, up bool) string {
	log := f.c.log
	old, had := f.byIndex[dev.index]
	if !up {
		delete(f.byIndex, dev.index)
		if had && f.byName[old.name] == dev.index {
			delete(f.byName, old.name)
		}
		if f.configured(dev.name) {
			log.Warn("interface went away; sgd filters it again when it reappears", zap.String("interface", dev.name))
			return "interface " + dev.name + " gone"
		}
		return ""
	}
	var why []string
	if had && old.name != dev.name {
		delete(f.byName, old.name)
		if f.configured(old.name) {
			log.Warn("interface renamed away; sgd filters it again when a device of that name appears",
				zap.String("interface", old.name), zap.String("now", dev.name))
			why = append(why, "interface "+old.name+" renamed")
		}
	}
	appeared := !had || old.name != dev.name || f.byName[dev.name] != dev.index
	f.byName[dev.name], f.byIndex[dev.index] = dev.index, dev
	switch {
	case !f.configured(dev.name):
	case appeared:
		log.Info("interface appeared; sgd filters it", zap.String("interface", dev.name), zap.Uint32("index", dev.index))
		why = append(why, "interface "+dev.name+" appeared")
	case old.master != dev.master:
		why = append(why, "interface "+dev.name+" master changed")
	}
	return strings.Join(why, ", ")
}
