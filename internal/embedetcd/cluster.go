package embedetcd

import (
	"errors"
	"fmt"
	"os"
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
	served  bool // once every member has served, ports and data stay
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
// returns when all serve. Until the cluster has served once, a port taken meanwhile (by another cluster
// starting beside it, another test process) makes it start afresh on other ports: the members that did
// start are stopped and their data removed, since it names the old peer ports.
func (c *Cluster) Start() error {
	for attempt := 1; ; attempt++ {
		err := c.startAll()
		if err == nil {
			c.served = true
			return nil
		}
		if c.served || attempt == 5 || !addrInUse(err) {
			return err
		}
		c.Stop()
		for _, m := range c.members {
			if err := os.RemoveAll(m.dir); err != nil {
				return fmt.Errorf("start %s afresh on other ports: %w", c.name, err)
			}
			m.started = false
		}
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

// Stop kills every member at once and waits until they are all down.
func (c *Cluster) Stop() {
	for i := range c.members {
		c.Kill(i)
	}
	for _, m := range c.members {
		m.Wait()
	}
}

// Kill stops member i as a killed process stops, for its peers at once: it is cut off from them first,
// so that it neither votes nor leads any more, and then shut down in the background (a leader once it
// has stepped down; embed drains its clients' streams for up to 5 s; Server.Wait waits). StartMember
// brings it back.
func (c *Cluster) Kill(i int) {
	c.Isolate(i, true)
	c.members[i].stopAsync(true)
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
