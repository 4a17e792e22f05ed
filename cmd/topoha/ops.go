package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/clusterstatus"
	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/election"
	"github.com/topoha/topoha/events"
	"github.com/topoha/topoha/failover"
	"github.com/topoha/topoha/fence"
	"github.com/topoha/topoha/health"
	"github.com/topoha/topoha/override"
	"github.com/topoha/topoha/primary"
	"github.com/topoha/topoha/witness"
)

// openAll loads the config and opens a client of each DC's etcd without requiring that they answer:
// status and overrides must work while a DC is lost.
func openAll(path string) (*config.Config, map[string]*clientv3.Client, func(), error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, nil, nil, err
	}
	clients, closeAll, err := cfg.OpenClients()
	if err != nil {
		return nil, nil, nil, err
	}
	return cfg, clients, closeAll, nil
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cf commonFlags
	fs := newFlagSet("status", stderr, &cf)
	asJSON := fs.Bool("json", false, "print JSON (the same as the /status endpoint)")
	if err := cf.parse(fs, args); err != nil {
		return exitCodeFor(err)
	}
	cfg, clients, closeAll, err := openAll(cf.config)
	if err != nil {
		return fail(stderr, "status", err)
	}
	defer closeAll()
	st := clusterstatus.Read(ctx, cfg, clients)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			return fail(stderr, "status", err)
		}
		code, _ := statusExit(st, time.Now())
		return code
	}
	printStatus(stdout, cfg, st, time.Now())
	code, why := statusExit(st, time.Now())
	if code != exitOK {
		fmt.Fprintf(stdout, "CHECK    %s\n", strings.Join(why, "; "))
	}
	return code
}

// Exit codes of `topoha status`, for scripts and Nagios-style checks.
const (
	exitStatusAttention = 1 // something needs a person
	exitStatusUnread    = 2 // nothing could be read: no DC's etcd answers (or bad flags or config)
)

// mirrorStale is how old the mirror's checkpoint may get before status says the mirror needs a look: an
// idle mirror records one every few seconds.
const mirrorStale = time.Minute

// statusExit is `topoha status`'s exit code, with what needs a person when it is 1.
func statusExit(st *clusterstatus.Status, now time.Time) (int, []string) {
	var why []string
	answered := false
	for _, dc := range slices.Sorted(maps.Keys(st.DCs)) {
		d := st.DCs[dc]
		answered = answered || d.EtcdHealthy
		if d.State != health.Up {
			why = append(why, fmt.Sprintf("%s's etcd is %s", dc, d.State))
		}
	}
	if !answered {
		return exitStatusUnread, []string{"no DC's etcd answers: nothing could be read"}
	}
	m := st.Mirror
	switch {
	case st.Leader == nil:
		why = append(why, "no controller leads")
	case m.Syncing:
		why = append(why, "the mirror is resyncing: the DR copy is not consistent until it ends")
	case m.AppliedRevision == 0:
		why = append(why, "the mirror has no checkpoint in "+m.Destination+"'s etcd")
	case now.Sub(m.UpdatedAt) > mirrorStale:
		why = append(why, fmt.Sprintf("the mirror's checkpoint is %s old", now.Sub(m.UpdatedAt).Round(time.Second)))
	}
	if u := st.Unfinished; u != nil {
		why = append(why, fmt.Sprintf("a failover is unfinished: %d of %d shards without a primary", len(u.Unconfirmed), u.Shards))
	}
	if p := st.Plan; p != nil && !p.AllReady() {
		why = append(why, "the plan is not ready: some shards could not fail over now")
	}
	for _, dc := range slices.Sorted(maps.Keys(st.Fences)) {
		why = append(why, dc+" is fenced")
	}
	if st.PauseUnknown != "" {
		why = append(why, "the pause flag cannot be read")
	}
	for _, u := range st.Unread {
		why = append(why, "could not read: "+u)
	}
	if len(why) > 0 {
		return exitStatusAttention, why
	}
	return exitOK, nil
}

// printStatus writes the status for a person at 3 a.m.: the answer first. Ages are counted up to now.
func printStatus(w io.Writer, cfg *config.Config, st *clusterstatus.Status, now time.Time) {
	p := st.Primary
	since := "never failed over (initial_primary)"
	if p.Epoch > 0 {
		since = fmt.Sprintf("since %s: %s", p.ChangedAt.Format(time.RFC3339), p.Reason)
	}
	fmt.Fprintf(w, "PRIMARY  %s (epoch %d), %s\n", p.DC, p.Epoch, since)
	dr := st.Mirror.Destination
	if st.Leader != nil {
		fmt.Fprintf(w, "LEADER   %s in %s, leading since %s%s\n", st.Leader.ID, st.Leader.DC, st.Leader.Since.Format(time.RFC3339), leaderPhase(st.Leader))
	} else {
		fmt.Fprintf(w, "LEADER   none: the election lives in %s's etcd (the DR side)%s\n", dr, noLeaderWhy(st.DCs[dr]))
	}
	fmt.Fprintf(w, "PAUSED   %s\n", describePause(cfg, st))
	var etcd, members []string
	for _, dc := range cfg.DCNames() {
		d := st.DCs[dc]
		etcd = append(etcd, describeEtcd(dc, d))
		for _, m := range d.Members {
			// A DC that is down names its members' errors on its ETCD line already.
			if !m.Serving && d.State.Serving() {
				members = append(members, fmt.Sprintf("%s %s not serving: %s", dc, m.Endpoint, m.Error))
			}
		}
	}
	fmt.Fprintf(w, "ETCD     %s\n", strings.Join(etcd, "; "))
	for _, m := range members {
		fmt.Fprintf(w, "MEMBER   %s\n", m)
	}
	m := st.Mirror
	switch {
	case m.Syncing:
		fmt.Fprintf(w, "MIRROR   %s -> %s: full sync under way (the DR copy is not consistent until it ends)\n", m.Source, m.Destination)
	case m.AppliedRevision == 0:
		fmt.Fprintf(w, "MIRROR   %s -> %s: no checkpoint in %s's etcd (never mirrored, or unreadable)\n", m.Source, m.Destination, m.Destination)
	default:
		fmt.Fprintf(w, "MIRROR   %s -> %s: applied source revision %d of %d (%d behind), checkpoint written %s ago%s\n", m.Source, m.Destination,
			m.AppliedRevision, m.SourceRevision, m.LagRevisions, now.Sub(m.UpdatedAt).Round(time.Second), stalledBy(st.DCs[m.Destination]))
	}
	if len(st.Witnesses) > 0 {
		var views []string
		for _, a := range st.Witnesses {
			switch {
			case a.Error != "":
				views = append(views, fmt.Sprintf("%s does not count (%s)", a.URL, a.Error))
			default:
				views = append(views, fmt.Sprintf("%s sees %s %s", a.View.ID, p.DC, a.View.DCs[p.DC].State))
			}
		}
		fmt.Fprintf(w, "WITNESSES  %d of %d see %s down (a majority must, for an automatic failover): %s\n",
			witness.CountSeeingDown(st.Witnesses, p.DC), len(st.Witnesses), p.DC, strings.Join(views, "; "))
	}
	for _, dc := range cfg.DCNames() {
		if r := st.Fences[dc]; r != nil {
			fmt.Fprintf(w, "FENCE    %s\n", describeFence(r, p))
		}
	}
	if u := st.Unfinished; u != nil {
		printUnfinished(w, u, st.Converger, st.Paused, now)
	}
	if f := st.LastFailover; f != nil {
		var shards []string
		for _, s := range f.Shards {
			state := "OK " + s.Tablet
			if !s.Confirmed {
				state = "FAILED: " + s.Error
			}
			shards = append(shards, fmt.Sprintf("%s/%s %s", s.Keyspace, s.Shard, state))
		}
		converged := ""
		if !f.ConvergedAt.IsZero() && f.ConvergedAt.After(f.FinishedAt) {
			converged = fmt.Sprintf(", converged after %s", f.ConvergedAt.Sub(f.StartedAt).Round(time.Millisecond))
		}
		fmt.Fprintf(w, "LAST FAILOVER  %s %s -> %s (%s, epoch %d, took %s%s) %s: %s\n", f.StartedAt.Format(time.RFC3339), f.Decision.From, f.Decision.To,
			f.Decision.Trigger, f.Epoch, f.FinishedAt.Sub(f.StartedAt).Round(time.Millisecond), converged, strings.ToUpper(string(f.Outcome)), strings.Join(shards, "; "))
	}
	if st.Plan != nil {
		fmt.Fprintf(w, "PLAN     %s\n", st.Plan.Line())
	}
	for _, warn := range st.Warnings {
		fmt.Fprintf(w, "WARNING  %s\n", warn)
	}
}

// describePause says whether automatic failover can happen, and why not: the flag, a flag nobody could
// read, or the mode.
func describePause(cfg *config.Config, st *clusterstatus.Status) string {
	var flag string
	switch {
	case st.PauseUnknown != "":
		flag = "UNKNOWN: the pause flag cannot be read (" + st.PauseUnknown + "); controllers treat an unreadable flag as paused"
	case st.Paused:
		flag = "YES: no automatic failover until `topoha resume`"
	default:
		flag = "no"
	}
	if cfg.Failover.Mode == config.ModeManual {
		return flag + "; automatic failover is OFF: failover.mode is manual (set failover.mode: auto, with failover.witnesses, and reload the controllers to turn it on; `topoha failover --to DC` works in either mode)"
	}
	return flag + " (failover.mode auto)"
}

// printUnfinished writes the FAILOVER line of a failover whose shards do not all have their primary yet,
// and a SHARD line for each that does not: failed and held ones first, at most maxShardLines.
func printUnfinished(w io.Writer, u *failover.Unfinished, converger *election.Leader, paused bool, now time.Time) {
	who := "no controller holds the convergence lock: start one in " + u.To
	switch {
	case u.Vetoed:
		who = "before_promote vetoed the promotions (" + u.BeforePromote + "): topoha promotes nothing; promote by hand and it confirms each shard"
	case converger != nil:
		who = fmt.Sprintf("converging: %s in %s", converger.ID, converger.DC)
	}
	if paused && !u.Vetoed {
		who += "; paused: no shard is retried after its first 3 attempts until `topoha resume`"
	}
	fmt.Fprintf(w, "FAILOVER unfinished: %d of %d shards without a primary in %s for %s (epoch %d: %s); %s\n", len(u.Unconfirmed), u.Shards, u.To,
		now.Sub(u.StartedAt).Round(time.Second), u.Epoch, u.Progress(), who)
	// The shards that need a person first; a thousand pending ones are a count, not a thousand lines.
	shown := 0
	for _, pass := range []bool{true, false} {
		for _, s := range u.Unconfirmed {
			if (s.State == failover.ShardPending) == pass {
				continue
			}
			if shown == maxShardLines {
				fmt.Fprintf(w, "  SHARD  ... and %d more: `topoha status --json` lists every one\n", len(u.Unconfirmed)-shown)
				return
			}
			shown++
			printShardLine(w, s, now)
		}
	}
}

// maxShardLines bounds the SHARD lines of an unfinished failover.
const maxShardLines = 20

// printShardLine writes the SHARD line of a shard without its primary.
func printShardLine(w io.Writer, s failover.ShardProgress, now time.Time) {
	switch s.State {
	case failover.ShardHeld:
		fmt.Fprintf(w, "  SHARD  %s held by %s since %s: %s (promoted by hand, it is confirmed; `topoha resume --shard %s` gives it back)\n",
			s.ID(), s.By, s.UpdatedAt.Format(time.RFC3339), s.LastError, s.ID())
	case failover.ShardFailed:
		fmt.Fprintf(w, "  SHARD  %s failed %d attempt(s), next in %s: %s\n", s.ID(), s.Attempts, max(0, s.NextAttemptAt.Sub(now)).Round(time.Second), s.LastError)
	default:
		fmt.Fprintf(w, "  SHARD  %s pending (%d attempt(s) so far)\n", s.ID(), s.Attempts)
	}
}

// describeEtcd says in one phrase how a DC's etcd cluster answered: its state, and how many members serve.
func describeEtcd(dc string, d clusterstatus.DC) string {
	serving, leader := 0, "none"
	for _, m := range d.Members {
		if m.Serving {
			serving++
		}
		if m.Leader {
			leader = m.Endpoint
		}
	}
	detail := fmt.Sprintf("%d of %d members serve, raft leader %s, revision %d", serving, len(d.Members), leader, d.Revision)
	switch d.State {
	case health.Down:
		return fmt.Sprintf("%s DOWN (%s)", dc, d.Error)
	case health.Degraded:
		var why []string
		if len(d.Alarms) > 0 {
			why = append(why, health.AlarmText(d.Alarms))
		}
		if d.Refused != "" {
			why = append(why, "etcd refused topoha's user: "+d.Refused)
		}
		return fmt.Sprintf("%s DEGRADED: %s (%s)", dc, strings.Join(why, "; "), detail)
	}
	return fmt.Sprintf("%s up (%s)", dc, detail)
}

// stalledBy says why the mirror cannot write into the destination, if its etcd has an alarm.
func stalledBy(dst clusterstatus.DC) string {
	if dst.State != health.Degraded || len(dst.Alarms) == 0 {
		return ""
	}
	return fmt.Sprintf("; STALLED: the destination's etcd has an alarm, %s, and takes no mirror writes until it is cleared",
		health.AlarmText(dst.Alarms))
}

// leaderPhase is what the leader announced it is doing, if anything (a leader of an older version
// announces nothing).
func leaderPhase(l *election.Leader) string {
	if l.Phase == "" {
		return ""
	}
	return fmt.Sprintf(", %s since %s", l.Phase, l.PhaseSince.Format(time.RFC3339))
}

// noLeaderWhy explains, for the DR side's etcd, why nobody leads.
func noLeaderWhy(d clusterstatus.DC) string {
	switch d.State {
	case health.Down:
		return ", which is down"
	case health.Degraded:
		if len(d.Alarms) > 0 {
			return fmt.Sprintf(", which has an alarm (%s): it grants no new lease, so no controller can start leading until an operator clears it",
				health.AlarmText(d.Alarms))
		}
		return fmt.Sprintf(", which refuses topoha's user (%s)", d.Refused)
	}
	return ""
}

// describeFence says what a DC's fence record means for the operator, given the primary record that holds.
func describeFence(r *fence.Record, p primary.Record) string {
	head := fmt.Sprintf("%s %s by %s at %s (epoch %d): %s", r.DC, strings.ToUpper(string(r.State)), r.By, r.At.Format(time.RFC3339), r.Epoch, r.Reason)
	switch {
	case r.State == fence.StateLifted:
		return fmt.Sprintf("%s; lifted by %s at %s: self-fencing is off until the controllers read the other DC's etcd again",
			head, r.LiftedBy, r.LiftedAt.Format(time.RFC3339))
	case r.StillPrimary(p):
		return fmt.Sprintf("%s; %d of %d tablets read-only; lifted when the link returns, or by `topoha unfence --dc %s`",
			head, r.FencedCount(), len(r.Tablets), r.DC)
	default:
		return fmt.Sprintf("%s; %s is primary now (epoch %d): %s's tablets are the old side; reparent them, then `topoha unfence --dc %s --clear`",
			head, p.DC, p.Epoch, r.DC, r.DC)
	}
}

// holdShard leaves one shard of the unfinished failover to a person (pause --shard), or gives it back to
// the converger (resume --shard), in the primary DC's etcd, where the failover's progress lives.
func holdShard(ctx context.Context, stdout, stderr io.Writer, name string, cfg *config.Config, clients map[string]*clientv3.Client,
	rec *events.Recorder, id string, hold bool, reason string) int {
	// The primary record as status reads it: the failover's progress is in that DC's etcd.
	observed := primary.ReadAll(ctx, clients, cfg.Keys().Primary(), cfg.RequestTimeout)
	held := primary.HeldByAny(cfg.InitialPrimary, cfg.DCNames(), observed)
	by := "cli:" + userAtHost()
	if reason == "" {
		reason = "held by " + by
	}
	s, err := failover.HoldShard(ctx, clients[held.DC], cfg.Keys(), cfg.RequestTimeout, id, hold, by, reason)
	if err != nil {
		return fail(stderr, name, fmt.Errorf("--shard %s: %w", id, err))
	}
	rec.Info(events.KindOverride, "shard of the unfinished failover "+map[bool]string{true: "held for a person", false: "given back to the converger"}[hold],
		"shard", id, "by", by, "reason", reason, "attempts", s.Attempts)
	if hold {
		fmt.Fprintf(stdout, "%s is held: no controller promotes it until `topoha resume --shard %s`; promote it by hand if you need to, and the converger confirms it from the topo\n", id, id)
	} else {
		fmt.Fprintf(stdout, "%s is given back: the converger tries it again now\n", id)
	}
	return exitOK
}

func runPause(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return setPause(ctx, "pause", true, args, stdout, stderr)
}

func runResume(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return setPause(ctx, "resume", false, args, stdout, stderr)
}

func setPause(ctx context.Context, name string, on bool, args []string, stdout, stderr io.Writer) int {
	var cf commonFlags
	fs := newFlagSet(name, stderr, &cf)
	shard := fs.String("shard", "", "KEYSPACE/SHARD: "+name+" only this shard of the unfinished failover (a person takes it over, or gives it back)")
	reason := fs.String("reason", "", "with --shard and pause: why, shown in topoha status")
	if err := cf.parse(fs, args); err != nil {
		return exitCodeFor(err)
	}
	if ks, sh, ok := strings.Cut(*shard, "/"); *shard != "" && (!ok || ks == "" || sh == "") {
		return fail(stderr, name, fmt.Errorf("--shard %q: want KEYSPACE/SHARD, e.g. commerce/-80", *shard))
	}
	if *reason != "" && (*shard == "" || !on) {
		return fail(stderr, name, errors.New("--reason goes with pause --shard: it says why a person holds that shard"))
	}
	cfg, clients, closeAll, err := openAll(cf.config)
	if err != nil {
		return fail(stderr, name, err)
	}
	defer closeAll()
	rec, flush, err := cliEvents(cfg, clients)
	if err != nil {
		return fail(stderr, name, err)
	}
	defer flush()
	if *shard != "" {
		return holdShard(ctx, stdout, stderr, name, cfg, clients, rec, *shard, on, *reason)
	}
	_, missed, err := override.WritePause(ctx, cfg, clients, on, "cli:"+userAtHost())
	if err != nil {
		return fail(stderr, name, err)
	}
	rec.Info(events.KindOverride, "pause flag changed", "paused", on, "by", "cli:"+userAtHost(), "not_written_to", strings.Join(missed, ","))
	if len(missed) > 0 {
		fmt.Fprintf(stderr, "warning: the flag did not reach %s's etcd; running controllers keep it and copy it there when it answers again\n",
			strings.Join(missed, ", "))
	}
	if on {
		fmt.Fprintln(stdout, "paused: no automatic failover until `topoha resume`; mirroring and manual failover go on")
	} else {
		fmt.Fprintln(stdout, "resumed: automatic failover is enabled again (failover.mode "+cfg.Failover.Mode+")")
	}
	return exitOK
}

func userAtHost() string {
	host, _ := os.Hostname()
	return os.Getenv("USER") + "@" + host
}

func runFailover(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return changePrimary(ctx, "failover", failover.TriggerCLI, args, stdout, stderr)
}

func runSwitchover(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return changePrimary(ctx, "switchover", failover.TriggerSwitchover, args, stdout, stderr)
}

// changePrimary asks the leader for a failover or a planned switchover and reports its outcome.
func changePrimary(ctx context.Context, name string, trigger failover.Trigger, args []string, stdout, stderr io.Writer) int {
	var cf commonFlags
	fs := newFlagSet(name, stderr, &cf)
	to := fs.String("to", "", "the DC to make primary (required)")
	force := new(bool)
	if trigger != failover.TriggerSwitchover {
		fs.BoolVar(force, "force", false, "fail over even if the target's etcd looks unhealthy; with no leader, act directly")
	}
	wait := fs.Duration("wait", 3*time.Minute, "how long to wait for the leader to carry it out")
	if err := cf.parse(fs, args); err != nil {
		return exitCodeFor(err)
	}
	cfg, clients, closeAll, err := openAll(cf.config)
	if err != nil {
		return fail(stderr, name, err)
	}
	defer closeAll()
	if _, ok := cfg.DCs[*to]; !ok {
		return fail(stderr, name, fmt.Errorf("--to %q: name the DC to make primary, one of %v", *to, cfg.DCNames()))
	}
	st := clusterstatus.Read(ctx, cfg, clients)
	if st.Primary.DC == *to {
		fmt.Fprintf(stdout, "%s is already primary (epoch %d); nothing to do\n", *to, st.Primary.Epoch)
		return exitOK
	}
	req := failover.Request{To: *to, Force: *force, Trigger: trigger, At: time.Now().UTC()}
	if st.Leader == nil {
		if !*force {
			return fail(stderr, name, fmt.Errorf("no controller leads (the election lives in %s's etcd); start one%s", st.Mirror.Destination,
				map[bool]string{true: "", false: ", or use --force to fail over from here"}[trigger == failover.TriggerSwitchover]))
		}
		return failoverDirectly(ctx, stdout, stderr, cfg, clients, st, req)
	}
	if err := override.WriteRequest(ctx, cfg, clients, req, *wait); err != nil {
		return fail(stderr, name, err)
	}
	fmt.Fprintf(stdout, "asked leader %s (in %s) for a %s to %s; waiting up to %s\n", st.Leader.ID, st.Leader.DC, name, *to, *wait)
	return awaitFailover(ctx, stdout, stderr, cfg, clients, req, *wait)
}

// awaitFailover waits for the leader's answer to req and then for the failover's result.
func awaitFailover(ctx context.Context, stdout, stderr io.Writer, cfg *config.Config, clients map[string]*clientv3.Client, req failover.Request, wait time.Duration) int {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	answered, epoch := false, int64(0)
	for {
		if !answered {
			if ans := override.ReadAnswer(ctx, cfg, clients, req); ans != nil {
				if ans.Decision.Action != failover.ActionFailover {
					fmt.Fprintf(stdout, "the leader refused: %s\n", ans.Decision.Reason)
					return exitDiffer
				}
				answered, epoch = true, ans.Decision.NewEpoch
				fmt.Fprintf(stdout, "the leader is carrying it out (epoch %d): %s\n", epoch, ans.Decision.Reason)
			}
		} else if st := clusterstatus.Read(ctx, cfg, clients); st.LastFailover != nil && st.LastFailover.Epoch == epoch &&
			!st.LastFailover.FinishedAt.IsZero() {
			printResult(stdout, st.LastFailover)
			if len(st.LastFailover.FailedShards()) > 0 {
				return exitDiffer
			}
			return exitOK
		}
		select {
		case <-ctx.Done():
			if answered {
				return fail(stderr, "failover", fmt.Errorf("the leader took the request but has not finished within --wait %s; `topoha status` shows the outcome", wait))
			}
			return fail(stderr, "failover", fmt.Errorf("no answer within --wait %s (the request expires with it): is a controller running and leading? `topoha status` tells", wait))
		case <-tick.C:
		}
	}
}

// failoverDirectly carries out a forced failover from this process, for when no controller leads.
func failoverDirectly(ctx context.Context, stdout, stderr io.Writer, cfg *config.Config, clients map[string]*clientv3.Client, st *clusterstatus.Status, req failover.Request) int {
	d := failover.Decision{Action: failover.ActionFailover, From: st.Primary.DC, To: req.To, Trigger: failover.TriggerCLI, Forced: true,
		NewEpoch: st.Primary.Epoch + 1, Reason: "forced from the command line by " + userAtHost() + " with no leader"}
	fmt.Fprintf(stdout, "no controller leads: failing over to %s from here (epoch %d)\n", req.To, d.NewEpoch)
	rec, flush, err := cliEvents(cfg, clients)
	if err != nil {
		return fail(stderr, "failover", err)
	}
	defer flush()
	id := "cli:" + userAtHost()
	x, err := failover.NewExecutor(failover.ExecutorConfig{Config: cfg, Clients: clients, Events: rec})
	if err != nil {
		return fail(stderr, "failover", err)
	}
	rctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	seen := primary.Read(rctx, clients[req.To], cfg.Keys().Primary())
	cancel()
	if seen.Err != nil && seen.ModRevision == 0 {
		return fail(stderr, "failover", fmt.Errorf("cannot read the primary record in %s's etcd: %w", req.To, seen.Err))
	}
	// An interrupt must not leave a failover half done once it has begun: the epoch bump, and then this
	// process's share of the convergence (until the result is recorded; the controllers do the rest).
	xctx := context.WithoutCancel(ctx)
	p, err := x.Execute(xctx, d, seen)
	if errors.Is(err, failover.ErrStale) {
		return fail(stderr, "failover", fmt.Errorf("%w; run `topoha status` and try again", err))
	}
	if p == nil {
		return fail(stderr, "failover", err)
	}
	if err != nil {
		fmt.Fprintf(stderr, "topoha failover: %v\n", err)
	}
	moved := primary.Record{DC: d.To, Epoch: p.Epoch}
	conv, cerr := failover.NewConverger(failover.ConvergerConfig{Config: func() *config.Config { return cfg }, Clients: clients, DC: "-", ID: id,
		Primary: func() (primary.Record, bool) { return moved, true }, Paused: func(context.Context) bool { return false }, Events: rec})
	if cerr == nil {
		// Interruptible while it waits for the convergence lock; once it holds it, it finishes the first
		// attempts.
		cerr = conv.Finish(ctx, moved)
	}
	if cerr != nil {
		return fail(stderr, "failover", fmt.Errorf("the epoch moved to %d but the promotions did not finish here: %w; controllers converge it once they run (`topoha status`)", p.Epoch, cerr))
	}
	rctx, cancel = context.WithTimeout(ctx, cfg.RequestTimeout)
	res := failover.ReadResult(rctx, clients[d.To], cfg.Keys().LastFailover())
	cancel()
	if res.Record == nil || res.Record.Epoch != p.Epoch {
		fmt.Fprintf(stdout, "the epoch moved to %d; a controller is converging the failover: `topoha status` shows its progress\n", p.Epoch)
		return exitOK
	}
	printResult(stdout, res.Record)
	if err != nil || len(res.Record.FailedShards()) > 0 {
		return exitDiffer
	}
	return exitOK
}

func printResult(w io.Writer, r *failover.Result) {
	fmt.Fprintf(w, "failover to %s at epoch %d took %s; locks deleted: %d\n", r.Decision.To, r.Epoch, r.FinishedAt.Sub(r.StartedAt).Round(time.Millisecond), len(r.Locks))
	for _, s := range r.Shards {
		if s.Confirmed {
			fmt.Fprintf(w, "  %s/%s: %s is primary (%d attempt(s), %s)\n", s.Keyspace, s.Shard, s.Tablet, s.Attempts, s.Duration.Round(time.Millisecond))
		} else {
			fmt.Fprintf(w, "  %s/%s: FAILED: %s\n", s.Keyspace, s.Shard, s.Error)
		}
	}
}
