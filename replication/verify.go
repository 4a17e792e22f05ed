package replication

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Kinds of Difference.
const (
	Missing   = "missing"   // in the source, not in the destination
	Extra     = "extra"     // in the destination, not in the source
	Different = "different" // in both, with different values
)

// Difference is one key on which source and destination disagree. Key is the source key.
type Difference struct {
	Key  string `json:"key"`
	Kind string `json:"kind"`
}

// Report is the outcome of Verify.
type Report struct {
	Equal          bool  `json:"equal"`
	SourceRevision int64 `json:"source_revision"`
	DestRevision   int64 `json:"destination_revision"`
	// AtCheckpoint says the source was read at the revision the destination's checkpoint names, which
	// makes the comparison exact even while a mirror is writing.
	AtCheckpoint bool `json:"at_checkpoint"`
	// Syncing says a full sync was under way: differences are expected until it ends.
	Syncing         bool         `json:"syncing"`
	KeysCompared    int          `json:"keys_compared"`
	DifferenceCount int          `json:"difference_count"`
	Differences     []Difference `json:"differences"` // at most the limit given to Verify
	Notes           []string     `json:"notes,omitempty"`
}

// Verify compares the mirrored keys of source and destination one by one, with the same rules as the
// mirror (exclusions, leased keys). It lists up to maxListed differences and counts all of them.
//
// When the destination holds a streaming checkpoint of this source and scope, the destination is read at
// one revision and the source at the revision that checkpoint names, so a mirror applying changes during
// the comparison does not show up as differences.
func Verify(ctx context.Context, cfg Config, maxListed int) (*Report, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	sc := cfg.scope()
	cp, _, destRev, err := readCheckpoint(ctx, cfg.Dest, cfg.CheckpointKey, cfg.RequestTimeout, 0)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	head, err := cfg.Source.Get(cctx, cfg.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return nil, fmt.Errorf("read source: %w", err)
	}

	rep := &Report{DestRevision: destRev, Differences: []Difference{}}
	var sourceRev int64
	switch {
	case cp == nil:
		rep.Notes = append(rep.Notes, "the destination has no mirror checkpoint; compared the latest revisions of both")
	case cp.ClusterID != clusterIDString(head.Header.ClusterId) || cp.Scope != sc.fingerprint():
		rep.Notes = append(rep.Notes, "the destination's checkpoint is for another source or scope; compared the latest revisions of both")
	case cp.Sync != nil:
		rep.Syncing = true
		rep.Notes = append(rep.Notes, fmt.Sprintf("a full sync at source revision %d is under way; differences are expected until it ends", cp.Sync.Revision))
	default:
		sourceRev = cp.Revision
	}

	pageSize := int64(cfg.PageSize)
	newReaders := func(srcRev int64) (*rangeReader, *rangeReader) {
		src := &rangeReader{cli: cfg.Source, next: cfg.Prefix, end: clientv3.GetPrefixRangeEnd(cfg.Prefix), rev: srcRev, pin: true, pageSize: pageSize, timeout: cfg.RequestTimeout}
		dst := &rangeReader{cli: cfg.Dest, next: cfg.DestPrefix, end: clientv3.GetPrefixRangeEnd(cfg.DestPrefix), rev: destRev, pin: true, pageSize: pageSize, timeout: cfg.RequestTimeout}
		return src, dst
	}
	visit := func(c change) error {
		d := Difference{Key: c.srcKey, Kind: Different}
		switch {
		case c.dst == nil:
			d.Kind = Missing
		case c.src == nil:
			d.Kind = Extra
		}
		rep.DifferenceCount++
		if len(rep.Differences) < maxListed {
			rep.Differences = append(rep.Differences, d)
		}
		return nil
	}
	src, dst := newReaders(sourceRev)
	rep.KeysCompared, err = sc.diff(ctx, src, dst, visit)
	if sourceRev != 0 && isCompacted(err) {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the source is compacted past the checkpoint revision %d; compared its latest revision, so changes in flight can show as differences", sourceRev))
		*rep = Report{DestRevision: destRev, Differences: []Difference{}, Notes: rep.Notes}
		src, dst = newReaders(0)
		rep.KeysCompared, err = sc.diff(ctx, src, dst, visit)
	}
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	rep.SourceRevision = src.rev
	rep.AtCheckpoint = sourceRev != 0 && src.rev == sourceRev
	rep.Equal = rep.DifferenceCount == 0
	return rep, nil
}
