package controller

import (
	"context"
	"errors"
	"testing"

	"github.com/topoha/topoha/primary"
)

func TestDecideTermStart(t *testing.T) {
	at := func(dc string, epoch int64) primary.Observed {
		return primary.Observed{Record: &primary.Record{DC: dc, Epoch: epoch}, ModRevision: 7}
	}
	unreachable := primary.Observed{Err: context.DeadlineExceeded}
	garbage := primary.Observed{Err: errors.New("not a record"), ModRevision: 7}
	for name, tc := range map[string]struct {
		followed primary.Record
		seen     primary.Observed
		want     termStart
	}{
		"before any failover, no record anywhere":   {primary.Record{DC: "dc1"}, primary.Observed{}, startLead},
		"the record followed holds in the DR etcd":  {primary.Record{DC: "dc2", Epoch: 1}, at("dc2", 1), startLead},
		"epoch 0 written by hand":                   {primary.Record{DC: "dc1"}, at("dc1", 0), startLead},
		"the DR etcd does not answer":               {primary.Record{DC: "dc1"}, unreachable, startGiveUp},
		"unreachable beats a stale view":            {primary.Record{DC: "dc2", Epoch: 3}, unreachable, startGiveUp},
		"a failover this controller has not read":   {primary.Record{DC: "dc1"}, at("dc2", 1), startAdopt},
		"newer record even with a demotion pending": {primary.Record{DC: "dc2", Epoch: 2}, at("dc1", 3), startAdopt},
		"garbage in the DR etcd":                    {primary.Record{DC: "dc1"}, garbage, startBlocked},
		"garbage after a failover":                  {primary.Record{DC: "dc2", Epoch: 1}, garbage, startBlocked},
		"old primary back, no record there":         {primary.Record{DC: "dc2", Epoch: 1}, primary.Observed{}, startDemote},
		"old primary back with its old epoch":       {primary.Record{DC: "dc2", Epoch: 2}, at("dc1", 1), startDemote},
	} {
		if got := decideTermStart(tc.followed, tc.seen); got != tc.want {
			t.Errorf("%s: decideTermStart(%+v, %+v) = %s, want %s", name, tc.followed, tc.seen, got, tc.want)
		}
	}
}
