package election

import (
	"context"
	"errors"
	"time"

	rpctypes "go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// keepLease refreshes the lease every ttl/3 until ctx ends, and returns a channel that is closed when the
// lease is lost: etcd no longer knows it, or no refresh got through for ttl.
//
// concurrency.Session refreshes its lease over one long-lived gRPC stream, on whichever member the
// balancer picked. A member that hangs (it accepts connections and never answers) holds that stream until
// gRPC's keepalive drops the connection, which gRPC allows no sooner than 10 s plus a timeout; with a
// shorter TTL the session ends although every other member could have refreshed the lease. The balancer
// cannot be told to avoid a member either: it keeps picking the hung one in turn. So each refresh here is
// one request with a deadline, sent to one member through a client of that member alone (made from
// member, with endpoints' k-th endpoint); a member that fails is left for the next one in the list, and
// one that answers is kept. A client of its own, not a connection of the shared client's: with
// authentication, clientv3 authenticates again whenever it opens a stream, as each refresh does, and
// the shared client would send that through its balancer, to the hung member as likely as not.
func keepLease(ctx context.Context, member clientv3.Config, endpoints []string, id clientv3.LeaseID, ttl time.Duration) <-chan struct{} {
	lost := make(chan struct{})
	go func() {
		defer close(lost)
		m := &members{base: member, endpoints: endpoints, clients: make([]*clientv3.Client, len(endpoints))}
		defer m.close()
		refreshed, k := time.Now(), 0
		for {
			wait := ttl / 3
			err := m.refresh(ctx, k, id, ttl/3)
			switch {
			case err == nil:
				refreshed = time.Now()
			case errors.Is(err, rpctypes.ErrLeaseNotFound):
				return
			default:
				// The next member at once: what is left of the TTL is for members that answer.
				k, wait = (k+1)%len(endpoints), 0
			}
			if ctx.Err() != nil || time.Since(refreshed) >= ttl {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
	}()
	return lost
}

// members are clients of one endpoint each, made when first used.
type members struct {
	base      clientv3.Config
	endpoints []string
	clients   []*clientv3.Client
}

func (m *members) refresh(ctx context.Context, k int, id clientv3.LeaseID, timeout time.Duration) error {
	if m.clients[k] == nil {
		cc := m.base
		cc.Endpoints = []string{m.endpoints[k]}
		// New authenticates (when the config has a user) within the dial timeout: a hung member must not
		// hold the next refresh up for longer than one attempt.
		cc.DialTimeout = min(cc.DialTimeout, timeout)
		if cc.DialTimeout <= 0 {
			cc.DialTimeout = timeout
		}
		cc.Context = ctx
		cli, err := clientv3.New(cc)
		if err != nil {
			return err
		}
		m.clients[k] = cli
	}
	attempt, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := m.clients[k].KeepAliveOnce(attempt, id)
	return err
}

func (m *members) close() {
	for _, cli := range m.clients {
		if cli != nil {
			cli.Close()
		}
	}
}
