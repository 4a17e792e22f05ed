// Command etcd is etcd's server at the version this module requires, built from the module proxy, so
// that topoha's tests can run against the etcd versions production runs (besides Debian's 3.4 and the
// embedded 3.7). ../build.sh builds and caches it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
