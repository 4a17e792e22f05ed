// Command faketablet stands in for vttablet (and the MySQL behind it) in topoha's end-to-end tests.
//
// It serves the Vitess TabletManager gRPC service for one tablet, with just enough behaviour for
// vtctld's EmergencyReparentShard and PlannedReparentShard to run to completion against it, and it
// keeps the tablet's topo records the way vttablet does: through the Vitess topo API (etcd2), so
// every record it writes is a real protobuf at its real path.
//
//	faketablet register --topo-global-server-address ADDR --alias dc2-0000000101 --keyspace commerce --shard 0 --port 16101
//	faketablet serve    --topo-global-server-address ADDR --alias dc2-0000000101 --port 16101
//
// register creates the Tablet record (cell-local <cell root>/tablets/<alias>/Tablet) and adds the
// tablet to the shard's ShardReplication node, as vttablet's tablet init does; it only creates
// REPLICA tablets, like vttablet's --init_tablet_type: the first primary of a shard is elected with
// PlannedReparentShard (which calls InitPrimary here). serve answers the RPCs; it writes the topo
// only when a reparent changes the tablet's type, and at start when its record says PRIMARY while
// the Shard record names a newer primary (vttablet's check at start, so a returning old primary
// comes back as a REPLICA).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"vitess.io/vitess/go/vt/topo"
	_ "vitess.io/vitess/go/vt/topo/etcd2topo" // registers the "etcd2" topo implementation
	"vitess.io/vitess/go/vt/topo/topoproto"

	tabletmanagerservicepb "vitess.io/vitess/go/vt/proto/tabletmanagerservice"
	topodatapb "vitess.io/vitess/go/vt/proto/topodata"
)

func usage() {
	fmt.Fprintf(os.Stderr, `usage:
  faketablet register [flags]   create the Tablet record and ShardReplication entry, then exit
  faketablet serve [flags]      serve TabletManager gRPC for one tablet until SIGTERM/SIGINT
run "faketablet register -h" or "faketablet serve -h" for the flags
`)
	os.Exit(2)
}

func main() {
	// Vitess's logutil (imported through the topo packages) redirects the standard logger into glog,
	// and glog writes files under /tmp by default. Log to stderr instead, both ours and Vitess's.
	log.SetOutput(os.Stderr)
	log.SetPrefix("")
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	if f := flag.Lookup("logtostderr"); f != nil {
		_ = f.Value.Set("true")
	}
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "register":
		err = runRegister(os.Args[2:])
	case "serve":
		err = runServe(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		log.Printf("faketablet %s: %v", os.Args[1], err)
		os.Exit(1)
	}
}

// topoFlags are the flags every subcommand needs to reach the global topo; the names follow
// vttablet's --topo_global_server_address and --topo_global_root.
type topoFlags struct {
	server string
	root   string
}

func (t *topoFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.server, "topo-global-server-address", "", "etcd address of the global topo (host:port; the etcd of this tablet's DC, or the global topo VIP)")
	fs.StringVar(&t.root, "topo-global-root", "/vt", "root of the global topo in that etcd")
}

func (t *topoFlags) open() (*topo.Server, error) {
	if t.server == "" {
		return nil, fmt.Errorf("--topo-global-server-address is required")
	}
	return topo.OpenServer("etcd2", t.server, t.root)
}

func parseAlias(s string) (*topodatapb.TabletAlias, error) {
	if s == "" {
		return nil, fmt.Errorf("--alias is required (e.g. dc2-0000000101)")
	}
	return topoproto.ParseTabletAlias(s)
}

func runRegister(args []string) error {
	fs := flag.NewFlagSet("register", flag.ExitOnError)
	var tf topoFlags
	tf.register(fs)
	aliasStr := fs.String("alias", "", "tablet alias, <cell>-<uid>")
	keyspace := fs.String("keyspace", "", "keyspace of the tablet")
	shard := fs.String("shard", "", "shard of the tablet (0, -80, 80-, ...)")
	hostname := fs.String("hostname", "127.0.0.1", "host vtctld dials for this tablet's gRPC")
	port := fs.Int("port", 0, "gRPC port that `faketablet serve` for this tablet listens on")
	_ = fs.Parse(args)

	alias, err := parseAlias(*aliasStr)
	if err != nil {
		return err
	}
	if *keyspace == "" || *shard == "" || *port == 0 {
		return fmt.Errorf("--keyspace, --shard and --port are required")
	}
	ts, err := tf.open()
	if err != nil {
		return err
	}
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return registerTablet(ctx, ts, alias, *keyspace, *shard, *hostname, int32(*port))
}

// registerTablet writes the record vttablet's tablet init writes (tm_init.go buildTabletFromInput and
// createTabletRecord): a REPLICA with its key range, host and ports. An existing record for the same
// keyspace/shard is kept and only gets the new host and port, as vttablet does on a restart.
func registerTablet(ctx context.Context, ts *topo.Server, alias *topodatapb.TabletAlias, keyspace, shard, hostname string, port int32) error {
	// vttablet refuses to start in a shard that does not exist; so do we.
	if _, err := ts.GetShard(ctx, keyspace, shard); err != nil {
		return fmt.Errorf("shard %s/%s: %w (create it first: vtctldclient CreateKeyspace / CreateShard)", keyspace, shard, err)
	}
	shard, keyRange, err := topo.ValidateShardName(shard)
	if err != nil {
		return err
	}
	tablet := &topodatapb.Tablet{
		Alias:    alias,
		Hostname: hostname,
		// "grpc" is the port vtctld's tmclient dials; "vt" (vttablet's HTTP port) is only shown.
		PortMap:  map[string]int32{"vt": port, "grpc": port},
		Keyspace: keyspace,
		Shard:    shard,
		KeyRange: keyRange,
		Type:     topodatapb.TabletType_REPLICA,
		// MySQL host/port: shown by GetTablets, never dialled by vtctld's reparents.
		MysqlHostname: hostname,
		MysqlPort:     3306,
		Tags:          map[string]string{"fake": "topoha-e2e"},
	}
	err = ts.CreateTablet(ctx, tablet)
	if topo.IsErrType(err, topo.NodeExists) {
		old, gerr := ts.GetTablet(ctx, alias)
		if gerr != nil {
			return gerr
		}
		if old.Keyspace != keyspace || old.Shard != shard {
			return fmt.Errorf("tablet %s already exists in %s/%s", topoproto.TabletAliasString(alias), old.Keyspace, old.Shard)
		}
		_, err = ts.UpdateTabletFields(ctx, alias, func(t *topodatapb.Tablet) error {
			t.Hostname, t.PortMap, t.MysqlHostname = hostname, tablet.PortMap, hostname
			return nil
		})
		if err == nil {
			// CreateTablet added the ShardReplication entry the first time; make sure it is there.
			err = topo.UpdateTabletReplicationData(ctx, ts, old.Tablet)
		}
	}
	if err != nil {
		return fmt.Errorf("register %s: %w", topoproto.TabletAliasString(alias), err)
	}
	log.Printf("registered %s in %s/%s at %s:%d", topoproto.TabletAliasString(alias), keyspace, shard, hostname, port)
	return nil
}

func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	var tf topoFlags
	tf.register(fs)
	aliasStr := fs.String("alias", "", "tablet alias, <cell>-<uid>; its Tablet record must exist (faketablet register)")
	host := fs.String("listen-host", "127.0.0.1", "address to listen on")
	port := fs.Int("port", 0, "gRPC port; 0 means the port in the tablet record's port_map[grpc]")
	gtidCount := fs.Int("gtid-count", 100, "N in the fake executed GTID set MySQL56/<uuid>:1-N every tablet of the shard reports")
	_ = fs.Parse(args)

	alias, err := parseAlias(*aliasStr)
	if err != nil {
		return err
	}
	ts, err := tf.open()
	if err != nil {
		return err
	}
	defer ts.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	ti, err := ts.GetTablet(ctx, alias)
	if err != nil {
		cancel()
		return fmt.Errorf("read Tablet record of %s: %w (run faketablet register first)", topoproto.TabletAliasString(alias), err)
	}
	tm := newFakeTM(ts, ti.Tablet, *gtidCount)
	if err := tm.checkPrimaryShip(ctx); err != nil {
		cancel()
		return err
	}
	cancel()

	if *port == 0 {
		*port = int(ti.PortMap["grpc"])
	}
	lis, err := net.Listen("tcp", net.JoinHostPort(*host, fmt.Sprint(*port)))
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	tabletmanagerservicepb.RegisterTabletManagerServer(srv, tm)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		srv.Stop()
	}()
	log.Printf("serving %s (%s/%s, %v) on %s", topoproto.TabletAliasString(alias), ti.Keyspace, ti.Shard, tm.tabletType(), lis.Addr())
	return srv.Serve(lis)
}
