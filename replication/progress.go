package replication

import (
	"context"
	"strconv"
	"strings"
	"sync"
)

// progressTrusted says whether the source's progress notifications may move the applied revision. etcd
// before 3.4.25 and 3.5.8 could answer a requested progress notification with a revision ahead of events
// it had not yet sent to a watcher that was still catching up (etcd #15220, fixed by #15237): trusting it
// would skip those events for good. Every member that answers must run a fixed version; one that does not
// answer cannot be judged, and none answering is no trust. Untrusted notifications still prove the watch
// alive.
func (m *Mirror) progressTrusted(ctx context.Context) bool {
	eps := m.cfg.Source.Endpoints()
	versions := make([]string, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, m.cfg.RequestTimeout)
			defer cancel()
			if st, err := m.cfg.Source.Status(sctx, ep); err == nil {
				versions[i] = st.Version
			}
		})
	}
	wg.Wait()
	answered := false
	for i, v := range versions {
		if v == "" {
			continue
		}
		answered = true
		if !progressFixed(v) {
			m.log.Warn("the source etcd's progress notifications can run ahead of its events (etcd #15220): the mirror "+
				"ignores them, so its lag metrics overstate while the prefix is idle; upgrade etcd to 3.4.25+ or 3.5.8+",
				"endpoint", eps[i], "version", v)
			return false
		}
	}
	return answered
}

// progressFixed says whether etcd version v ("3.5.21") sends requested progress notifications in order
// with the events of the watch stream.
func progressFixed(v string) bool {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 3 {
		return false
	}
	var n [3]int
	for i, p := range parts {
		p, _, _ = strings.Cut(p, "-") // 3.6.0-rc.1
		x, err := strconv.Atoi(p)
		if err != nil {
			return false
		}
		n[i] = x
	}
	switch {
	case n[0] != 3:
		return n[0] > 3
	case n[1] == 4:
		return n[2] >= 25
	case n[1] == 5:
		return n[2] >= 8
	}
	return n[1] > 5
}
