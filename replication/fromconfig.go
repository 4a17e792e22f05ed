package replication

import (
	"log/slog"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/vitess"
)

// ConfigFor is the mirror from DC from to DC to as the config describes it: prefixes, exclusions,
// checkpoint, request_timeout, and the CellInfo rewrite when mirror.cell_info_rewrite is on. The caller
// adds the fence and the metrics.
func ConfigFor(c *config.Config, clients map[string]*clientv3.Client, from, to string, log *slog.Logger) Config {
	rc := Config{
		Source: clients[from], Dest: clients[to],
		Prefix: c.Mirror.SourceKeyPrefix(), DestPrefix: c.Mirror.DestKeyPrefix(), Exclude: c.MirrorExclude(to),
		CheckpointKey: c.Keys().MirrorCheckpoint(), RequestTimeout: c.RequestTimeout, Logger: log,
	}
	if c.Mirror.CellInfoRewrite {
		rc.Rewrite = cellInfoRewrite(c, to, log)
	}
	return rc
}

// cellInfoRewrite points every cell's CellInfo in DC to's etcd at to's own etcd (dcs.<to>.topo_address),
// so that the DR side's Vitess reads every cell, the lost one included, from the copy next to it:
// EmergencyReparentShard fails if any cell's topo does not answer.
func cellInfoRewrite(c *config.Config, to string, log *slog.Logger) *Rewrite {
	address := c.DCs[to].TopoAddress
	src, dst := c.Mirror.SourceKeyPrefix(), c.Mirror.DestKeyPrefix()
	// A cell root inside the mirrored prefix moves with it when dest_prefix differs.
	mapRoot := func(root string) string {
		if rest, ok := strings.CutPrefix(root+"/", src); ok {
			return strings.TrimSuffix(dst+rest, "/")
		}
		return root
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Rewrite{
		Name: "cell_info_rewrite server_address=" + address,
		Apply: func(key string, v []byte) []byte {
			if _, ok := vitess.CellOfCellInfoKey(c.Vitess.GlobalRoot, key); !ok {
				return v
			}
			out, err := vitess.RewriteCellInfo(v, address, mapRoot)
			if err != nil {
				// Vitess cannot read it either: copied as it is, and the pre-flight check reports it.
				log.Warn("mirror: a CellInfo record is not one; copied unchanged", "key", key, "err", err)
				return v
			}
			return out
		},
	}
}
