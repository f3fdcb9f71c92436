"""nrbc's main job on one machine: a local Kubernetes (real kube-apiserver,
etcd, controller-manager, scheduler, and a real node: kubelet + containerd +
runc), the images built from the repository's Containerfiles, nrbc installed
with `kubectl apply -k` (the manifests, plus an overlay for what this machine
lacks: test/integration/real_stack.py), the controller and proxy running as
their Deployments, and a real `nix-build` of an 11-derivation graph through
the proxy, with the NixBuildRequests and builder pods shown as they come and go.

    test/run-demo                  run it and tear everything down
    test/run-demo --keep           leave the stack running to try by hand
    test/run-demo --test-kubelet   no containers: the test kubelet runs builder
                                   pods as local processes, the controller and
                                   proxy run from their pod templates
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "integration"))

import conftest  # noqa: E402  (the fixtures' classes, used directly)
from real_stack import RealStack  # noqa: E402
from stack import NAMESPACE, Stack  # noqa: E402


def say(msg):
    print("\033[1m==> %s\033[0m" % msg, flush=True)


def watch(cluster, what, selector=None):
    """`kubectl get -w` of one resource, each line prefixed, until killed."""
    argv = [os.path.join(cluster.bindir, "kubectl"), "--kubeconfig", cluster.kubeconfig,
            "-n", NAMESPACE, "get", what, "--watch", "--output-watch-events"]
    if selector:
        argv += ["-l", selector]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def pump():
        for line in p.stdout:
            print("   [%s] %s" % (what, line.rstrip()), flush=True)
    threading.Thread(target=pump, daemon=True).start()
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", action="store_true", help="keep the stack running afterwards")
    ap.add_argument("--nrbc", default=os.path.join(REPO, "build", "src", "nrbc"))
    ap.add_argument("--test-kubelet", action="store_true",
                    help="no real node: builder pods as local processes")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="nrbc-demo-")
    os.chmod(work, 0o755)
    cluster = kubelet = stack = None
    watchers = []
    ok = False
    try:
        bindir = os.environ.get("NRBC_CLUSTER_BIN") or conftest.cluster_mod.build_binaries()
        say("preparing Nix (the client)")
        conftest.HostNix().prepare()
        if args.test_kubelet:
            say("starting a local Kubernetes API (etcd, kube-apiserver, controller-manager)")
            cluster = conftest.cluster_mod.Cluster(bindir)
            cluster.start(os.path.join(work, "cluster"))
            say("starting the test kubelet (each builder pod gets a store of its own)")
            kubelet = conftest.KubeletProc(cluster).start()
            say("kubectl apply -k manifests; Secret %s with the keys" % "nix-builder-ssh-keys")
            stack = Stack(cluster, kubelet, args.nrbc, work).install()
            for (kind, name) in sorted(stack.objects):
                print("   %s/%s" % (kind, name))
            say("starting nrbc controller and nrbc proxy from their Deployments' pod templates")
            stack.start()
            print("   controller: %s" % " ".join(stack.controller.argv()[1:]))
            print("   proxy:      %s" % " ".join(stack.proxy.argv()[1:]))
        else:
            say("starting a local Kubernetes with a real node (etcd, kube-apiserver, "
                "controller-manager, scheduler, kubelet, containerd)")
            # Short: containerd's socket path must fit a unix socket address.
            cluster = conftest.cluster_mod.Cluster(bindir, real_node=True)
            cluster.start(tempfile.mkdtemp(prefix="nrbc-rn-", dir="/tmp"))
            say("loading the images test/images/build.sh made into the node's containerd")
            conftest.load_images(cluster)
            api_port = int(cluster.server.rsplit(":", 1)[1])
            stack = RealStack(cluster, work, cluster.node.gateway, api_port)
            say("the builders' seccomp profile on the node (kubectl apply -k manifests/seccomp: "
                "builds run in Nix's sandbox); Secret %s with the keys; kubectl apply -k %s "
                "(base: manifests)" % ("nix-builder-ssh-keys", stack.kustomize_dir))
            stack.install()
            for (kind, name) in sorted(stack.objects):
                print("   %s/%s" % (kind, name))
            say("waiting for the Deployments (2 controller replicas, 2 proxies) to roll out")
            stack.start()
            print(cluster.kubectl("-n", NAMESPACE, "get", "pods", "-o", "wide").stdout,
                  flush=True)

        watchers.append(watch(cluster, "nixbuildrequests"))
        watchers.append(watch(cluster, "nixbuilders"))
        watchers.append(watch(cluster, "pods", "app.kubernetes.io/name=nrbc-builder"))
        time.sleep(1)

        say("nrbc client-config --write --check: the user's nix.conf, known_hosts and "
            "ssh_config, from the cluster")
        home = os.path.join(work, "home")
        os.makedirs(home)
        argv = [args.nrbc, "client-config", "--identity", stack.keys["user-key"],
                "--write", "--check"]
        print("   $ HOME=%s KUBECONFIG=%s %s" % (home, cluster.kubeconfig,
                                                " ".join(argv[1:])), flush=True)
        c = subprocess.run(argv, env=dict(os.environ, HOME=home, KUBECONFIG=cluster.kubeconfig),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in c.stdout.splitlines():
            print("   " + line)
        if c.returncode != 0:
            say("nrbc client-config FAILED (exit %d)" % c.returncode)
            return 1
        nix_conf = dict(line.split(" = ", 1) for line in open(
            os.path.join(home, ".config", "nix", "nix.conf")).read().splitlines()
            if " = " in line)
        ssh_config = os.path.join(home, ".ssh", "config")

        say("nix-build of an 11-derivation graph with those settings")
        store = os.path.join(work, "client-store")
        argv = ["nix-build", os.path.join(conftest.NIX_DIR, "graph.nix"), "--no-out-link",
                "--store", store, "--max-jobs", "0", "--option", "substituters", "",
                "--builders", nix_conf["builders"],
                "--argstr", "salt", uuid.uuid4().hex, "--arg", "n", "10"]
        # ssh reads ~/.ssh/config from the passwd entry's home, not $HOME:
        # point it at the file client-config wrote.
        sshopts = "-F %s" % ssh_config
        print("   $ NIX_SSHOPTS='%s' %s" % (sshopts, " ".join(
            "'%s'" % a if " " in a or not a else a for a in argv)), flush=True)
        env = dict(os.environ, NIX_SSHOPTS=sshopts)
        env.pop("NIX_REMOTE", None)
        t0 = time.monotonic()
        b = subprocess.run(argv, env=env, stdout=subprocess.PIPE, text=True)
        took = time.monotonic() - t0
        if b.returncode != 0:
            say("nix-build FAILED (exit %d)" % b.returncode)
            return 1
        out = b.stdout.strip()
        print("   output: %s (built remotely in %.1f s)" % (out, took))
        with open(os.path.join(store, out.lstrip("/"))) as f:
            print("   " + f.readline().strip())
        say("the builders that served it (one per client key, reused by every session):")
        print(cluster.kubectl("-n", NAMESPACE, "get", "nixbuilders", "-o", "wide").stdout,
              flush=True)
        say("idle builders go after --builder-idle-timeout (here 10s; shipped 5m)")
        stack.wait_clean(60)
        time.sleep(1)
        for w in watchers:
            w.terminate()
        say("afterwards: %d NixBuildRequests, %d builder pods left"
            % (len(stack.requests()), len(stack.builder_pods())))

        print()
        say("on a real cluster: `nrbc client-config --write` (see the README's quick start)")
        ok = True
        if args.keep:
            say("the stack keeps running; press Ctrl-C to stop it. Try:")
            print("   export KUBECONFIG=%s" % cluster.kubeconfig)
            print("   kubectl -n %s get nbr,pods -w" % NAMESPACE)
            print("   HOME=%s %s client-config --check" % (home, args.nrbc))
            print("   NIX_SSHOPTS='%s' nix-build %s/test/integration/nix/graph.nix "
                  "--store %s/mystore --max-jobs 0 --builders '%s'"
                  % (sshopts, REPO, work, nix_conf["builders"]))
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT, signal.SIGTERM])
            signal.sigwait([signal.SIGINT, signal.SIGTERM])
        return 0
    finally:
        for w in watchers:
            w.terminate()
        if stack:
            stack.stop()
        if kubelet:
            kubelet.stop()
        if cluster:
            cluster.stop()
        logs = [work]
        if cluster and cluster.node and cluster.workdir:
            # The real node's directory (containerd, kubelet) is large: kept
            # only when something failed.
            if ok:
                shutil.rmtree(cluster.workdir, ignore_errors=True)
            else:
                logs.append(cluster.workdir)
        say("demo %s; logs were in %s" % ("done" if ok else "failed", " and ".join(logs)))


if __name__ == "__main__":
    sys.exit(main())
