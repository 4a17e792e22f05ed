package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/topoha/topoha/witness"
)

func runWitness(ctx context.Context, args []string, _, stderr io.Writer) int {
	var cf commonFlags
	fs := newFlagSet("witness", stderr, &cf)
	listen := fs.String("listen", "", "HTTP address to serve the view on, e.g. 0.0.0.0:9465 (required)")
	host, _ := os.Hostname()
	id := fs.String("id", host, "this witness's name in its answers")
	if err := cf.parse(fs, args); err != nil {
		return exitCodeFor(err)
	}
	if *listen == "" {
		return fail(stderr, "witness", errors.New("--listen is required: the address controllers reach this witness at, listed in their failover.witnesses"))
	}
	log, err := cf.logger(stderr)
	if err != nil {
		return fail(stderr, "witness", err)
	}
	// Every DC's etcd may be down when a witness starts: reporting that is its job.
	cfg, clients, closeAll, err := openAll(cf.config)
	if err != nil {
		return fail(stderr, "witness", err)
	}
	defer closeAll()
	s, err := witness.NewServer(witness.ServerConfig{Config: cfg, Clients: clients, ID: *id, Addr: *listen, Logger: log.With("witness", *id)})
	if err != nil {
		return fail(stderr, "witness", err)
	}
	log.Info("witness serving", "id", *id, "http", s.Addr(), "dcs", cfg.DCNames())
	if err := s.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fail(stderr, "witness", fmt.Errorf("serve: %w", err))
	}
	return exitOK
}
