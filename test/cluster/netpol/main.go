// kube-network-policies (sigs.k8s.io/kube-network-policies v0.8.0, SIG
// Network's NetworkPolicy enforcer: nftables sends each new connection of a
// policy-selected pod to NFQUEUE, where this process judges it) for the test
// cluster's real node (test/cluster/node.py). Its own cmd/main.go reads only
// the in-cluster config; this one is the same program with --kubeconfig.
// Test code.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"golang.org/x/sys/unix"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/kube-network-policies/pkg/networkpolicy"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster (required)")
	nodeName := flag.String("hostname-override", "", "the Node's name (required)")
	queueID := flag.Int("nfqueue-id", 100, "number of the NFQUEUE")
	table := flag.String("nftables-table", "kube-network-policies", "name of the nftables table")
	failOpen := flag.Bool("fail-open", false, "accept packets when no enforcer listens on the queue")
	klog.InitFlags(nil)
	flag.Parse()
	if *kubeconfig == "" || *nodeName == "" {
		fmt.Fprintln(os.Stderr, "usage: kube-network-policies --kubeconfig FILE --hostname-override NODE")
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, unix.SIGTERM)
	defer cancel()

	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		klog.Fatalf("kubeconfig: %v", err)
	}
	clientset, err := kubernetes.NewForConfig(config)
	if err != nil {
		klog.Fatalf("client: %v", err)
	}
	factory := informers.NewSharedInformerFactory(clientset, 0)
	cfg := networkpolicy.Config{
		FailOpen:    *failOpen,
		QueueID:     *queueID,
		NodeName:    *nodeName,
		NFTableName: *table,
		// kernel 6.12+ has the fix; the workaround queues DNS in prerouting
		NetfilterBug1766Fix: false,
		// NRI stays "enabled", see below.
		NRIdisabled: false,
	}
	// containerd 1.6 has no NRI, but with NRIdisabled v0.8.0 dereferences
	// its nil NRI plugin for every packet to or from an address no pod has
	// (getPodAssignedToIP, controller.go:190): the enforcer panics at the
	// first connection to the API server. So the plugin is made, and given
	// a "socket" that fails at once, before any connection is tried: it
	// never reaches a runtime's socket (/var/run/nri/nri.sock is the
	// machine's, not this node's), its map stays empty, and the API server
	// is the only source of pod IPs, as with NRI disabled.
	os.Setenv("NRI_PLUGIN_SOCKET", "none")
	ctrl, err := networkpolicy.NewController(clientset,
		factory.Networking().V1().NetworkPolicies(),
		factory.Core().V1().Namespaces(),
		factory.Core().V1().Pods(),
		nil, nil, nil, nil, cfg)
	if err != nil {
		klog.Fatalf("controller: %v", err)
	}
	go func() { utilruntime.HandleError(ctrl.Run(ctx)) }()
	factory.Start(ctx.Done())
	<-ctx.Done()
	// Run's deferred cleanup removes the nftables table.
	time.Sleep(time.Second)
}
