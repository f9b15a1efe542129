package daemon

import (
	"fmt"
	"strings"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// NewLogger builds the daemon's logger: JSON (default) or console, at the given level.
func NewLogger(level, format string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(strings.ToLower(level))
	if err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	var cfg zap.Config
	switch format {
	case "console":
		cfg = zap.NewDevelopmentConfig()
		cfg.DisableStacktrace = true
	case "json", "":
		cfg = zap.NewProductionConfig()
		cfg.EncoderConfig.TimeKey = "time"
		cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
		cfg.Sampling = nil           // lifecycle events are rare; denied packets have their own limiter
		cfg.DisableStacktrace = true // an error line says what failed; a Go stack says nothing to an operator
	default:
		return nil, fmt.Errorf("log format %q is not json or console", format)
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.OutputPaths = []string{"stderr"}
	cfg.ErrorOutputPaths = []string{"stderr"}
	return cfg.Build()
}

// limiter is a token bucket refilled once per second; one per queue reader, so no lock.
// A zero rate allows nothing.
type limiter struct {
	rate       int64
	tokens     int64
	lastSecond int64
	suppressed atomic.Uint64
}

func (l *limiter) allow(nowSec int64) bool {
	if nowSec != l.lastSecond {
		l.lastSecond, l.tokens = nowSec, l.rate
	}
	if l.tokens > 0 {
		l.tokens--
		return true
	}
	l.suppressed.Add(1)
	return false
}
