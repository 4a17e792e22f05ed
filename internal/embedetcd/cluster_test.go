package embedetcd

import (
	"net"
	"testing"
)

// A port taken between NewCluster and Start (by a cluster starting beside it) is no failure: the members
// that started are stopped, their data (which names the old peer ports) removed, and the cluster starts
// afresh on other ports.
func TestClusterStartsAfreshWhenAPortIsTaken(t *testing.T) {
	c, err := NewCluster("taken", t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	taken := c.members[2].peerURL.Host
	l, err := net.Listen("tcp", taken)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := c.Start(); err != nil {
		t.Fatalf("start with %s taken: %v", taken, err)
	}
	t.Cleanup(c.Stop)
	for _, m := range c.members {
		if !m.Running() {
			t.Errorf("%s is not running", m.Name())
		}
	}
	if c.members[2].peerURL.Host == taken {
		t.Errorf("%s still has the taken peer port %s", c.members[2].Name(), taken)
	}
	cli, err := c.members[0].Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.MemberList(t.Context())
	if err != nil || len(resp.Members) != 3 {
		t.Fatalf("members after the fresh start: %v, %v", resp, err)
	}
}
