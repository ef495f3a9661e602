// Command kube-etcd is etcd (go.etcd.io/etcd/server/v3, the version kube-apiserver is built
// against) for the kube-apiserver the dtmdriver-k8s tests start; Debian's etcd is older.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
