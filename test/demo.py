"""nrbc's main job on one machine: a local Kubernetes (real kube-apiserver,
etcd, controller-manager; a test kubelet that runs builder pods as local
processes), nrbc installed with `kubectl apply -k manifests`, the controller
and proxy running as the manifests say, and a real `nix-build` of an
11-derivation graph through the proxy, with the NixBuildRequests and builder
pods shown as they come and go.

    test/run-demo            run it and tear everything down
    test/run-demo --keep     leave the stack running to try by hand
"""

import argparse
import base64
import os
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
from stack import NAMESPACE, PROXY_ADDRESS, Stack  # noqa: E402


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
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="nrbc-demo-")
    os.chmod(work, 0o755)
    cluster = kubelet = stack = None
    watchers = []
    ok = False
    try:
        say("starting a local Kubernetes API (etcd, kube-apiserver, controller-manager)")
        bindir = os.environ.get("NRBC_CLUSTER_BIN") or conftest.cluster_mod.build_binaries()
        cluster = conftest.cluster_mod.Cluster(bindir)
        cluster.start(os.path.join(work, "cluster"))
        say("preparing Nix and the test kubelet (each builder pod gets a store of its own)")
        conftest.HostNix().prepare()
        kubelet = conftest.KubeletProc(cluster).start()

        say("kubectl apply -k manifests; Secret %s with the keys" % "nix-builder-ssh-keys")
        stack = Stack(cluster, kubelet, args.nrbc, work).install()
        for (kind, name) in sorted(stack.objects):
            print("   %s/%s" % (kind, name))
        say("starting nrbc controller and nrbc proxy from their Deployments' pod templates")
        stack.start()
        print("   controller: %s" % " ".join(stack.controller.argv()[1:]))
        print("   proxy:      %s" % " ".join(stack.proxy.argv()[1:]))

        watchers.append(watch(cluster, "nixbuildrequests"))
        watchers.append(watch(cluster, "nixbuilders"))
        watchers.append(watch(cluster, "pods", "app.kubernetes.io/name=nrbc-builder"))
        time.sleep(1)

        say("nix-build of an 11-derivation graph through ssh-ng://nixbld@%s:%d"
            % (PROXY_ADDRESS, stack.proxy_port))
        store = os.path.join(work, "client-store")
        argv = ["nix-build", os.path.join(conftest.NIX_DIR, "graph.nix"), "--no-out-link",
                "--store", store, "--max-jobs", "0", "--option", "substituters", "",
                "--builders", stack.builders("ssh-ng"),
                "--argstr", "salt", uuid.uuid4().hex, "--arg", "n", "10"]
        print("   $ NIX_SSHOPTS='%s' %s" % (stack.sshopts(), " ".join(
            "'%s'" % a if " " in a or not a else a for a in argv)), flush=True)
        env = dict(os.environ, NIX_SSHOPTS=stack.sshopts())
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

        host_pub = open(stack.keys["host-key"] + ".pub").read().strip()
        print()
        say("to use it from nix.conf (the proxy's host key is pinned, base64):")
        print("   builders = ssh-ng://nixbld@%s x86_64-linux %s 4 1 - - %s"
              % (PROXY_ADDRESS, stack.keys["user-key"],
                 base64.b64encode(host_pub.encode()).decode()))
        print("   NIX_SSHOPTS='-p %d'   # Nix 2.8 store URIs take no port; a real"
              " proxy Service listens on 22" % stack.proxy_port)
        ok = True
        if args.keep:
            say("the stack keeps running; press Ctrl-C to stop it. Try:")
            print("   export KUBECONFIG=%s" % cluster.kubeconfig)
            print("   kubectl -n %s get nbr,pods -w" % NAMESPACE)
            print("   NIX_SSHOPTS='%s' nix-build %s/test/integration/nix/graph.nix "
                  "--store %s/mystore --max-jobs 0 --builders '%s'"
                  % (stack.sshopts(), REPO, work, stack.builders("ssh-ng")))
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
        say("demo %s; logs were in %s" % ("done" if ok else "failed", work))


if __name__ == "__main__":
    sys.exit(main())
