package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/sgd-firewall/sgd/internal/ec2api"
	"github.com/sgd-firewall/sgd/internal/rules"
	"github.com/sgd-firewall/sgd/internal/settings"
	"github.com/sgd-firewall/sgd/internal/store"
)

// api is the EC2 Query API's state while it runs (SPEC 4.4): its store, which is one of the
// controller's sources, and the keys requests are signed with. The store is state_dir's,
// or in fleet mode etcd's (then dir is nil: the fleet owns it).
type api struct {
	dir   *store.Dir
	src   *store.Source
	creds ec2api.Credentials
}

// openAPI opens the API's store and reads its keys, before anything is touched: the store
// is a source of the policy sgd starts with. fl, when not nil, is fleet mode: the API
// serves the fleet's source instead of a state directory's.
func openAPI(ctx context.Context, set settings.Daemon, fl *fleet) (*api, error) {
	if set.APICredentialsFile == "" {
		return nil, errors.New("api_listen is set but daemon.api_credentials_file is not: every API request must be signed by a key from that file (the AWS shared-credentials format)")
	}
	creds, err := ec2api.LoadCredentials(set.APICredentialsFile)
	if err != nil {
		return nil, fmt.Errorf("daemon.api_credentials_file: %w", err)
	}
	if fl != nil {
		return &api{src: fl.src, creds: creds}, nil
	}
	dir, err := store.OpenDir(set.StateDir)
	if err != nil {
		return nil, fmt.Errorf("state directory %s: %w", set.StateDir, err)
	}
	src, err := store.NewSource(ctx, dir)
	if err != nil {
		dir.Close()
		return nil, fmt.Errorf("state directory %s: %w", set.StateDir, err)
	}
	return &api{dir: dir, src: src, creds: creds}, nil
}

// close releases the API's own store (none in fleet mode).
func (a *api) close() {
	if a.dir != nil {
		a.dir.Close()
	}
}

// serveAPI binds the API's address and serves it until ctx is done. Every change it takes
// goes through the controller (store.Source.Applier): validated with the file, published,
// then stored.
func (d *Daemon) serveAPI(ctx context.Context, a *api) error {
	opt := ec2api.Options{Store: a.src, Apply: a.src.Applier(d.ctl), Credentials: a.creds, OwnerID: d.set.AccountID, Log: d.log,
		Running: func() *rules.Model {
			if s := d.ctl.Running(); s != nil {
				return s.Model
			}
			return nil
		}}
	if f := d.fleet; f != nil {
		// Every host's interfaces, each ENI its host's own.
		opt.HostID, opt.Members = f.host, func() []store.Member { return f.members.View().Hosts }
	}
	if d.metrics != nil {
		m, err := ec2api.NewMetrics(d.metrics.Registry())
		if err != nil {
			return err
		}
		opt.Metrics = m
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", d.set.APIListen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: ec2api.New(opt), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 64 << 10}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("EC2 API server stopped", zap.Error(err))
		}
	}()
	return nil
}
