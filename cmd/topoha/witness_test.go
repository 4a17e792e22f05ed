package main

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/topoha/topoha/internal/testenv"
)

// Witnesses decide what two sites cannot: a cut link to dc1 is not dc1's loss while a witness still
// reaches it, an unreachable witness counts as "no", and a majority seeing dc1 down lets the failover go.
func TestWitnessesDecideAutomaticFailover(t *testing.T) {
	d := startDCs(t)
	w := testenv.StartProcess(t, testenv.Binary(t), "witness", "--config", runConfig(t, d), "--listen", "127.0.0.1:0", "--id", "w1")
	wURL := "http://" + apiAddr(t, w)
	dead := "http://" + testenv.ClosedAddr(t)

	// The controllers reach dc1 through a link that the test cuts; the witness reaches it directly.
	link := testenv.StartPath(t, "dc1", d.dc1)
	config := autoConfig(t, d)
	editConfig(t, config, csv(d.dc1.Endpoints()), csv(link.Endpoints()))
	editConfig(t, config, "  allow_two_site_auto: true\n", fmt.Sprintf("  witnesses: [%s, %s]\n", wURL, dead))
	procs := startControllers(t, d, config)
	leader := procs[d.leaderID(t, "")]
	waitDecision := func(want string) {
		t.Helper()
		testenv.Eventually(t, waitLong, func() (bool, string) {
			return strings.Contains(leader.Stderr(), want), "the leader has not logged a decision containing " + want
		})
	}

	link.Cut() // a partition between the controllers and dc1; dc1 itself serves on
	waitDecision("but only 0 of 2 witnesses see it down")
	code, out, _ := testenv.RunProcess(t, waitLong, testenv.Binary(t), "status", "--config", config)
	if code == exitStatusUnread || !strings.Contains(out, "WITNESSES  0 of 2 see dc1 down") || !strings.Contains(out, "w1 sees dc1 up") ||
		!strings.Contains(out, dead+" does not count (unreachable") {
		t.Errorf("status during the partition: exit %d\n%s", code, out)
	}
	time.Sleep(3 * time.Second) // three times failover.after: long enough for a failover that must not come
	if st := status(t, config); st.Primary.Epoch != 0 {
		t.Fatalf("failed over during a partition that the witness sees through: %+v", st.Primary)
	}

	link.Heal()
	d.dc1.Stop() // now dc1 is really gone; one of two witnesses is not a majority
	waitDecision("but only 1 of 2 witnesses see it down")
	if st := status(t, config); st.Primary.Epoch != 0 {
		t.Fatalf("failed over with 1 of 2 witnesses: %+v", st.Primary)
	}

	editConfig(t, config, fmt.Sprintf("witnesses: [%s, %s]", wURL, dead), fmt.Sprintf("witnesses: [%s]", wURL))
	for _, p := range procs {
		p.Signal(syscall.SIGHUP)
	}
	testenv.Eventually(t, waitLong, func() (bool, string) {
		st := status(t, config)
		return st.Primary.DC == "dc2" && st.Primary.Epoch == 1, fmt.Sprintf("primary %s@%d", st.Primary.DC, st.Primary.Epoch)
	})
	for _, p := range procs {
		stopWithSIGTERM(t, p)
	}
}
