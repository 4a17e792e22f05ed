// Package override keeps the operator's overrides in etcd, in both DCs' etcds: the pause flag, and the
// failover requests that `topoha failover`, SIGUSR1, --force-primary and POST /failover leave for the
// leader, with the leader's answers. Every write goes to each etcd that answers, so that an override
// given while one DC is lost still holds when it returns.
package override

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
)

// putEverywhere puts key in every etcd of clients, in the order of the config's DCs, bound to a lease of
// ttl when ttl is not 0; it fails only if no etcd took it, and names in missed the DCs that did not.
func putEverywhere(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client, key, val string, ttl time.Duration) (missed []string, err error) {
	var errs []error
	for _, dc := range c.DCNames() {
		cli, ok := clients[dc]
		if !ok {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, c.RequestTimeout)
		var opts []clientv3.OpOption
		var err error
		if ttl > 0 {
			var lease *clientv3.LeaseGrantResponse
			if lease, err = cli.Grant(rctx, int64((ttl+time.Second-1)/time.Second)); err == nil {
				opts = append(opts, clientv3.WithLease(lease.ID))
			}
		}
		if err == nil {
			_, err = cli.Put(rctx, key, val, opts...)
		}
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", dc, err))
			missed = append(missed, dc)
		}
	}
	if len(errs) == len(clients) {
		return missed, fmt.Errorf("%s was written nowhere: %w", key, errors.Join(errs...))
	}
	return missed, nil
}
