// Command mirrorbench measures `topoha mirror` side by side with `etcdctl make-mirror` on the same two etcd
// servers, in one run: initial sync, catch-up throughput while the source takes writes at full speed, and
// end-to-end lag at a fixed write rate. bench/run.sh starts the servers and runs it; it prints a Markdown
// table.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

type options struct {
	src, dst       string
	etcdctl        string
	topoha         string
	keys           int
	valueSize      int
	loadFor        time.Duration
	loadWorkers    int
	lagRate        int
	lagFor         time.Duration
	catchUpLimit   time.Duration
	workDir        string
	skipMakeMirror bool
}

const prefix = "/vt/"

func main() {
	var o options
	flag.StringVar(&o.src, "src", "http://127.0.0.1:23790", "source etcd endpoint")
	flag.StringVar(&o.dst, "dst", "http://127.0.0.1:23890", "destination etcd endpoint")
	flag.StringVar(&o.etcdctl, "etcdctl", "etcdctl", "etcdctl binary (make-mirror)")
	flag.StringVar(&o.topoha, "topoha", "bin/topoha", "topoha binary")
	flag.IntVar(&o.keys, "keys", 100000, "keys for the initial sync")
	flag.IntVar(&o.valueSize, "value-size", 200, "bytes per value")
	flag.DurationVar(&o.loadFor, "load-for", 5*time.Second, "how long the source takes writes at full speed")
	flag.IntVar(&o.loadWorkers, "load-workers", 32, "concurrent writers for the full-speed load")
	flag.IntVar(&o.lagRate, "lag-rate", 3000, "puts per second for the lag measurement")
	flag.DurationVar(&o.lagFor, "lag-for", 10*time.Second, "duration of the lag measurement")
	flag.DurationVar(&o.catchUpLimit, "catch-up-limit", 5*time.Minute, "give up waiting for a mirror after this")
	flag.StringVar(&o.workDir, "work-dir", os.TempDir(), "where the topoha config is written")
	flag.BoolVar(&o.skipMakeMirror, "skip-make-mirror", false, "measure topoha only")
	flag.Parse()
	log.SetFlags(log.Ltime)
	if err := run(o); err != nil {
		log.Fatal(err)
	}
}

type result struct {
	tool            string
	initialSync     time.Duration
	initialRSSKiB   int64
	loadWrites      int64
	loadSourceRate  float64
	catchUp         time.Duration
	applyRate       float64
	lag             lagStats
	peakRSSKiB      int64
	downWrites      int64
	restartConverge time.Duration
}

type lagStats struct {
	samples       int
	p50, p99, max time.Duration
	sourceRate    float64
}

func run(o options) error {
	src, err := client(o.src)
	if err != nil {
		return err
	}
	dst, err := client(o.dst)
	if err != nil {
		return err
	}
	tools := []tool{topohaTool(o)}
	if !o.skipMakeMirror {
		tools = append([]tool{makeMirrorTool(o)}, tools...)
	}
	var results []result
	for _, t := range tools {
		r, err := measure(o, t, src, dst)
		if err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		results = append(results, r)
	}
	printTable(o, results)
	return nil
}

// tool starts one mirror process from the source to the destination.
type tool struct {
	name  string
	start func() (*exec.Cmd, error)
}

func makeMirrorTool(o options) tool {
	return tool{name: "etcdctl make-mirror", start: func() (*exec.Cmd, error) {
		cmd := exec.Command(o.etcdctl, "--endpoints", o.src, "make-mirror", "--prefix", prefix, "--dest-prefix", prefix, o.dst)
		cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
		return cmd, cmd.Start()
	}}
}

func topohaTool(o options) tool {
	return tool{name: "topoha mirror", start: func() (*exec.Cmd, error) {
		cfgPath := filepath.Join(o.workDir, "mirrorbench.yaml")
		cfg := fmt.Sprintf(`cluster: bench
initial_primary: dc1
dcs:
  dc1: {etcd: {endpoints: [%s]}}
  dc2: {etcd: {endpoints: [%s]}}
mirror: {prefix: /vt}
`, o.src, o.dst)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			return nil, err
		}
		cmd := exec.Command(o.topoha, "mirror", "--config", cfgPath, "--log-level", "warn")
		cmd.Stderr = os.Stderr
		return cmd, cmd.Start()
	}}
}

func measure(o options, t tool, src, dst *clientv3.Client) (result, error) {
	ctx := context.Background()
	r := result{tool: t.name}
	log.Printf("%s: preparing %d keys of %d bytes", t.name, o.keys, o.valueSize)
	for _, c := range []*clientv3.Client{src, dst} {
		if _, err := c.Delete(ctx, prefix, clientv3.WithPrefix()); err != nil {
			return r, err
		}
	}
	if _, err := dst.Delete(ctx, "/topoha/", clientv3.WithPrefix()); err != nil {
		return r, err
	}
	// Deleted keys stay in etcd's index until a compaction, and every range read walks them: compact, so
	// that each tool starts from the same state whatever ran before it.
	for _, c := range []*clientv3.Client{src, dst} {
		resp, err := c.Get(ctx, "compact")
		if err != nil {
			return r, err
		}
		if _, err := c.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
			return r, err
		}
	}
	if err := load(ctx, src, o.keys, o.valueSize); err != nil {
		return r, err
	}

	// Initial sync: from the process start until the destination holds every key.
	start := time.Now()
	cmd, err := t.start()
	if err != nil {
		return r, err
	}
	defer stop(cmd)
	if err := waitCount(ctx, dst, int64(o.keys), o.catchUpLimit); err != nil {
		return r, fmt.Errorf("initial sync: %w", err)
	}
	r.initialSync = time.Since(start)
	r.initialRSSKiB = peakRSS(cmd.Process.Pid)
	log.Printf("%s: initial sync of %d keys in %s", t.name, o.keys, r.initialSync.Round(time.Millisecond))

	// Catch-up: the source takes writes at full speed for loadFor; then a marker. Apply rate is the writes
	// divided by the time until the marker is visible in the destination.
	log.Printf("%s: full-speed load for %s", t.name, o.loadFor)
	loadStart := time.Now()
	n, err := fullSpeedLoad(ctx, src, o)
	if err != nil {
		return r, err
	}
	loadTime := time.Since(loadStart)
	r.loadWrites = n
	r.loadSourceRate = float64(n) / loadTime.Seconds()
	marker := strconv.FormatInt(time.Now().UnixNano(), 10)
	if _, err := src.Put(ctx, prefix+"marker", marker); err != nil {
		return r, err
	}
	if err := waitValue(ctx, dst, prefix+"marker", marker, o.catchUpLimit); err != nil {
		r.catchUp = -1
		log.Printf("%s: did not catch up: %v", t.name, err)
	} else {
		r.catchUp = time.Since(loadStart)
		r.applyRate = float64(n+1) / r.catchUp.Seconds()
		log.Printf("%s: %d writes at %.0f/s caught up after %s (%.0f/s)", t.name, n, r.loadSourceRate, r.catchUp.Round(time.Millisecond), r.applyRate)
	}

	// Lag at a fixed rate: probes written among the paced load; the time from each probe's acknowledgement
	// until a destination watch sees it.
	if r.catchUp > 0 {
		r.lag, err = measureLag(ctx, src, dst, o)
		if err != nil {
			return r, err
		}
		log.Printf("%s: lag at %d puts/s: p50 %s p99 %s max %s", t.name, o.lagRate, r.lag.p50, r.lag.p99, r.lag.max)
	}
	r.peakRSSKiB = peakRSS(cmd.Process.Pid)

	// Restart after downtime: the tool is stopped while the source takes writes at full speed, then
	// started; the time until the destination is current again, and the writes replayed per second.
	stop(cmd)
	log.Printf("%s: stopped; full-speed load for %s", t.name, o.loadFor)
	down, err := fullSpeedLoad(ctx, src, o)
	if err != nil {
		return r, err
	}
	marker = "restart-" + strconv.FormatInt(time.Now().UnixNano(), 10)
	if _, err := src.Put(ctx, prefix+"marker", marker); err != nil {
		return r, err
	}
	restart := time.Now()
	cmd, err = t.start()
	if err != nil {
		return r, err
	}
	defer stop(cmd)
	if err := waitValue(ctx, dst, prefix+"marker", marker, o.catchUpLimit); err != nil {
		log.Printf("%s: did not converge after the restart: %v", t.name, err)
		return r, nil
	}
	r.downWrites = down
	r.restartConverge = time.Since(restart)
	log.Printf("%s: %d writes made while down; current again %s after the restart", t.name, down, r.restartConverge.Round(time.Millisecond))
	return r, nil
}

func client(ep string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		MaxCallSendMsgSize: 8 << 20})
}

func load(ctx context.Context, c *clientv3.Client, n, size int) error {
	value := strings.Repeat("x", size)
	for i := 0; i < n; i += 128 {
		ops := make([]clientv3.Op, 0, 128)
		for j := i; j < min(i+128, n); j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("%skeyspaces/ks/shards/%08d", prefix, j), value))
		}
		if _, err := c.Txn(ctx).Then(ops...).Commit(); err != nil {
			return err
		}
	}
	return nil
}

func fullSpeedLoad(ctx context.Context, c *clientv3.Client, o options) (int64, error) {
	var n atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(o.loadFor)
	value := strings.Repeat("y", o.valueSize)
	var wg sync.WaitGroup
	for w := 0; w < o.loadWorkers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				key := fmt.Sprintf("%sload/%02d/%06d", prefix, w, i%5000)
				if _, err := c.Put(ctx, key, value); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				n.Add(1)
			}
		}(w)
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return n.Load(), err
	}
	return n.Load(), nil
}

func measureLag(ctx context.Context, src, dst *clientv3.Client, o options) (lagStats, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Probes are numbered writes of one key. A mirror may coalesce two of them into one write, so probe n
	// counts as visible when any value >= n is seen. The watch can see a value before its Put returned.
	var mu sync.Mutex
	var acked []time.Time // acked[n-1]: when the Put of probe n returned
	var seen []time.Time  // seen[n-1]: when probe n or a later one was first seen on the destination
	wch := dst.Watch(wctx, prefix+"probe")
	go func() {
		for resp := range wch {
			now := time.Now()
			mu.Lock()
			for _, ev := range resp.Events {
				n, err := strconv.Atoi(strings.TrimPrefix(string(ev.Kv.Value), "probe-"))
				if err != nil {
					continue
				}
				for len(seen) < n {
					seen = append(seen, now)
				}
			}
			mu.Unlock()
		}
	}()

	tokens := make(chan int, o.lagRate)
	var writes atomic.Int64
	var wg sync.WaitGroup
	value := strings.Repeat("z", o.valueSize)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range tokens {
				if _, err := src.Put(ctx, fmt.Sprintf("%slag/%06d", prefix, i%5000), value); err == nil {
					writes.Add(1)
				}
			}
		}()
	}
	start := time.Now()
	interval := time.Second / time.Duration(o.lagRate)
	tick := time.NewTicker(10 * time.Millisecond)
	sent := 0
	nextProbe := start
	for now := range tick.C {
		if now.Sub(start) > o.lagFor {
			break
		}
		for due := int(now.Sub(start) / interval); sent < due; sent++ {
			tokens <- sent
		}
		if now.After(nextProbe) {
			mu.Lock()
			n := len(acked) + 1
			mu.Unlock()
			if _, err := src.Put(ctx, prefix+"probe", fmt.Sprintf("probe-%d", n)); err != nil {
				return lagStats{}, err
			}
			mu.Lock()
			acked = append(acked, time.Now())
			mu.Unlock()
			nextProbe = now.Add(100 * time.Millisecond)
		}
	}
	tick.Stop()
	close(tokens)
	wg.Wait()
	rate := float64(writes.Load()) / time.Since(start).Seconds()
	deadline := time.Now().Add(o.catchUpLimit)
	for {
		mu.Lock()
		done := len(seen) >= len(acked)
		mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(acked) == 0 || len(seen) < len(acked) {
		return lagStats{}, fmt.Errorf("%d of %d probes reached the destination", len(seen), len(acked))
	}
	lags := make([]time.Duration, len(acked))
	for i := range acked {
		lags[i] = max(0, seen[i].Sub(acked[i]))
	}
	slices.Sort(lags)
	pct := func(p float64) time.Duration {
		return lags[min(len(lags)-1, int(p*float64(len(lags))))].Round(time.Millisecond)
	}
	return lagStats{samples: len(lags), p50: pct(0.5), p99: pct(0.99), max: lags[len(lags)-1].Round(time.Millisecond), sourceRate: rate}, nil
}

func waitCount(ctx context.Context, c *clientv3.Client, want int64, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		resp, err := c.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil && resp.Count >= want {
			return nil
		}
		if time.Now().After(deadline) {
			got := int64(-1)
			if resp != nil {
				got = resp.Count
			}
			return fmt.Errorf("destination has %d of %d keys after %s", got, want, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitValue(ctx context.Context, c *clientv3.Client, key, want string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		resp, err := c.Get(ctx, key)
		if err == nil && len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not %q after %s", key, want, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func stop(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// peakRSS is the process's high-water resident set size (VmHWM) in KiB.
func peakRSS(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return -1
}

func printTable(o options, rs []result) {
	fmt.Printf("\n%d keys of %d bytes; full-speed loads of %s with %d writers; lag at %d puts/s for %s\n\n",
		o.keys, o.valueSize, o.loadFor, o.loadWorkers, o.lagRate, o.lagFor)
	header := "| |"
	rule := "|---|"
	for _, r := range rs {
		header += " " + r.tool + " |"
		rule += "---|"
	}
	fmt.Println(header)
	fmt.Println(rule)
	row := func(name string, cell func(r result) string) {
		line := "| " + name + " |"
		for _, r := range rs {
			line += " " + cell(r) + " |"
		}
		fmt.Println(line)
	}
	dur := func(d time.Duration) string {
		if d <= 0 {
			return "did not finish"
		}
		return d.Round(time.Millisecond).String()
	}
	row(fmt.Sprintf("initial sync of %d keys", o.keys), func(r result) string {
		return fmt.Sprintf("%s (%.0f keys/s)", dur(r.initialSync), float64(o.keys)/r.initialSync.Seconds())
	})
	row("full-speed load: source writes/s", func(r result) string { return fmt.Sprintf("%.0f", r.loadSourceRate) })
	row("full-speed load: applied/s until caught up", func(r result) string {
		if r.catchUp <= 0 {
			return "did not catch up"
		}
		return fmt.Sprintf("%.0f (caught up %s after the load began)", r.applyRate, dur(r.catchUp))
	})
	row(fmt.Sprintf("lag at %d puts/s: p50 / p99 / max", o.lagRate), func(r result) string {
		return fmt.Sprintf("%s / %s / %s", r.lag.p50, r.lag.p99, r.lag.max)
	})
	row("restart after downtime: current again after", func(r result) string {
		if r.restartConverge <= 0 {
			return "did not converge"
		}
		return fmt.Sprintf("%s (%d writes made while down: %.0f/s)", dur(r.restartConverge), r.downWrites, float64(r.downWrites)/r.restartConverge.Seconds())
	})
	row("peak RSS: after the initial sync / after the loads", func(r result) string {
		return fmt.Sprintf("%d / %d MiB", r.initialRSSKiB/1024, r.peakRSSKiB/1024)
	})
	if len(rs) == 2 && rs[0].initialSync > 0 && rs[1].initialSync > 0 {
		fmt.Printf("\ninitial sync: topoha %.1fx faster", rs[0].initialSync.Seconds()/rs[1].initialSync.Seconds())
		if rs[0].applyRate > 0 && rs[1].applyRate > 0 {
			fmt.Printf("; apply rate under full-speed load: %.1fx", rs[1].applyRate/rs[0].applyRate)
		}
		if rs[0].restartConverge > 0 && rs[1].restartConverge > 0 {
			fmt.Printf("; current again after a restart: %.1fx sooner", rs[0].restartConverge.Seconds()/rs[1].restartConverge.Seconds())
		}
		fmt.Println()
	}
}
