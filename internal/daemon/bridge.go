package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/sgd-firewall/sgd/internal/netfilter"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// bridgeCalls is the publisher that makes bridged ports' traffic reach sgd's FORWARD
// chain (SPEC 4.3): when the policy has ports, it turns on br_netfilter's iptables calls
// in sgd's network namespace and logs that it did; restore puts back what it found, at a
// clean stop. It comes before the netfilter hooks, so that no bridged packet passes a
// hooked port unjudged. Without br_netfilter (no /proc/sys/net/bridge), a policy with a
// port enslaved to a bridge is refused: its traffic would pass unfiltered. Routed ports
// need nothing of br_netfilter.
type bridgeCalls struct {
	log *zap.Logger
	br  netfilter.Bridge
	// sysfs is /sys/class/net, where a bridge port has a brport directory.
	sysfs string
}

func (b *bridgeCalls) Name() string { return "br_netfilter" }

func (b *bridgeCalls) Check(p *rules.Policy) error {
	if len(p.PortNames()) == 0 || b.br.Loaded() {
		return nil
	}
	for _, name := range p.PortNames() {
		if _, err := os.Stat(filepath.Join(b.sysfs, name, "brport")); err == nil {
			return fmt.Errorf("port %s is a bridge port and %w", name, netfilter.ErrNoBridgeNetfilter)
		}
	}
	return nil
}

func (b *bridgeCalls) Publish(_ context.Context, p *rules.Policy) error {
	if len(p.PortNames()) == 0 {
		return nil
	}
	changed, err := b.br.Enable()
	switch {
	case errors.Is(err, netfilter.ErrNoBridgeNetfilter):
		return nil // Check let it through: no port is on a bridge
	case err != nil:
		return err
	case len(changed) > 0:
		b.log.Info("turned on br_netfilter's iptables calls in this network namespace, so that bridged ports reach sgd; the previous values come back at a clean stop",
			zap.Strings("changed", changed))
	}
	return nil
}

// restore puts back the switches Enable changed.
func (b *bridgeCalls) restore() {
	if err := b.br.Restore(); err != nil {
		b.log.Error("restore br_netfilter's switches", zap.Error(err))
	}
}
