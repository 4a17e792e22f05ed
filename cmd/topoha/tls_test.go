package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/topoha/topoha/config"
	"github.com/topoha/topoha/internal/testenv"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client certificate into dir.
type pki struct{ ca, serverCert, serverKey, clientCert, clientKey string }

func newPKI(t *testing.T, dir string) pki {
	t.Helper()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "topoha test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) ([]byte, []byte) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der, kder
	}
	sc, sk := leaf(2, "etcd", x509.ExtKeyUsageServerAuth)
	cc, ck := leaf(3, "topoha", x509.ExtKeyUsageClientAuth)
	return pki{
		ca:         write("ca.pem", "CERTIFICATE", caDER),
		serverCert: write("server.pem", "CERTIFICATE", sc), serverKey: write("server-key.pem", "EC PRIVATE KEY", sk),
		clientCert: write("client.pem", "CERTIFICATE", cc), clientKey: write("client-key.pem", "EC PRIVATE KEY", ck),
	}
}

// startTLSEtcd starts an etcd that serves clients over TLS only and requires a client certificate.
func startTLSEtcd(t *testing.T, name string, p pki) (*testenv.Etcd, string) {
	var endpoint string
	e := testenv.StartEtcd(t, name, func(c *embed.Config) {
		u := c.ListenClientUrls[0]
		u.Scheme = "https"
		c.ListenClientUrls, c.AdvertiseClientUrls = []url.URL{u}, []url.URL{u}
		c.ClientTLSInfo = transport.TLSInfo{CertFile: p.serverCert, KeyFile: p.serverKey, TrustedCAFile: p.ca, ClientCertAuth: true}
		endpoint = u.String()
	})
	return e, endpoint
}

// TLS and authentication to etcd: a client certificate on a TLS-only etcd, a user whose password is read
// from a file; the mirror and the commands work, and the password appears in no output.
func TestTLSAndAuth(t *testing.T) {
	testenv.SkipWithAuthEnv(t, "this test turns authentication on itself, over TLS")
	dir := t.TempDir()
	p := newPKI(t, dir)
	const secret = "s3cr3t-pa55word"
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, ep1 := startTLSEtcd(t, "dc1", p)
	_, ep2 := startTLSEtcd(t, "dc2", p)
	etcdYAML := func(ep string) string {
		return fmt.Sprintf(`{endpoints: [%s], dial_timeout: 2s, username: root, password_file: %s, tls: {ca_file: %s, cert_file: %s, key_file: %s}}`,
			ep, pwFile, p.ca, p.clientCert, p.clientKey)
	}
	path := filepath.Join(dir, "config.yaml")
	yaml := fmt.Sprintf("cluster: t\ninitial_primary: dc1\ndcs:\n  dc1: {etcd: %s}\n  dc2: {etcd: %s}\nhealth: {interval: 100ms, timeout: 1s}\n", etcdYAML(ep1), etcdYAML(ep2))
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// Create the root user and turn authentication on, over TLS, as an operator would.
	clients := map[string]*clientv3.Client{}
	for _, dc := range cfg.DCNames() {
		cc, err := cfg.DCs[dc].Etcd.ClientConfig("dcs." + dc + ".etcd")
		if err != nil {
			t.Fatal(err)
		}
		anon := cc
		anon.Username, anon.Password = "", ""
		admin, err := clientv3.New(anon)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for _, step := range []func() error{
			func() error { _, err := admin.UserAdd(ctx, "root", secret); return err },
			func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
			func() error { _, err := admin.AuthEnable(ctx); return err },
		} {
			if err := step(); err != nil {
				t.Fatalf("enable auth in %s: %v", dc, err)
			}
		}
		cancel()
		admin.Close()
		cli, err := clientv3.New(cc)
		if err != nil {
			t.Fatalf("client of %s with TLS and password: %v", dc, err)
		}
		t.Cleanup(func() { cli.Close() })
		clients[dc] = cli
	}
	if _, err := clients["dc1"].Put(ctxT(t), prefix+"over-tls", "v"); err != nil {
		t.Fatal(err)
	}

	bin := testenv.Binary(t)
	m := testenv.StartProcess(t, bin, "mirror", "--config", path)
	testenv.Eventually(t, waitLong, func() (bool, string) {
		resp, err := clients["dc2"].Get(ctxT(t), prefix+"over-tls")
		return err == nil && len(resp.Kvs) == 1, fmt.Sprintf("not mirrored over TLS yet (%v)", err)
	})
	var outputs []string
	for _, args := range [][]string{{"status"}, {"status", "--json"}, {"verify"}, {"history"}} {
		code, out, errOut := testenv.RunProcess(t, waitLong, bin, append(args, "--config", path)...)
		// status exits 1 here (no controller leads): it read everything.
		if code != 0 && (args[0] != "status" || code != exitStatusAttention) {
			t.Errorf("%s over TLS with auth: exit %d\n%s%s", args, code, out, errOut)
		}
		outputs = append(outputs, out, errOut)
	}
	stopWithSIGTERM(t, m)
	outputs = append(outputs, m.Stdout(), m.Stderr())
	for _, o := range outputs {
		if strings.Contains(o, secret) {
			t.Fatalf("the password appears in output:\n%s", o)
		}
	}

	// A wrong password: refused at start, naming the field, without echoing the password.
	if err := os.WriteFile(pwFile, []byte("wrong-"+secret), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := testenv.RunProcess(t, waitLong, bin, "mirror", "--config", path)
	if code != 2 || !strings.Contains(errOut, "dcs.dc1.etcd.username/password_file: etcd refused the credentials of user \"root\"") || strings.Contains(out+errOut, secret) {
		t.Errorf("mirror with a wrong password: exit %d\n%s%s", code, out, errOut)
	}
}
