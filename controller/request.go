package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/events"
	"github.com/topoha/topoha/failover"
)

// RequestKey is where `topoha failover` leaves a request for the leader, in both DCs' etcds.
func RequestKey(keyRoot string) string { return keyRoot + "request" }

// RequestResultKey is where the leader answers the last request it took, in both DCs' etcds.
func RequestResultKey(keyRoot string) string { return keyRoot + "request_result" }

// RequestResult is the leader's answer to a request.
type RequestResult struct {
	Request  failover.Request  `json:"request"`
	Decision failover.Decision `json:"decision"`
}

// WriteRequest leaves a failover request for the leader in every etcd that answers. The request is bound
// to a lease of ttl: one that no leader took in that time goes away instead of being carried out hours
// later.
func WriteRequest(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client, r failover.Request, ttl time.Duration) error {
	val, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = putEverywhere(ctx, c, clients, RequestKey(c.KeyRoot()), string(val), max(ttl, time.Second))
	return err
}

// putEverywhere puts key in every etcd that answers, bound to a lease of ttl when ttl is not 0; it fails
// only if no etcd took it, and names in missed the DCs that did not.
func putEverywhere(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client, key, val string, ttl time.Duration) (missed []string, err error) {
	var errs []error
	for _, dc := range c.DCNames() {
		rctx, cancel := context.WithTimeout(ctx, c.Health.Timeout)
		var opts []clientv3.OpOption
		var err error
		if ttl > 0 {
			var lease *clientv3.LeaseGrantResponse
			if lease, err = clients[dc].Grant(rctx, int64((ttl+time.Second-1)/time.Second)); err == nil {
				opts = append(opts, clientv3.WithLease(lease.ID))
			}
		}
		if err == nil {
			_, err = clients[dc].Put(rctx, key, val, opts...)
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

// takeRequest returns the newest pending request in either etcd and deletes it wherever it is, so that
// it is acted on once. A copy of a request that was already answered (the requester writes one into
// each etcd, and a leader may take one before the other is written) is dropped.
func (ctl *Controller) takeRequest(ctx context.Context) *failover.Request {
	key := RequestKey(ctl.config().KeyRoot())
	answeredKey := RequestResultKey(ctl.config().KeyRoot())
	var mu sync.Mutex
	var newest *failover.Request
	var wg sync.WaitGroup
	for dc, cli := range ctl.reachable() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, ctl.config().Health.Timeout)
			defer cancel()
			resp, err := cli.Txn(rctx).Then(clientv3.OpGet(key), clientv3.OpGet(answeredKey)).Commit()
			if err != nil || len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
				return
			}
			kv := resp.Responses[0].GetResponseRange().Kvs[0]
			// Only the version read is deleted: a newer request written meanwhile stays.
			_, _ = cli.Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).Then(clientv3.OpDelete(key)).Commit()
			var r failover.Request
			if err := json.Unmarshal(kv.Value, &r); err != nil {
				ctl.log.Warn("ignoring a request that is not one", "dc", dc, "value", string(kv.Value))
				return
			}
			if answered := resp.Responses[1].GetResponseRange().Kvs; len(answered) > 0 {
				var prev RequestResult
				if json.Unmarshal(answered[0].Value, &prev) == nil && prev.Request.At.Equal(r.At) {
					return
				}
			}
			mu.Lock()
			if newest == nil || r.At.After(newest.At) {
				newest = &r
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return newest
}

// answerRequest records the decision taken on a request, for `topoha failover` to report.
func (ctl *Controller) answerRequest(ctx context.Context, r failover.Request, d failover.Decision) {
	val, err := json.Marshal(RequestResult{Request: r, Decision: d})
	if err == nil {
		_, err = putEverywhere(ctx, ctl.config(), ctl.cfg.Clients, RequestResultKey(ctl.config().KeyRoot()), string(val), 0)
	}
	if err != nil {
		ctl.log.Warn("cannot record the answer to a request", "err", err)
	}
	if d.Refusal {
		ctl.ev.Warn(events.KindOverride, "failover request refused", "to", r.To, "force", r.Force, "trigger", r.Trigger, "reason", d.Reason)
	} else {
		ctl.ev.Info(events.KindOverride, "failover request taken", "to", r.To, "force", r.Force, "trigger", r.Trigger, "action", d.Action, "reason", d.Reason)
	}
}
