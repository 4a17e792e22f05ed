package testenv

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/topoha/topoha/config"
)

// AuthEnv turns on etcd authentication in every cluster testenv starts, when it is "password": the
// tests of health, election, the mirror, the controller and the commands then run as production with
// authentication runs them (make test-etcd-versions runs them with and without). WithAuth turns it on
// for one fixture.
const AuthEnv = "TOPOHA_ETCD_AUTH"

// The users of a cluster with authentication. User is the one topoha and the components under test
// authenticate as: it has no root role. In a fixture of two DCs (StartDCs) its role holds exactly the
// grants the config asks for (config.Config.Grants), so that a missing grant fails the test as it would
// fail in production; a cluster started on its own (a test of one component, with no config) grants it
// readwrite on every key. Root is the fixture's own, for what the tests set up around topoha: tablet
// records in the cells, compaction, alarms.
const (
	RootUser     = "root"
	RootPassword = "root-secret"
	User         = "topoha"
	UserPassword = "topoha-secret"
)

// authFromEnv says whether AuthEnv asks for authentication; another value fails the test, rather than
// run it without.
func authFromEnv(t testing.TB) bool {
	t.Helper()
	switch v := os.Getenv(AuthEnv); v {
	case "":
		return false
	case "password":
		return true
	default:
		t.Fatalf("%s=%q: want \"password\" or nothing", AuthEnv, v)
		return false
	}
}

// SkipWithAuthEnv skips a test whose etcd must be without authentication (why says for what) when AuthEnv
// turns it on everywhere: a test that sets authentication up itself, or one about something else that
// writes a config of its own without credentials.
func SkipWithAuthEnv(t testing.TB, why string) {
	t.Helper()
	if authFromEnv(t) {
		t.Skipf("%s is set: %s", AuthEnv, why)
	}
}

// cheapPasswords makes an embedded member hash passwords at bcrypt's lowest cost when authentication is on:
// it runs in the test process, under the race detector, where the default cost makes every Authenticate
// take longer than a health probe's timeout. Processes of $TOPOHA_ETCD_BIN keep etcd's default cost, as
// production runs it.
func cheapPasswords(opts []EtcdOption, auth bool) []EtcdOption {
	if !auth {
		return opts
	}
	return append(slices.Clip(opts), func(c *embed.Config) { c.BcryptCost = 4 })
}

// allKeys is the range that `etcdctl role grant-permission --from-key` with an empty key grants: every key.
const allKeys = "\x00"

// turnOnAuth turns authentication on in the etcd at endpoints (enableAuth), through a client that has no
// credentials yet.
func turnOnAuth(t testing.TB, endpoints []string) {
	t.Helper()
	cli, err := clientv3.New(clientConfig(endpoints, "", ""))
	if err != nil {
		t.Fatalf("client of %v: %v", endpoints, err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), authTimeout)
	defer cancel()
	if err := enableAuth(ctx, cli); err != nil {
		t.Fatalf("turn authentication on in %v: %v", endpoints, err)
	}
}

// loginConfig is clientConfig of endpoints logged in as user when auth is on, and as nobody when it is off.
func loginConfig(endpoints []string, auth bool, user, password string) clientv3.Config {
	if !auth {
		return clientConfig(endpoints, "", "")
	}
	return clientConfig(endpoints, user, password)
}

// enableAuth creates the root user and the user with its role, grants the role readwrite on every key,
// and turns authentication on, through cli, which authenticates as nobody (before).
func enableAuth(ctx context.Context, cli *clientv3.Client) error {
	steps := []struct {
		what string
		do   func() error
	}{
		{"add user " + RootUser, func() error { _, err := cli.UserAdd(ctx, RootUser, RootPassword); return err }},
		{"grant role root", func() error { _, err := cli.UserGrantRole(ctx, RootUser, "root"); return err }},
		{"add role " + User, func() error { _, err := cli.RoleAdd(ctx, User); return err }},
		{"grant every key", func() error {
			_, err := cli.RoleGrantPermission(ctx, User, allKeys, allKeys, clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		}},
		{"add user " + User, func() error { _, err := cli.UserAdd(ctx, User, UserPassword); return err }},
		{"grant role " + User, func() error { _, err := cli.UserGrantRole(ctx, User, User); return err }},
		{"enable authentication", func() error { _, err := cli.AuthEnable(ctx); return err }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	return nil
}

// grantOnly replaces the user's role's permissions with grants, through a root client.
func grantOnly(ctx context.Context, root *clientv3.Client, grants []config.Grant) error {
	if _, err := root.RoleRevokePermission(ctx, User, allKeys, allKeys); err != nil {
		return fmt.Errorf("revoke every key from role %s: %w", User, err)
	}
	for _, g := range grants {
		perm := clientv3.PermRead
		if g.Perm == "readwrite" {
			perm = clientv3.PermReadWrite
		}
		if _, err := root.RoleGrantPermission(ctx, User, g.Prefix, clientv3.GetPrefixRangeEnd(g.Prefix), clientv3.PermissionType(perm)); err != nil {
			return fmt.Errorf("grant %s on %s to role %s: %w", g.Perm, g.Prefix, User, err)
		}
	}
	return nil
}

// refusedForAuth says whether err is etcd refusing a request that carried no credentials (or too few): it
// answered, so it serves.
func refusedForAuth(err error) bool {
	switch rpctypes.Error(err) {
	case rpctypes.ErrUserEmpty, rpctypes.ErrPermissionDenied, rpctypes.ErrInvalidAuthToken:
		return true
	}
	return false
}

// authTimeout bounds the set-up of authentication in a cluster.
const authTimeout = 30 * time.Second
