package election

import (
	"context"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	rpctypes "go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// keepLease refreshes the lease every ttl/3 until ctx ends, and returns a channel that is closed when the
// lease is lost: etcd no longer knows it, or no refresh got through for ttl.
//
// concurrency.Session refreshes its lease over one long-lived gRPC stream, on whichever member the
// balancer picked. A member that hangs (it accepts connections and never answers) holds that stream until
// gRPC's keepalive drops the connection, which gRPC allows no sooner than 10 s plus a timeout; with a
// shorter TTL the session ends although every other member could have refreshed the lease. The balancer
// cannot be told to avoid a member either: it keeps picking the hung one in turn. So each refresh here is
// one request with a deadline, sent to one member over a connection of its own (the client's own dialer,
// credentials and token); a member that fails is left for the next one in the list, and one that answers
// is kept.
func keepLease(ctx context.Context, cli *clientv3.Client, id clientv3.LeaseID, ttl time.Duration) <-chan struct{} {
	lost := make(chan struct{})
	go func() {
		defer close(lost)
		m := &members{cli: cli, leases: make([]clientv3.Lease, len(cli.Endpoints())), conns: make([]*grpc.ClientConn, len(cli.Endpoints()))}
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
				k, wait = (k+1)%len(m.leases), 0
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

// members are lease clients of one endpoint each, dialed when first used.
type members struct {
	cli    *clientv3.Client
	conns  []*grpc.ClientConn
	leases []clientv3.Lease
}

func (m *members) refresh(ctx context.Context, k int, id clientv3.LeaseID, timeout time.Duration) error {
	if m.leases[k] == nil {
		conn, err := m.cli.Dial(m.cli.Endpoints()[k])
		if err != nil {
			return err
		}
		m.conns[k] = conn
		m.leases[k] = clientv3.NewLeaseFromLeaseClient(etcdserverpb.NewLeaseClient(conn), m.cli, timeout)
	}
	attempt, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := m.leases[k].KeepAliveOnce(attempt, id)
	return err
}

func (m *members) close() {
	for k := range m.leases {
		if m.leases[k] != nil {
			m.leases[k].Close()
			m.conns[k].Close()
		}
	}
}
