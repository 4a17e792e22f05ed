// Command fakepromote stands in for vtctldclient EmergencyReparentShard in tests: it records its
// arguments and, as Vitess does when it promotes a tablet, writes the new primary into the shard's
// Shard record in etcd, and PRIMARY into the tablet's own record if it has one. Its behaviour per attempt is chosen by -modes, so tests can make it fail, hang,
// or exit 1 after promoting.
//
//	fakepromote -etcd URL[,URL...] [-user NAME:PASSWORD] -root /vt -log FILE [-delay D] -modes ok|exit1|fail|hang|elsewhere[,...] KEYSPACE/SHARD TABLET
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/topoha/topoha/vitess"
)

func main() {
	endpoint := flag.String("etcd", "", "etcd endpoints holding the topo, comma-separated")
	user := flag.String("user", "", "etcd user as NAME:PASSWORD, when etcd has authentication on")
	root := flag.String("root", "/vt", "Vitess global root")
	logFile := flag.String("log", "", "file that records one line per run")
	modes := flag.String("modes", "ok", "comma-separated behaviour per attempt, the last repeating: ok, exit1 (promote, then exit 1), fail (exit 1 without promoting), hang, elsewhere (promote in the Shard record only: the tablet wrote its type into another etcd)")
	delay := flag.Duration("delay", 0, "how long each run works before it acts (a slow EmergencyReparentShard)")
	flag.Parse()
	if flag.NArg() != 2 || *endpoint == "" || *logFile == "" {
		fmt.Fprintln(os.Stderr, "usage: fakepromote -etcd URL -log FILE [-root /vt] [-modes ok,...] KEYSPACE/SHARD TABLET")
		os.Exit(2)
	}
	attempt := countLines(*logFile)
	list := strings.Split(*modes, ",")
	mode := list[min(attempt, len(list)-1)]
	f, err := os.OpenFile(*logFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Fprintf(f, "%s %s %s\n", mode, flag.Arg(0), flag.Arg(1))
	f.Close()

	time.Sleep(*delay)
	switch mode {
	case "hang":
		time.Sleep(time.Hour)
	case "fail":
		fmt.Println("EmergencyReparentShard failed: no valid candidates for emergency reparent")
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := vitess.PromoteAt(ctx, *endpoint, *user, *root, flag.Arg(0), flag.Arg(1), mode != "elsewhere"); err != nil {
		fmt.Fprintln(os.Stderr, "promote:", err)
		os.Exit(1)
	}
	if mode == "exit1" {
		fmt.Println("SetReplicationSource failed on dc1-0000000100 (the lost DC's tablet)")
		os.Exit(1)
	}
}

func countLines(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	for s := bufio.NewScanner(f); s.Scan(); {
		n++
	}
	return n
}
