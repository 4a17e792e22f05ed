package embedetcd

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"

	"go.etcd.io/etcd/server/v3/embed"
)

// Cluster is an etcd cluster of several members in this process, as a DC runs in production. Members
// stop and start one at a time (a member loss, a rolling restart) or all together (a DC loss).
type Cluster struct {
	name    string
	members []*Server
}

// NewCluster prepares a cluster of n members named name-0 … name-(n-1), with their data under dir. tune
// changes every member's configuration before each start.
func NewCluster(name, dir string, n int, tune ...func(*embed.Config)) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("embedetcd: a cluster needs at least one member, not %d", n)
	}
	c := &Cluster{name: name}
	for i := range n {
		c.members = append(c.members, &Server{name: fmt.Sprintf("%s-%d", name, i), dir: filepath.Join(dir, fmt.Sprintf("member-%d", i)), tune: tune})
	}
	return c, c.pickPorts()
}

// pickPorts gives every member two ports that no other member has, and the initial cluster they make.
func (c *Cluster) pickPorts() error {
	addrs, err := FreeAddrs(2 * len(c.members))
	if err != nil {
		return err
	}
	for i, m := range c.members {
		m.setPorts(addrs[2*i], addrs[2*i+1])
	}
	c.join()
	return nil
}

// join gives every member the same initial cluster, from the members' current peer ports.
func (c *Cluster) join() {
	var peers []string
	for _, m := range c.members {
		peers = append(peers, m.name+"="+m.peerURL.String())
	}
	for _, m := range c.members {
		m.cluster, m.token = strings.Join(peers, ","), "topoha-"+c.name
	}
}

// Start starts every stopped member at once (a new cluster's members wait for each other's votes) and
// returns when all serve. On the first start, ports taken meanwhile are replaced by others.
func (c *Cluster) Start() error {
	for attempt := 1; ; attempt++ {
		err := c.startAll()
		if err == nil || c.members[0].started || attempt == 5 || !addrInUse(err) {
			return err
		}
		c.stop()
		if err := c.pickPorts(); err != nil {
			return err
		}
	}
}

func (c *Cluster) startAll() error {
	errs := make([]error, len(c.members))
	var wg sync.WaitGroup
	for i, m := range c.members {
		if m.Running() {
			continue
		}
		wg.Go(func() { errs[i] = m.start() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// stop stops every member at once (see Server.Stop).
func (c *Cluster) stop() {
	for _, m := range c.members {
		m.stopAsync()
	}
	for _, m := range c.members {
		m.Wait()
	}
}

// Kill stops member i as a killed process stops, for its peers at once: it is cut off from them first,
// so that it neither votes nor leads any more, and then shut down in the background (embed drains its
// clients' streams for up to 5 s; Server.Wait waits). StartMember brings it back.
func (c *Cluster) Kill(i int) {
	c.Isolate(i, true)
	c.members[i].stopAsync()
}

// StartMember starts member i again, after Kill or Stop, and waits until it serves.
func (c *Cluster) StartMember(i int) error {
	// Its peers still drop what they would send it (Kill), and a member that cannot hear its leader
	// never becomes ready.
	c.Isolate(i, false)
	return c.members[i].Start()
}

// Isolate cuts member i off from its running peers both ways (cut) or mends the links (!cut): raft
// messages between them are dropped, as a partition of its host would, while its clients still reach it.
func (c *Cluster) Isolate(i int, cut bool) {
	me := c.members[i]
	for j, other := range c.members {
		if j == i || other.e == nil || me.id == 0 {
			continue
		}
		if cut {
			other.e.Server.CutPeer(me.id)
		} else {
			other.e.Server.MendPeer(me.id)
		}
		if me.e == nil {
			continue
		}
		if cut {
			me.e.Server.CutPeer(other.id)
		} else {
			me.e.Server.MendPeer(other.id)
		}
	}
}

// Members are the cluster's members, in the order they were made.
func (c *Cluster) Members() []*Server { return c.members }
