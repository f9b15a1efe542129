// Package controller is the only writer of the running policy (STYLE 19): it takes desired
// state from sources (the config file today; an EC2 API store and etcd next), merges what
// they propose, validates the whole with the AWS-coded validator, compiles it, and
// publishes it to the publishers (the judge, the netfilter hooks) — or, when any step
// fails, changes nothing but a log line and a counter.
package controller

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sgd-firewall/sgd/internal/rules"
)

// Recorder is where the controller counts loads and reloads (internal/metrics).
type Recorder interface {
	SetConfigInfo(version string)
	ConfigLoaded(at time.Time)
	ReloadResult(ok bool, at time.Time)
}

// Options configure a controller.
type Options struct {
	Sources []Source
	Env     rules.Env   // what Compile reads of the host
	Log     *zap.Logger // nil: no logs
	Metrics Recorder    // nil: no metrics
}

// Reloads is the controller's account of reloads, for `sgd status`.
type Reloads struct {
	OK, Failed uint64
	Last       time.Time // of the last good one; zero before
	LastError  string    // of the last one, when it failed
}

// Controller holds the running state and the publishers it is published to. Its methods
// are safe for use by several goroutines; Start, Attach and Reload run one at a time.
type Controller struct {
	opt Options
	log *zap.Logger

	write sync.Mutex // serialises Start, Attach and Reload; guards pubs
	pubs  []Publisher

	mu      sync.Mutex // guards the fields below; held only to read or set them
	running *State
	reloads Reloads
}

// New returns a controller with nothing running: Start makes a state run.
func New(opt Options) *Controller {
	log := opt.Log
	if log == nil {
		log = zap.NewNop()
	}
	return &Controller{opt: opt, log: log}
}

// Load reads the sources and validates and compiles what they propose (the package's
// Load); it changes nothing.
func (c *Controller) Load(ctx context.Context) (*State, error) {
	return Load(ctx, c.opt.Env, c.opt.Sources...)
}

// Running returns the state in force (nil before Start).
func (c *Controller) Running() *State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running
}

// Status returns the state in force and the account of reloads so far, read together.
func (c *Controller) Status() (*State, Reloads) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running, c.reloads
}

// Start makes s (from Load) the running state: every publisher checks it, then it is
// published to each in order. These publishers, and those Attach adds, are the ones a
// reload publishes to. A publisher that must wait for something the caller does first
// (netfilter hooks wait for the queues to have readers) joins with Attach.
func (c *Controller) Start(ctx context.Context, s *State, pubs ...Publisher) error {
	c.write.Lock()
	defer c.write.Unlock()
	for _, p := range pubs {
		if err := p.Check(s.Policy); err != nil {
			return err
		}
	}
	for _, p := range pubs {
		if err := p.Publish(ctx, s.Policy); err != nil {
			return err
		}
	}
	c.pubs = append(c.pubs, pubs...)
	c.mu.Lock()
	c.running = s
	c.mu.Unlock()
	if c.opt.Metrics != nil {
		c.opt.Metrics.SetConfigInfo(s.Version)
		c.opt.Metrics.ConfigLoaded(time.Now())
	}
	return nil
}

// Attach publishes the running state to p and adds p to the publishers reloads publish
// to; it comes after Start. On error p is not added, and what p did is its own to undo.
func (c *Controller) Attach(ctx context.Context, p Publisher) error {
	c.write.Lock()
	defer c.write.Unlock()
	s := c.Running()
	if s == nil {
		return errors.New("controller: Attach before Start")
	}
	if err := p.Check(s.Policy); err != nil {
		return err
	}
	if err := p.Publish(ctx, s.Policy); err != nil {
		return err
	}
	c.pubs = append(c.pubs, p)
	return nil
}

// Reload loads the sources again and, when what they propose is good, publishes it: the
// very next packet sees it. A bad proposal, or a publisher that refuses it, changes
// nothing but a log line and a counter (SPEC 2.4): the running state stays in force, and
// publishers that had taken the new one are given the previous one back. why says what
// triggered the reload, for the log.
func (c *Controller) Reload(ctx context.Context, why string) error {
	c.write.Lock()
	defer c.write.Unlock()
	s, err := c.reloadLocked(ctx)
	now := time.Now()
	c.mu.Lock()
	if err != nil {
		c.reloads.Failed++
		c.reloads.LastError = err.Error()
	} else {
		c.reloads.OK++
		c.reloads.Last = now
		c.reloads.LastError = ""
		c.running = s
	}
	c.mu.Unlock()
	if err != nil {
		c.log.Error("reload rejected; the running rules stay in force", zap.String("trigger", why), zap.Error(err))
	} else {
		c.log.Info("reloaded", zap.String("trigger", why), zap.String("config_hash", short(s.Version)),
			zap.Strings("interfaces", s.Policy.InterfaceNames()), zap.Int("groups", len(s.Model.Groups)))
	}
	if c.opt.Metrics != nil {
		// The version first, so that any scrape begun after one that saw this reload
		// counted also sees its version (one scrape gathers its collectors concurrently:
		// no promise).
		if err == nil {
			c.opt.Metrics.SetConfigInfo(s.Version)
		}
		c.opt.Metrics.ReloadResult(err == nil, now)
	}
	return err
}

// Check loads the sources as Reload does and asks every publisher whether it would take
// the result, publishing nothing: what a source asks before it commits a change that
// Reload will then put in force (store.Source.Applier). ctx reaches the sources'
// Propose, so that a source can propose, to this check only, the change it is about to
// commit.
func (c *Controller) Check(ctx context.Context) error {
	c.write.Lock()
	defer c.write.Unlock()
	s, err := c.Load(ctx)
	if err != nil {
		return err
	}
	for _, p := range c.pubs {
		if err := p.Check(s.Policy); err != nil {
			return err
		}
	}
	return nil
}

func (c *Controller) reloadLocked(ctx context.Context) (*State, error) {
	s, err := c.Load(ctx)
	if err != nil {
		return nil, err
	}
	return s, c.publishLocked(ctx, s)
}

// publishLocked has every publisher check s, then publishes it to each in order. The
// judge comes before the hooks, so that an added interface's first packets find its
// groups, and a removed one's last packets are simply no longer filtered. If one fails,
// it and every one before it get the running state back, so that a rejected state really
// leaves everything as it was. c.write is held.
func (c *Controller) publishLocked(ctx context.Context, s *State) error {
	for _, p := range c.pubs {
		if err := p.Check(s.Policy); err != nil {
			return err
		}
	}
	prev := c.Running()
	for i, p := range c.pubs {
		if err := p.Publish(ctx, s.Policy); err != nil {
			for _, q := range c.pubs[:i+1] {
				if rerr := q.Publish(ctx, prev.Policy); rerr != nil {
					c.log.Error("restore the previous "+q.Name(), zap.Error(rerr))
				}
			}
			return err
		}
	}
	return nil
}

// Refresh compiles the running model again against the host as it is now and publishes
// it, reading no source: what a policy takes from the host — the addresses of this
// host's interfaces that group references match (rules.Env), and what the judge knows of
// the devices (filter.ReadHost: indexes, the host's addresses, link prefixes) — follows
// a device that appears, goes or changes its addresses, under the same configuration.
// It is not a reload: the version stays and no reload is counted. When compiling or a
// publisher fails, the running state stays in force, as for a reload. why says what
// changed, for the log.
func (c *Controller) Refresh(ctx context.Context, why string) error {
	c.write.Lock()
	defer c.write.Unlock()
	cur := c.Running()
	if cur == nil {
		return errors.New("controller: Refresh before Start")
	}
	pol, err := rules.Compile(cur.Model, c.opt.Env)
	if err == nil {
		s := &State{Model: cur.Model, Policy: pol, Version: cur.Version}
		if err = c.publishLocked(ctx, s); err == nil {
			c.mu.Lock()
			c.running = s
			c.mu.Unlock()
			c.log.Debug("policy re-published for the host as it is now", zap.String("trigger", why))
			return nil
		}
	}
	c.log.Error("the host changed, and the policy could not follow it; the running rules stay in force",
		zap.String("trigger", why), zap.Error(err))
	return err
}

// short is a version as logs show it: its first 12 characters.
func short(v string) string {
	if len(v) > 12 {
		return v[:12]
	}
	return v
}
