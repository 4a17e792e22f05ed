package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
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

// WriteRequest leaves a failover request for the leader in every etcd that answers.
func WriteRequest(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client, r failover.Request) error {
	val, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return putEverywhere(ctx, c, clients, RequestKey(c.KeyRoot()), string(val))
}

// putEverywhere puts key in every etcd that answers; it fails only if none did.
func putEverywhere(ctx context.Context, c *config.Config, clients map[string]*clientv3.Client, key, val string) error {
	var errs []error
	for _, dc := range c.DCNames() {
		rctx, cancel := context.WithTimeout(ctx, c.Health.Timeout)
		_, err := clients[dc].Put(rctx, key, val)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", dc, err))
		}
	}
	if len(errs) == len(clients) {
		return fmt.Errorf("%s was written nowhere: %w", key, errors.Join(errs...))
	}
	return nil
}

// takeRequest returns the newest pending request in either etcd and deletes it wherever it is, so that
// it is acted on once.
func (ctl *Controller) takeRequest(ctx context.Context) *failover.Request {
	key := RequestKey(ctl.config().KeyRoot())
	var mu sync.Mutex
	var newest *failover.Request
	var wg sync.WaitGroup
	for dc, cli := range ctl.reachable() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, ctl.config().Health.Timeout)
			defer cancel()
			resp, err := cli.Get(rctx, key)
			if err != nil || len(resp.Kvs) == 0 {
				return
			}
			kv := resp.Kvs[0]
			// Only the version read is deleted: a newer request written meanwhile stays.
			_, _ = cli.Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).Then(clientv3.OpDelete(key)).Commit()
			var r failover.Request
			if err := json.Unmarshal(kv.Value, &r); err != nil {
				ctl.log.Warn("ignoring a request that is not one", "dc", dc, "value", string(kv.Value))
				return
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
		err = putEverywhere(ctx, ctl.config(), ctl.cfg.Clients, RequestResultKey(ctl.config().KeyRoot()), string(val))
	}
	if err != nil {
		ctl.log.Warn("cannot record the answer to a request", "err", err)
	}
}
