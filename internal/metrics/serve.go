package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// DefaultListen is the default --metrics-listen address: loopback only, never all
// addresses (SPEC 2.5). 9640 is sgd's port for it.
const DefaultListen = "127.0.0.1:9640"

// shutdownGrace is how long a stopping server lets in-flight scrapes finish.
const shutdownGrace = 5 * time.Second

const indexPage = `<!DOCTYPE html>
<html><head><title>sgd</title></head>
<body><h1>sgd</h1><p><a href="/metrics">Metrics</a></p></body></html>
`

// Serve listens on addr (for example DefaultListen) and serves h at /metrics, and a
// small page linking it at /, until ctx is done.
//
// It returns as soon as the socket is bound: the bind error at once, or nil with
// the server running in the background. A later failure of the server (anything but
// the shutdown caused by ctx) is passed to onErr, which may be nil; after ctx is
// done the server stops accepting and gives in-flight scrapes a few seconds.
func Serve(ctx context.Context, addr string, h http.Handler, onErr func(error)) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	go func() {
		if err := ServeListener(ctx, ln, h); err != nil && onErr != nil {
			onErr(err)
		}
	}()
	return nil
}

// ServeListener serves h at /metrics and an index page at / on ln until ctx is done,
// then shuts down gracefully and returns nil. It blocks; it returns early with the
// error if the server fails. ln is closed in every case.
func ServeListener(ctx context.Context, ln net.Listener, h http.Handler) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(indexPage))
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      scrapeTimeout + 5*time.Second,
		IdleTimeout:       time.Minute,
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		// Serve failed on its own (ctx is not done, Shutdown was not called).
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
