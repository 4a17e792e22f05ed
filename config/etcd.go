package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// ClientConfig turns one DC's etcd settings into a client configuration, reading the password and TLS files.
// field is the config path of e (dcs.dc1.etcd), used in errors.
func (e Etcd) ClientConfig(field string) (clientv3.Config, error) {
	cc := clientv3.Config{
		Endpoints:   e.Endpoints,
		DialTimeout: e.DialTimeout,
		// Keepalives notice a silently dropped connection (a cut VIP) instead of waiting on it forever.
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		DialOptions:          []grpc.DialOption{grpc.WithConnectParams(ReconnectParams(e.DialTimeout))},
		Username:             e.Username,
		// The client logs every retry; topoha reports failures itself, with the DC they concern.
		Logger: zap.NewNop(),
	}
	if e.Username != "" {
		// clientv3 installs its retry interceptor first; this one runs inside it, next to the wire.
		cc.DialOptions = append(cc.DialOptions, grpc.WithChainUnaryInterceptor(lazyAuthentication))
	}
	if e.PasswordFile != "" {
		pw, err := os.ReadFile(e.PasswordFile)
		if err != nil {
			return cc, fieldErr(field+".password_file", "cannot read %q: %v", e.PasswordFile, err)
		}
		cc.Password = strings.TrimRight(string(pw), "\r\n")
	}
	if e.TLS == (TLS{}) && !e.usesHTTPS() {
		return cc, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if e.TLS.CAFile != "" {
		pem, err := os.ReadFile(e.TLS.CAFile)
		if err != nil {
			return cc, fieldErr(field+".tls.ca_file", "cannot read %q: %v", e.TLS.CAFile, err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return cc, fieldErr(field+".tls.ca_file", "%q holds no PEM certificate", e.TLS.CAFile)
		}
	}
	if e.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(e.TLS.CertFile, e.TLS.KeyFile)
		if err != nil {
			return cc, fieldErr(field+".tls", "cannot load cert_file %q with key_file %q: %v", e.TLS.CertFile, e.TLS.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	cc.TLS = tc
	return cc, nil
}

// ReconnectParams bound how long a client waits before it dials a member again. gRPC's own back-off grows
// to 120 s: after a member, or a whole DC, was away for a few minutes, every connection to it would sit
// in that back-off although the member is back, and a client whose other members are gone meanwhile would
// wait for nothing. Each attempt to connect is bounded by dialTimeout (a hung member), not gRPC's 20 s.
func ReconnectParams(dialTimeout time.Duration) grpc.ConnectParams {
	return grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
		MinConnectTimeout: max(dialTimeout, 100*time.Millisecond),
	}
}

func (e Etcd) usesHTTPS() bool {
	for _, ep := range e.Endpoints {
		if strings.HasPrefix(ep, "https://") {
			return true
		}
	}
	return false
}

// String describes the endpoints for messages, e.g. "http://10.0.0.1:2379,http://10.0.0.2:2379".
func (e Etcd) String() string { return strings.Join(e.Endpoints, ",") }

// OpenClients opens a client of every DC's etcd: the one way topoha's commands and controllers open them.
// It does not say that the etcds answer: a client of an etcd that does not answer is opened all the same
// (with a username, it authenticates once etcd answers; see lazyAuthentication). It fails on a bad TLS
// or password file, and on credentials that an etcd which answers refuses. closeAll closes them all.
func (c *Config) OpenClients() (clients map[string]*clientv3.Client, closeAll func(), err error) {
	names := c.DCNames()
	opened := make([]*clientv3.Client, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	// In parallel: with a username, New waits up to dial_timeout for an etcd that does not answer.
	for i, dc := range names {
		wg.Go(func() { opened[i], errs[i] = c.openClient(dc) })
	}
	wg.Wait()
	clients = map[string]*clientv3.Client{}
	closeAll = func() {
		for _, cli := range clients {
			cli.Close()
		}
	}
	for i, dc := range names {
		if opened[i] != nil {
			clients[dc] = opened[i]
		}
	}
	if err := errors.Join(errs...); err != nil {
		closeAll()
		return nil, nil, err
	}
	return clients, closeAll, nil
}

func (c *Config) openClient(dc string) (*clientv3.Client, error) {
	field := "dcs." + dc + ".etcd"
	cc, err := c.EtcdClientConfig(dc)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cc)
	switch {
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return nil, fmt.Errorf("%s.username/password_file: etcd refused the credentials of user %q: check the user and the password file's content", field, cc.Username)
	case err != nil:
		return nil, fmt.Errorf("%s.endpoints: %w", field, err)
	}
	return cli, nil
}
