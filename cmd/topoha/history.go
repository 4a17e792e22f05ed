package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/events"
)

func runHistory(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cf commonFlags
	fs := newFlagSet("history", stderr, &cf)
	asJSON := fs.Bool("json", false, "print a JSON array of events")
	limit := fs.Int("limit", 100, "print the newest N events (0: all that are kept)")
	if err := cf.parse(fs, args); err != nil {
		return exitCodeFor(err)
	}
	if *limit < 0 {
		return fail(stderr, "history", fmt.Errorf("--limit %d: use 0 (all) or a positive number", *limit))
	}
	cfg, clients, closeAll, err := openAll(cf.config)
	if err != nil {
		return fail(stderr, "history", err)
	}
	defer closeAll()
	evs, err := events.Read(ctx, clients, cfg.Keys().History(), cfg.RequestTimeout, *limit)
	if err != nil {
		// What one etcd holds is still worth showing while the other is lost.
		fmt.Fprintf(stderr, "topoha history: warning: %v\n", err)
		if len(evs) == 0 {
			return exitBadConfig
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if evs == nil {
			evs = []events.Event{}
		}
		if err := enc.Encode(evs); err != nil {
			return fail(stderr, "history", err)
		}
		return exitOK
	}
	if len(evs) == 0 {
		fmt.Fprintf(stdout, "no events under %s in either etcd\n", cfg.Keys().History())
	}
	events.WriteText(stdout, evs)
	return exitOK
}

// cliEvents returns a recorder of this command's actions into the history, and a function that writes
// what was recorded and stops it.
func cliEvents(cfg *config.Config, clients map[string]*clientv3.Client) (*events.Recorder, func(), error) {
	return startHistory(context.Background(), cfg, clients, "cli:"+userAtHost(), "-", nil, nil)
}
