package daemon

import (
	"context"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
)

// notifyReady tells systemd (Type=notify) that the rules are installed and enforced.
func notifyReady(log *zap.Logger) {
	if ok, err := sd.SdNotify(false, sd.SdNotifyReady); err != nil {
		log.Warn("systemd notify", zap.Error(err))
	} else if ok {
		log.Info("told systemd: ready")
	}
}

// watchdog pings systemd's watchdog at half its interval while the daemon runs.
func watchdog(ctx context.Context) {
	every, err := sd.SdWatchdogEnabled(false)
	if err != nil || every == 0 {
		return
	}
	t := time.NewTicker(every / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			_, _ = sd.SdNotify(false, sd.SdNotifyStopping)
			return
		case <-t.C:
			_, _ = sd.SdNotify(false, sd.SdNotifyWatchdog)
		}
	}
}
