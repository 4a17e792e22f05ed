package config

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/topoha/topoha/keys"
)

// PermissionsDoc is where docs/operations.md lists the grants of Grants, for error messages.
const PermissionsDoc = "docs/operations.md#etcd-permissions"

// Grant is one permission topoha's etcd user needs in every DC's etcd: either DC may be the primary (the
// mirror's source) or the DR side (its destination), so both get the same grants.
type Grant struct {
	// Prefix is a key prefix, as `etcdctl role grant-permission --prefix=true` takes it.
	Prefix string
	// Perm is "read" or "readwrite".
	Perm string
	// Why says what needs it.
	Why string
}

// Grants are the permissions topoha's user needs, the longest prefix first: what docs/operations.md
// explains and what an error about a refused request names.
func (c *Config) Grants() []Grant {
	gs := []Grant{{Prefix: keys.Dir + c.Cluster + "/", Perm: "readwrite",
		Why: "topoha's own records: primary, paused, requests, election, history, failover progress, fence, mirror checkpoint"}}
	covered := func(prefix, perm string) bool {
		return slices.ContainsFunc(gs, func(g Grant) bool {
			return strings.HasPrefix(prefix, g.Prefix) && (perm == "read" || g.Perm == "readwrite")
		})
	}
	add := func(prefix, perm, why string) {
		if !covered(prefix, perm) {
			gs = append(gs, Grant{Prefix: prefix, Perm: perm, Why: why})
		}
	}
	add(c.Mirror.DestKeyPrefix(), "readwrite", "the mirror's destination (writes, and deletes during a full sync)")
	add(c.Mirror.SourceKeyPrefix(), "read", "the mirror's source")
	add(c.Vitess.GlobalRoot+"/", "readwrite", "the failover deletes Vitess's lock keys (keys without a lease) below vitess.global_root, and reads the Shard records")
	for _, dc := range c.DCNames() {
		for _, root := range c.DCs[dc].CellRoots {
			add(root+"/", "read", "shard discovery and the failover's confirmation read the tablet records of dcs."+dc+".cell_roots")
		}
	}
	slices.SortStableFunc(gs, func(a, b Grant) int { return len(b.Prefix) - len(a.Prefix) })
	return gs
}

// grantFor is the grant that covers key, the longest first; ok is false when none does.
func grantFor(grants []Grant, key string) (Grant, bool) {
	for _, g := range grants {
		if strings.HasPrefix(key, g.Prefix) {
			return g, true
		}
	}
	return Grant{}, false
}

// PermissionError is etcd's refusal of a request for lack of permission, told in terms of topoha's
// config: which user, which key, which grant is missing. errors.Is(err, rpctypes.ErrPermissionDenied)
// holds.
type PermissionError struct {
	User string
	// Op is what was refused: "a read of", "a write to", "a delete of", or "a transaction writing",
	// "deleting" or "reading" (see describeRequest).
	Op  string
	Key string
	// Need is the grant that covers Key, if topoha knows one.
	Need    Grant
	HasNeed bool
}

func (e *PermissionError) Error() string {
	need := "no prefix topoha uses covers it: check the key"
	if e.HasNeed {
		need = "the role needs " + e.Need.Perm + " on " + e.Need.Prefix
	}
	return fmt.Sprintf("etcd refused user %s %s %s: permission denied; %s (%s)", e.User, e.Op, e.Key, need, PermissionsDoc)
}

func (e *PermissionError) Unwrap() error { return rpctypes.ErrPermissionDenied }

// explainPermissions is a unary interceptor that turns etcd's bare "permission denied" into a
// PermissionError. It runs inside the client's retry interceptor, which passes the error on unchanged.
func explainPermissions(user string, grants []Grant) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if err == nil || !errors.Is(rpctypes.Error(err), rpctypes.ErrPermissionDenied) {
			return err
		}
		op, key := describeRequest(req)
		if key == "" {
			return err
		}
		need, ok := grantFor(grants, key)
		return &PermissionError{User: user, Op: op, Key: key, Need: need, HasNeed: ok}
	}
}

// describeRequest names what a KV request does and the first key it touches that needs the most: a
// transaction is named by its first write, else its first read.
func describeRequest(req any) (op, key string) {
	switch r := req.(type) {
	case *etcdserverpb.RangeRequest:
		return "a read of", string(r.Key)
	case *etcdserverpb.PutRequest:
		return "a write to", string(r.Key)
	case *etcdserverpb.DeleteRangeRequest:
		return "a delete of", string(r.Key)
	case *etcdserverpb.TxnRequest:
		var read string
		for _, op := range slices.Concat(r.Success, r.Failure) {
			switch {
			case op.GetRequestPut() != nil:
				return "a transaction writing", string(op.GetRequestPut().Key)
			case op.GetRequestDeleteRange() != nil:
				return "a transaction deleting", string(op.GetRequestDeleteRange().Key)
			case op.GetRequestRange() != nil && read == "":
				read = string(op.GetRequestRange().Key)
			}
		}
		if read == "" && len(r.Compare) > 0 {
			read = string(r.Compare[0].Key)
		}
		return "a transaction reading", read
	}
	return "", ""
}

// EtcdClientConfig is the client configuration of dc's etcd: Etcd.ClientConfig, whose errors about a
// refused permission name the grant that is missing.
func (c *Config) EtcdClientConfig(dc string) (clientv3.Config, error) {
	e := c.DCs[dc].Etcd
	cc, err := e.ClientConfig("dcs." + dc + ".etcd")
	if err != nil || e.Username == "" {
		return cc, err
	}
	cc.DialOptions = append(slices.Clip(cc.DialOptions), grpc.WithChainUnaryInterceptor(explainPermissions(e.Username, c.Grants())))
	return cc, nil
}

// authenticateMethod is the gRPC method clientv3 authenticates with.
const authenticateMethod = "/etcdserverpb.Auth/Authenticate"

// lazyAuthentication is a unary interceptor on a client with a username, for two failures of the
// client's own authentication that would otherwise take a DC loss down with them:
//   - clientv3.New authenticates at once and fails when the etcd does not answer, so every command would
//     fail during a DC loss. An Authenticate that etcd did not answer (Unavailable, DeadlineExceeded, or
//     no quorum to authenticate with) instead yields an empty token: New returns, and the client
//     authenticates again when etcd answers a request with "user name is empty", which is how the
//     client already renews a token.
//   - The client sends its old token along with Authenticate. etcd 3.4 checks it, answers "invalid auth
//     token" once it has expired, and the client, renewing the token to retry, authenticates again with
//     the same old token, for ever. Answering "authentication is not enabled" instead makes the client
//     drop the token; the request then fails with "user name is empty" and the client authenticates anew.
//
// A wrong password (ErrAuthFailed) passes through: etcd answered, and it must fail.
func lazyAuthentication(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	if err == nil || method != authenticateMethod {
		return err
	}
	switch {
	case errors.Is(rpctypes.Error(err), rpctypes.ErrInvalidAuthToken):
		return rpctypes.ErrGRPCAuthNotEnabled
	case status.Code(err) == codes.Unavailable, status.Code(err) == codes.DeadlineExceeded,
		// etcd 3.4 without a quorum: its own deadline, as code Unknown.
		rpctypes.ErrorDesc(err) == context.DeadlineExceeded.Error():
		return nil
	}
	return err
}
