package override

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/failover"
	"github.com/topoha/topoha/internal/etcdrec"
)

// Answer is the leader's answer to a request.
type Answer struct {
	Request  failover.Request  `json:"request"`
	Decision failover.Decision `json:"decision"`
}

var (
	decodeRequest = etcdrec.JSON("failover request", func(r *failover.Request) bool { return r.To != "" && !r.At.IsZero() })
	decodeAnswer  = etcdrec.JSON("answer to a failover request", func(a *Answer) bool { return !a.Request.At.IsZero() })
)

// WriteRequest leaves a failover request for the leader in every etcd that answers. The request is bound
// to a lease of ttl: one that no leader took in that time goes away instead of being carried out hours
// later.
func WriteRequest(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client, r failover.Request, ttl time.Duration) error {
	val, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = putEverywhere(ctx, c, clients, c.Keys().Request(), string(val), max(ttl, time.Second))
	return err
}

// TakeRequest returns the newest pending request in the etcds of clients and deletes it wherever it is,
// so that it is acted on once. A copy of a request that was already answered (the requester writes one
// into each etcd, and a leader may take one before the other is written) is dropped, and so is a value
// that is not a request (logged). Each etcd's reads and delete share one timeout.
func TakeRequest(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client, timeout time.Duration, log *slog.Logger) *failover.Request {
	var newest *failover.Request
	taken := etcdrec.EachDC(clients, func(dc string, cli *clientv3.Client) *failover.Request {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return takeFrom(rctx, c, dc, cli, log)
	})
	for _, r := range taken {
		if r != nil && (newest == nil || r.At.After(newest.At)) {
			newest = r
		}
	}
	return newest
}

// takeFrom takes the pending request in one etcd, if any that was not answered yet.
func takeFrom(rctx context.Context, c *config.Config, dc string, cli *clientv3.Client, log *slog.Logger) *failover.Request {
	key := c.Keys().Request()
	o := etcdrec.Read(rctx, cli, "failover request", key, decodeRequest)
	if o.ModRevision == 0 {
		return nil
	}
	// Only the version read is deleted: a newer request written meanwhile stays.
	_, _ = cli.Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", o.ModRevision)).Then(clientv3.OpDelete(key)).Commit()
	if o.Garbage() {
		log.Warn("ignoring a request that is not one", "dc", dc, "err", o.Err)
		return nil
	}
	answered := etcdrec.Read(rctx, cli, "answer to a failover request", c.Keys().RequestResult(), decodeAnswer)
	if answered.Record != nil && answered.Record.Request.At.Equal(o.Record.At) {
		return nil
	}
	return o.Record
}

// WriteAnswer records the leader's decision on a request in every etcd of clients that answers, for
// `topoha failover` to report.
func WriteAnswer(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client, r failover.Request, d failover.Decision) error {
	val, err := json.Marshal(Answer{Request: r, Decision: d})
	if err != nil {
		return err
	}
	_, err = putEverywhere(ctx, c, clients, c.Keys().RequestResult(), string(val), 0)
	return err
}

// ReadAnswer returns the leader's answer to req from any etcd of clients that holds it, or nil while
// there is none.
func ReadAnswer(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client, req failover.Request) *Answer {
	for _, o := range etcdrec.ReadAll(ctx, clients, c.RequestTimeout, "answer to a failover request", c.Keys().RequestResult(), decodeAnswer) {
		if o.Record != nil && o.Record.Request.At.Equal(req.At) {
			return o.Record
		}
	}
	return nil
}
