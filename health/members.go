package health

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	rpctypes "go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// members holds one client per configured endpoint. A client shared by all endpoints would send a
// probe's read to whichever member its balancer picks, and a hung member would take the probe's whole
// timeout; one client each lets every member answer, or fail, on its own.
type members struct {
	cc      clientv3.Config
	mu      sync.Mutex
	clients []*clientv3.Client // nil until dialed, and again after a failed probe
}

func newMembers(cc clientv3.Config) *members {
	return &members{cc: cc, clients: make([]*clientv3.Client, len(cc.Endpoints))}
}

func (m *members) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, c := range m.clients {
		if c != nil {
			c.Close()
			m.clients[i] = nil
		}
	}
}

// client returns the client of endpoint i, dialing it within timeout if it has none.
func (m *members) client(i int, timeout time.Duration) (*clientv3.Client, error) {
	m.mu.Lock()
	c := m.clients[i]
	m.mu.Unlock()
	if c != nil {
		return c, nil
	}
	cc := m.cc
	cc.Endpoints = []string{m.cc.Endpoints[i]}
	// With a username, New authenticates at once, which must not outlast the probe.
	cc.DialTimeout = min(max(cc.DialTimeout, time.Millisecond), timeout)
	c, err := clientv3.New(cc)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.clients[i] = c
	m.mu.Unlock()
	return c, nil
}

// drop closes the client of endpoint i after a failed probe, so that the next probe dials again: behind a
// VIP, a new connection may reach another member than the one that failed.
func (m *members) drop(i int) {
	m.mu.Lock()
	c := m.clients[i]
	m.clients[i] = nil
	m.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// memberProbe is what one endpoint answered.
type memberProbe struct {
	Member
	revision int64
	// alarmed says the member's status listed alarms.
	alarmed bool
	// refused says why etcd refused topoha's user; the member counts as serving all the same.
	refused string
	client  *clientv3.Client
}

// probe asks every endpoint at once, each within timeout: its status (who leads raft, alarms) and a
// linearizable read of key. The cluster serves when any member's read succeeds.
func (m *members) probe(ctx context.Context, key string, timeout time.Duration) Result {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	probes := make([]memberProbe, len(m.cc.Endpoints))
	var wg sync.WaitGroup
	for i := range probes {
		wg.Go(func() { probes[i] = m.probeMember(ctx, i, key, timeout) })
	}
	wg.Wait()

	res := Result{Members: make([]Member, len(probes))}
	var serving *memberProbe
	alarmed := false
	var errs []string
	for i := range probes {
		p := &probes[i]
		res.Members[i] = p.Member
		if p.Serving && (serving == nil || serving.refused != "" && p.refused == "") {
			serving = p
		}
		alarmed = alarmed || p.alarmed
		if p.Error != "" {
			errs = append(errs, p.Endpoint+": "+p.Error)
		}
	}
	if serving == nil {
		res.Err = fmt.Errorf("no member serves a linearizable read within %s (%s)", timeout, strings.Join(errs, "; "))
		return res
	}
	res.Revision, res.Refused = serving.revision, serving.refused
	// Listing alarms needs no permission on any key, so a refused read does not keep them from view.
	if alarmed {
		alarms, err := alarmList(ctx, serving.client)
		if err != nil {
			// The status said there are alarms; not knowing which is no reason to call the cluster up.
			alarms = []Alarm{{Type: "UNKNOWN", Member: serving.ID}}
		}
		res.Alarms = alarms
	}
	return res
}

func (m *members) probeMember(ctx context.Context, i int, key string, timeout time.Duration) memberProbe {
	ep := m.cc.Endpoints[i]
	p := memberProbe{Member: Member{Endpoint: ep}}
	fail := func(format string, args ...any) memberProbe {
		p.Error = fmt.Sprintf(format, args...)
		m.drop(i)
		return p
	}
	cli, err := m.client(i, timeout)
	if err != nil {
		return fail("connect: %v", err)
	}
	st, err := cli.Status(ctx, ep)
	switch {
	case refusal(err):
		// Status needs no permission, only a token, which the client failed to get: the read below
		// fails the same way, and says whether the cluster serves.
	case err != nil:
		return fail("status: %v", err)
	default:
		p.ID = fmt.Sprintf("%x", st.Header.MemberId)
		p.Leader = st.Leader != 0 && st.Leader == st.Header.MemberId
		for _, e := range st.Errors {
			p.alarmed = p.alarmed || e != rpctypes.ErrNoLeader.Error()
		}
		if st.Leader == 0 {
			return fail("no raft leader: the member is cut off from its peers, or the cluster lost its quorum")
		}
	}
	resp, err := cli.Get(ctx, key)
	switch {
	case refusal(err):
		// etcd checks a read's permission, and a password, only after it agreed with its quorum on the
		// read index: the refusal proves that the cluster serves. A DC must not look lost, and failed
		// over, because its user lacks a role or its password changed.
		p.Error, p.refused = err.Error(), err.Error()
		p.Serving, p.client = true, cli
		return p
	case err != nil:
		return fail("linearizable read: %v", err)
	}
	p.Serving, p.revision, p.client = true, resp.Header.Revision, cli
	return p
}

// refusal says whether etcd refused topoha's user: a wrong password, or a missing permission.
func refusal(err error) bool {
	err = rpctypes.Error(err)
	return errors.Is(err, rpctypes.ErrAuthFailed) || errors.Is(err, rpctypes.ErrPermissionDenied)
}

func alarmList(ctx context.Context, cli *clientv3.Client) ([]Alarm, error) {
	resp, err := cli.AlarmList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list alarms: %w", err)
	}
	var alarms []Alarm
	for _, a := range resp.Alarms {
		if a.Alarm == etcdserverpb.AlarmType_NONE {
			continue
		}
		alarms = append(alarms, Alarm{Type: a.Alarm.String(), Member: fmt.Sprintf("%x", a.MemberID)})
	}
	// An empty list after a status that listed alarms: disarmed in between.
	return alarms, nil
}
