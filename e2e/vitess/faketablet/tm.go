package main

import (
	"context"
	"fmt"
	"log"
	"sync"
	"time"

	"vitess.io/vitess/go/mysql/replication"
	"vitess.io/vitess/go/mysql/sqlerror"
	"vitess.io/vitess/go/protoutil"
	"vitess.io/vitess/go/vt/topo"
	"vitess.io/vitess/go/vt/topo/topoproto"
	"vitess.io/vitess/go/vt/topotools"
	"vitess.io/vitess/go/vt/vterrors"

	replicationdatapb "vitess.io/vitess/go/vt/proto/replicationdata"
	tabletmanagerdatapb "vitess.io/vitess/go/vt/proto/tabletmanagerdata"
	tabletmanagerservicepb "vitess.io/vitess/go/vt/proto/tabletmanagerservice"
	topodatapb "vitess.io/vitess/go/vt/proto/topodata"
)

// sourceUUID is the server UUID of the fake MySQL that every GTID in the shard comes from. All
// tablets report the same executed set, so ERS sees no errant GTIDs, every candidate is equally
// advanced, and it promotes the tablet named by --new-primary.
const sourceUUID = "3e11fa47-71ca-11e1-9e33-c80aa9429562"

// fakeTM implements the TabletManager RPCs that vtctld's reparents call. Every other RPC returns
// codes.Unimplemented from the embedded generated type, so a reparent that starts needing a new RPC
// fails loudly naming it instead of silently succeeding.
//
// ERS (v22) calls: StopReplicationAndGetStatus on every non-ignored tablet; ReadReparentJournalInfo on
// the candidates (errant GTID detection); WaitForPosition (relay logs applied); PromoteReplica, or
// InitPrimary for a shard that never had a primary; PopulateReparentJournal; SetReplicationSource on
// every other tablet. PRS calls GetGlobalStatusVars (reachability check), PrimaryPosition,
// SetReplicationSource, DemotePrimary, WaitForPosition, UndoDemotePrimary (on a failed demotion),
// PromoteReplica or InitPrimary, PopulateReparentJournal, SetReadWrite and RefreshState.
// ReplicationStatus, PrimaryStatus, ChangeType, Ping, InitReplica, FullStatus, SetReadOnly,
// StopReplication and StartReplication serve vtctldclient's other commands and older code paths.
type fakeTM struct {
	tabletmanagerservicepb.UnimplementedTabletManagerServer

	ts       *topo.Server
	alias    *topodatapb.TabletAlias
	position string // MySQL56/<uuid>:1-N, identical on every tablet of the shard

	mu          sync.Mutex // serializes RPCs, like vttablet's action lock
	tablet      *topodatapb.Tablet
	source      *topodatapb.TabletAlias // replication source, nil when primary or unknown
	readOnly    bool
	journalRows int32 // reparent journal rows this tablet has (written locally or replicated)
}

func newFakeTM(ts *topo.Server, tablet *topodatapb.Tablet, gtidCount int) *fakeTM {
	return &fakeTM{
		ts:       ts,
		alias:    tablet.Alias,
		tablet:   tablet,
		position: fmt.Sprintf("MySQL56/%s:1-%d", sourceUUID, gtidCount),
		readOnly: tablet.Type != topodatapb.TabletType_PRIMARY,
		// A tablet of an initialized shard has seen at least one reparent through replication.
		journalRows: 1,
	}
}

func (tm *fakeTM) tabletType() topodatapb.TabletType {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.tablet.Type
}

func (tm *fakeTM) aliasString() string { return topoproto.TabletAliasString(tm.alias) }

// checkPrimaryShip is vttablet's check at start (tm_init.go checkPrimaryShip/rebuildKeyspace): a
// tablet whose record says PRIMARY while the Shard record names another tablet with a newer term
// was deposed while it was away (an ERS it could not take part in), so it starts as a REPLICA.
func (tm *fakeTM) checkPrimaryShip(ctx context.Context) error {
	if tm.tablet.Type != topodatapb.TabletType_PRIMARY {
		return nil
	}
	si, err := tm.ts.GetShard(ctx, tm.tablet.Keyspace, tm.tablet.Shard)
	if err != nil {
		return err
	}
	if topoproto.TabletAliasEqual(si.PrimaryAlias, tm.alias) {
		return nil
	}
	log.Printf("shard %s/%s has primary %s: starting as REPLICA", tm.tablet.Keyspace, tm.tablet.Shard, topoproto.TabletAliasString(si.PrimaryAlias))
	t, err := topotools.ChangeType(ctx, tm.ts, tm.alias, topodatapb.TabletType_REPLICA, nil)
	if err != nil {
		return err
	}
	tm.tablet, tm.source, tm.readOnly = t, si.PrimaryAlias, true
	return nil
}

// changeType writes the new type to the Tablet record. For PRIMARY it then claims the Shard record,
// as vttablet does (tm_state.go ChangeTabletType, then shard_sync.go syncShardPrimary): vtctld's
// reparents never write primary_alias themselves, the promoted tablet does.
func (tm *fakeTM) changeType(ctx context.Context, newType topodatapb.TabletType) error {
	if newType != topodatapb.TabletType_PRIMARY {
		if tm.tablet.Type == newType {
			return nil
		}
		t, err := topotools.ChangeType(ctx, tm.ts, tm.alias, newType, nil)
		if err != nil {
			return fmt.Errorf("change %s to %v: %w", tm.aliasString(), newType, err)
		}
		tm.tablet = t
		log.Printf("%s is now %v", tm.aliasString(), newType)
		return nil
	}
	termStart := protoutil.TimeToProto(time.Now())
	t, err := topotools.ChangeType(ctx, tm.ts, tm.alias, newType, termStart)
	if err != nil {
		return fmt.Errorf("change %s to PRIMARY: %w", tm.aliasString(), err)
	}
	tm.tablet, tm.source, tm.readOnly = t, nil, false
	_, err = tm.ts.UpdateShardFields(ctx, t.Keyspace, t.Shard, func(si *topo.ShardInfo) error {
		if !protoutil.TimeFromProto(termStart).After(si.GetPrimaryTermStartTime()) {
			return topo.NewError(topo.NoUpdateNeeded, si.ShardName())
		}
		si.PrimaryAlias = tm.alias
		si.PrimaryTermStartTime = termStart
		return nil
	})
	if err != nil {
		return fmt.Errorf("update Shard record %s/%s: %w", t.Keyspace, t.Shard, err)
	}
	log.Printf("%s is now PRIMARY of %s/%s", tm.aliasString(), t.Keyspace, t.Shard)
	return nil
}

// notReplica is the error MySQL gives a primary asked for replica status; vtctld recognises it
// (sqlerror.ERNotReplica) and treats the tablet as a primary instead of an unreachable one.
func notReplica() error {
	return vterrors.ToGRPC(sqlerror.NewSQLError(sqlerror.ERNotReplica, sqlerror.SSUnknownSQLState, "no replication status"))
}

// status is the replica status of a tablet whose IO and SQL threads have applied everything.
func (tm *fakeTM) status(running bool) *replicationdatapb.Status {
	st := &replicationdatapb.Status{
		Position:         tm.position,
		RelayLogPosition: tm.position,
		SourceUuid:       sourceUUID,
		SourceHost:       "127.0.0.1",
		SourcePort:       3306,
		SourceUser:       "vt_repl",
		SourceServerId:   100,
		ConnectRetry:     10,
		UsingGtid:        true,
		IoState:          replicationStateStopped,
		SqlState:         replicationStateStopped,
	}
	if running {
		st.IoState, st.SqlState = replicationStateRunning, replicationStateRunning
	}
	return st
}

var (
	replicationStateStopped = int32(replication.ReplicationStateStopped)
	replicationStateRunning = int32(replication.ReplicationStateRunning)
)

func (tm *fakeTM) primaryStatus() *replicationdatapb.PrimaryStatus {
	return &replicationdatapb.PrimaryStatus{Position: tm.position, ServerUuid: sourceUUID}
}

func (tm *fakeTM) logRPC(name string, args ...any) {
	log.Printf("%s %s %v", tm.aliasString(), name, args)
}

// Ping is used by vtctldclient PingTablet and by health checks.
func (tm *fakeTM) Ping(_ context.Context, req *tabletmanagerdatapb.PingRequest) (*tabletmanagerdatapb.PingResponse, error) {
	return &tabletmanagerdatapb.PingResponse{Payload: req.Payload}, nil
}

// GetGlobalStatusVars is PRS's reachability check (verifyAllTabletsReachable asks for
// Innodb_buffer_pool_pages_data); any number will do.
func (tm *fakeTM) GetGlobalStatusVars(_ context.Context, req *tabletmanagerdatapb.GetGlobalStatusVarsRequest) (*tabletmanagerdatapb.GetGlobalStatusVarsResponse, error) {
	vals := map[string]string{}
	for _, v := range req.Variables {
		vals[v] = "1000"
	}
	return &tabletmanagerdatapb.GetGlobalStatusVarsResponse{StatusValues: vals}, nil
}

// ReplicationStatus: vtctld's ShardReplicationPositions and PRS's candidate choice.
func (tm *fakeTM) ReplicationStatus(context.Context, *tabletmanagerdatapb.ReplicationStatusRequest) (*tabletmanagerdatapb.ReplicationStatusResponse, error) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	if tm.tablet.Type == topodatapb.TabletType_PRIMARY {
		return nil, notReplica()
	}
	return &tabletmanagerdatapb.ReplicationStatusResponse{Status: tm.status(tm.source != nil)}, nil
}

// PrimaryStatus: the executed position of a primary.
func (tm *fakeTM) PrimaryStatus(context.Context, *tabletmanagerdatapb.PrimaryStatusRequest) (*tabletmanagerdatapb.PrimaryStatusResponse, error) {
	return &tabletmanagerdatapb.PrimaryStatusResponse{Status: tm.primaryStatus()}, nil
}

// PrimaryPosition: PRS snapshots the current primary's position, and reads the new primary's after
// a partial promotion.
func (tm *fakeTM) PrimaryPosition(context.Context, *tabletmanagerdatapb.PrimaryPositionRequest) (*tabletmanagerdatapb.PrimaryPositionResponse, error) {
	return &tabletmanagerdatapb.PrimaryPositionResponse{Position: tm.position}, nil
}

// WaitForPosition returns at once: every tablet already has the shard's whole (fixed) GTID set.
func (tm *fakeTM) WaitForPosition(_ context.Context, req *tabletmanagerdatapb.WaitForPositionRequest) (*tabletmanagerdatapb.WaitForPositionResponse, error) {
	tm.logRPC("WaitForPosition", req.Position)
	return &tabletmanagerdatapb.WaitForPositionResponse{}, nil
}

// StopReplicationAndGetStatus is ERS's first step on every reachable tablet. A primary answers
// ERNotReplica, after which ERS demotes it (DemotePrimary).
func (tm *fakeTM) StopReplicationAndGetStatus(_ context.Context, req *tabletmanagerdatapb.StopReplicationAndGetStatusRequest) (*tabletmanagerdatapb.StopReplicationAndGetStatusResponse, error) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.logRPC("StopReplicationAndGetStatus", req.StopReplicationMode)
	if tm.tablet.Type == topodatapb.TabletType_PRIMARY {
		return nil, notReplica()
	}
	before := tm.status(tm.source != nil)
	return &tabletmanagerdatapb.StopReplicationAndGetStatusResponse{
		Status: &replicationdatapb.StopReplicationStatus{Before: before, After: tm.status(false)},
	}, nil
}

// ReadReparentJournalInfo: ERS compares journal lengths to find lagging candidates.
func (tm *fakeTM) ReadReparentJournalInfo(context.Context, *tabletmanagerdatapb.ReadReparentJournalInfoRequest) (*tabletmanagerdatapb.ReadReparentJournalInfoResponse, error) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return &tabletmanagerdatapb.ReadReparentJournalInfoResponse{Length: tm.journalRows}, nil
}

// PromoteReplica makes this tablet the primary: Tablet record first, then the Shard record.
func (tm *fakeTM) PromoteReplica(ctx context.Context, req *tabletmanagerdatapb.PromoteReplicaRequest) (*tabletmanagerdatapb.PromoteReplicaResponse, error) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.logRPC("PromoteReplica", "semiSync", req.SemiSync)
	if err := tm.changeType(ctx, topodatapb.TabletType_PRIMARY); err != nil {
		return nil, vterrors.ToGRPC(err)
	}
	return &tabletmanagerdatapb.PromoteReplicaResponse{Position: tm.position}, nil
}

// InitPrimary is PromoteReplica for a shard that never had a primary (the first PRS or ERS).
func (tm *fakeTM) InitPrimary(ctx context.Context, req *tabletmanagerdatapb.InitPrimaryRequest) (*tabletmanagerdatapb.InitPrimaryResponse, error) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.logRPC("InitPrimary", "semiSync", req.SemiSync)
	if err := tm.changeType(ctx, topodatapb.TabletType_PRIMARY); err != nil {
		return nil, vterrors.ToGRPC(err)
	}
	return &tabletmanagerdatapb.InitPrimaryResponse{Position: tm.position}, nil
}

// PopulateReparentJournal: the new primary inserts a journal row that replicas then receive.
func (tm *fakeTM) PopulateReparentJournal(_ context.Context, req *tabletmanagerdatapb.PopulateReparentJournalRequest) (*tabletmanagerdatapb.PopulateReparentJournalResponse, error) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.logRPC("PopulateReparentJournal", req.ActionName, topoproto.TabletAliasString(req.PrimaryAlias))
	tm.journalRows++
	return &tabletmanagerdatapb.PopulateReparentJournalResponse{}, nil
}

// SetReplicationSource points this tablet at a new primary. A PRIMARY becomes a REPLICA first, as
// vttablet does: being told to replicate means another tablet was promoted.
func (tm *fakeTM) SetReplicationSource(ctx context.Context, req *tabletmanagerdatapb.SetReplicationSourceRequest) (*tabletmanagerdatapb.SetReplicationSourceResponse, error) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.logRPC("SetReplicationSource", topoproto.TabletAliasString(req.Parent))
	if tm.tablet.Type == topodatapb.TabletType_PRIMARY && !topoproto.TabletAliasEqual(req.Parent, tm.alias) {
		if err := tm.changeType(ctx, topodatapb.TabletType_REPLICA); err != nil {
			return nil, vterrors.ToGRPC(err)
		}
	}
	tm.source, tm.readOnly = req.Parent, true
	// The journal row written on the new primary reaches this tablet through replication.
	tm.journalRows++
	return &tabletmanagerdatapb.SetReplicationSourceResponse{}, nil
}

// InitReplica is the older (InitShardPrimary) way of attaching a replica.
func (tm *fakeTM) InitReplica(_ context.Context, req *tabletmanagerdatapb.InitReplicaRequest) (*tabletmanagerdatapb.InitReplicaResponse, error) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.logRPC("InitReplica", topoproto.TabletAliasString(req.Parent))
	tm.source, tm.readOnly = req.Parent, true
	tm.journalRows++
	return &tabletmanagerdatapb.InitReplicaResponse{}, nil
}

// DemotePrimary makes the primary read-only and returns its final position (PRS; and ERS for a
// reachable tablet that still thinks it is the primary). The type stays PRIMARY until
// SetReplicationSource, as in vttablet.
func (tm *fakeTM) DemotePrimary(context.Context, *tabletmanagerdatapb.DemotePrimaryRequest) (*tabletmanagerdatapb.DemotePrimaryResponse, error) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.logRPC("DemotePrimary")
	tm.readOnly = true
	return &tabletmanagerdatapb.DemotePrimaryResponse{PrimaryStatus: tm.primaryStatus()}, nil
}

// UndoDemotePrimary: PRS's rollback when the primary-elect failed to catch up.
func (tm *fakeTM) UndoDemotePrimary(context.Context, *tabletmanagerdatapb.UndoDemotePrimaryRequest) (*tabletmanagerdatapb.UndoDemotePrimaryResponse, error) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.logRPC("UndoDemotePrimary")
	tm.readOnly = false
	return &tabletmanagerdatapb.UndoDemotePrimaryResponse{}, nil
}

// ChangeType: vtctldclient ChangeTabletType (and ERS/PRS of older versions).
func (tm *fakeTM) ChangeType(ctx context.Context, req *tabletmanagerdatapb.ChangeTypeRequest) (*tabletmanagerdatapb.ChangeTypeResponse, error) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.logRPC("ChangeType", req.TabletType)
	if err := tm.changeType(ctx, req.TabletType); err != nil {
		return nil, vterrors.ToGRPC(err)
	}
	return &tabletmanagerdatapb.ChangeTypeResponse{}, nil
}

// SetReadWrite: PRS re-asserts it on a primary that is already the primary-elect.
func (tm *fakeTM) SetReadWrite(context.Context, *tabletmanagerdatapb.SetReadWriteRequest) (*tabletmanagerdatapb.SetReadWriteResponse, error) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.readOnly = false
	return &tabletmanagerdatapb.SetReadWriteResponse{}, nil
}

// SetReadOnly: vtctldclient SetWritable <tablet> false (topoha's fence_command).
func (tm *fakeTM) SetReadOnly(context.Context, *tabletmanagerdatapb.SetReadOnlyRequest) (*tabletmanagerdatapb.SetReadOnlyResponse, error) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.logRPC("SetReadOnly")
	tm.readOnly = true
	return &tabletmanagerdatapb.SetReadOnlyResponse{}, nil
}

// RefreshState re-reads the Tablet record, as vttablet does after an external topo change.
func (tm *fakeTM) RefreshState(ctx context.Context, _ *tabletmanagerdatapb.RefreshStateRequest) (*tabletmanagerdatapb.RefreshStateResponse, error) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	ti, err := tm.ts.GetTablet(ctx, tm.alias)
	if err != nil {
		return nil, vterrors.ToGRPC(err)
	}
	tm.tablet = ti.Tablet
	return &tabletmanagerdatapb.RefreshStateResponse{}, nil
}

// StopReplication and StartReplication: vtctldclient StopReplication/StartReplication.
func (tm *fakeTM) StopReplication(context.Context, *tabletmanagerdatapb.StopReplicationRequest) (*tabletmanagerdatapb.StopReplicationResponse, error) {
	return &tabletmanagerdatapb.StopReplicationResponse{}, nil
}

func (tm *fakeTM) StartReplication(context.Context, *tabletmanagerdatapb.StartReplicationRequest) (*tabletmanagerdatapb.StartReplicationResponse, error) {
	return &tabletmanagerdatapb.StartReplicationResponse{}, nil
}

// FullStatus: vtctldclient GetFullStatus, and VTOrc.
func (tm *fakeTM) FullStatus(context.Context, *tabletmanagerdatapb.FullStatusRequest) (*tabletmanagerdatapb.FullStatusResponse, error) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	fs := &replicationdatapb.FullStatus{
		ServerUuid:        sourceUUID,
		ServerId:          tm.alias.Uid,
		PrimaryStatus:     tm.primaryStatus(),
		Version:           "8.0.40-fake",
		VersionComment:    "topoha faketablet",
		ReadOnly:          tm.readOnly,
		SuperReadOnly:     tm.readOnly,
		GtidMode:          "ON",
		BinlogFormat:      "ROW",
		BinlogRowImage:    "FULL",
		LogBinEnabled:     true,
		LogReplicaUpdates: true,
	}
	if tm.tablet.Type != topodatapb.TabletType_PRIMARY {
		fs.ReplicationStatus = tm.status(tm.source != nil)
	}
	return &tabletmanagerdatapb.FullStatusResponse{Status: fs}, nil
}
