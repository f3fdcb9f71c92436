#!/usr/bin/python3
"""P6c: a closure-shaped Nix build -- n small derivations that all need one
big input the client built itself (test/integration/nix/closure.nix) --
through nrbc, beside the same build against one builder reached directly,
in one run on the same machine and the same local cluster. Every builder
pod has its own empty Nix store (the test kubelet's default), as a builder
container has: whatever a builder needs, the client uploads to it.

  direct   one builder pod (made by hand, already Running, its own store),
           ssh straight to it: the big input goes up once
  nrbc     through the proxy, the shipped manifests (builder reuse, 4
           slots, warm pool of 2, idle timeout 5m): Nix opens one SSH
           connection per derivation and they all land on the client key's
           builder, so the big input goes up once per builder used

Run 1 is the cold case (the key has no builder yet: its first session
claims a pool builder, whose store is empty); later runs find the key's
builder warm (its pod running; each run's input is new, so it goes up
again, as it does to the direct builder).

Both paths go through the same counting TCP forwarder (this script), so
"wire up" is measured the same way for both: the bytes the client's ssh
sent, SSH framing and each connection's handshake included. For nrbc the
proxy's own counter (nrbc_proxy_bytes_total{direction="up"}: channel
payload it bridged to builders) is printed beside it. Each run builds the
whole expression locally too, on a third store, and checks that every
output is byte for byte the same.

Before the runs it also measures what a private store costs a pod's start:
pods made one at a time, alternately with their own store and with the
host's (annotation nrbc.test/host-nix-store=true), created -> sshd accepts
(polled every 10 ms) and created -> Ready (the readiness probe runs every
second, so Ready is coarse).

Usage: test/bench/bench_nix_closure.py [--nrbc build/src/nrbc] [--runs 1]
           [--n 10] [--size-mib 64] [--scheme ssh-ng] [--max-jobs 4]
           [--pod-starts 5]
Its work directory goes at exit, unless NRBC_KEEP_BENCH_DIR=1.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "test", "integration"))

import conftest  # noqa: E402
from nix_bench_common import BuilderWatch, written_max_jobs  # noqa: E402
from proxy_bench_common import free_port  # noqa: E402
from stack import NAMESPACE, PROXY_ADDRESS, Stack  # noqa: E402

MIB = 1024 * 1024
FWD_NET = "127.84.%d" % (20 + os.getpid() % 200)
HOST_STORE_ANNOTATION = conftest.kubelet_mod.HOST_STORE_ANNOTATION


class CountingForwarder:
    """TCP listen address -> target, counting the bytes of each direction."""

    def __init__(self, ip, target):
        self.target = target
        self.sock = socket.socket()
        self.sock.bind((ip, free_port(ip)))
        self.sock.listen(64)
        self.ip, self.port = self.sock.getsockname()
        self.lock = threading.Lock()
        self.up = self.down = self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def counts(self):
        with self.lock:
            return self.up, self.down, self.connections

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(self.target, 10)
                s.settimeout(None)   # the connect timeout would end quiet directions
            except OSError:
                c.close()
                continue
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._pump, args=(c, s, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(s, c, "down"), daemon=True).start()

    def _pump(self, src, dst, direction):
        buf = bytearray(256 * 1024)
        view = memoryview(buf)
        try:
            while True:
                n = src.recv_into(buf)
                if not n:
                    break
                dst.sendall(view[:n])
                with self.lock:
                    setattr(self, direction, getattr(self, direction) + n)
        except OSError:
            pass
        for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass

    def close(self):
        self.sock.close()


def proxy_bytes_up(stack):
    url = "http://%s:%d/metrics" % (PROXY_ADDRESS, stack.proxy.health_port)
    with urllib.request.urlopen(url, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith('nrbc_proxy_bytes_total{direction="up"}'):
                return float(line.split()[-1])
    raise SystemExit("proxy /metrics has no nrbc_proxy_bytes_total{direction=\"up\"}")


def sandbox_paths():
    # closure.nix runs /usr/bin tools; local builds are sandboxed.
    return conftest.NixClient.local_sandbox_paths() + " /usr/bin"


def client_with_input(work, name, args):
    """A client store on which the client has built the big input itself."""
    c = conftest.NixClient(os.path.join(work, name))
    os.makedirs(c.dir, exist_ok=True)
    c.build("closure.nix", args=args, max_jobs=1,
            extra=["-A", "big", "--option", "sandbox-paths", sandbox_paths()])
    return c


def outputs(client, store, top):
    """{path: bytes} of top and every user (n small outputs) in store."""
    paths = subprocess.run(["nix-store", "--store", store, "-qR", top], stdout=subprocess.PIPE,
                           text=True, check=True).stdout.split()
    return {p: client.read(p, store=store) for p in paths}


# ---- pod start cost of a private store ----------------------------------------------

def accepts(ip):
    try:
        socket.create_connection((ip, 22), 0.5).close()
        return True
    except OSError:
        return False


def pod_start(cluster, name, host_store):
    pod = conftest.builder_pod(name, NAMESPACE, secret="nix-builder-ssh-keys",
                               configmap="nix-config")
    if host_store:
        pod["metadata"]["annotations"] = {HOST_STORE_ANNOTATION: "true"}
    path = "/api/v1/namespaces/%s/pods" % NAMESPACE
    t0 = time.monotonic()
    st, body = cluster.api("POST", path, pod)
    assert st == 201, body
    ip = None
    t_accept = t_ready = None
    deadline = t0 + 60
    while time.monotonic() < deadline and t_ready is None:
        if ip is None or t_accept is not None:
            p = conftest.get_pod(cluster, NAMESPACE, name)
            ip = ip or (p or {}).get("status", {}).get("podIP")
            if conftest.pod_ready(p):
                t_ready = time.monotonic()
        if ip and t_accept is None and accepts(ip):
            t_accept = time.monotonic()
        time.sleep(0.01)
    if t_ready is None:
        raise SystemExit("pod %s not Ready in 60 s" % name)
    cluster.api("DELETE", path + "/" + name)
    conftest.wait_for(lambda: conftest.get_pod(cluster, NAMESPACE, name) is None, 60,
                      what="pod %s gone" % name)
    return t_accept - t0, t_ready - t0


def measure_pod_starts(cluster, k):
    got = {False: [], True: []}
    for i in range(k):
        for host_store in (False, True):
            a, r = pod_start(cluster, "start-%s-%d" % ("host" if host_store else "own", i),
                             host_store)
            got[host_store].append((a, r))
    med = {hs: (statistics.median(a for a, _ in v), statistics.median(r for _, r in v))
           for hs, v in got.items()}
    print("pod start, median of %d: own store: sshd accepts %.3f s, Ready %.2f s; "
          "host store: %.3f s, %.2f s; a private store adds %+.3f s to sshd accepting, "
          "%+.2f s to Ready" % (k, med[False][0], med[False][1], med[True][0], med[True][1],
                                med[False][0] - med[True][0], med[False][1] - med[True][1]),
          flush=True)


# ---- the build ------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nrbc", default=os.path.join(REPO, "build", "src", "nrbc"))
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--n", type=int, default=10, help="derivations sharing the input (>= 10)")
    ap.add_argument("--size-mib", type=int, default=64, help="size of the shared input")
    ap.add_argument("--scheme", default="ssh-ng", choices=("ssh", "ssh-ng"))
    ap.add_argument("--max-jobs", type=int, default=4, help="per builder line, both paths")
    ap.add_argument("--written-config", action="store_true",
                    help="the nrbc path with what `nrbc client-config` writes: maxJobs "
                         "builder-slots x builders-per-key, builders-use-substitutes = true "
                         "(the direct path keeps --max-jobs)")
    ap.add_argument("--seconds", type=int, default=0,
                    help="each derivation also sleeps this long (holds its slot)")
    ap.add_argument("--pod-starts", type=int, default=5,
                    help="pods per variant for the start-time figure (0: skip)")
    args = ap.parse_args()
    size = args.size_mib * MIB

    work = tempfile.mkdtemp(prefix="nrbc-bench-closure-")
    os.chmod(work, 0o755)
    cluster = conftest.cluster_mod.Cluster(os.environ.get("NRBC_CLUSTER_BIN")
                                           or conftest.cluster_mod.build_binaries())
    kubelet = stack = None
    fwds = []
    try:
        cluster.start(os.path.join(work, "cluster"))
        conftest.HostNix().prepare()       # the host-store pods of the start figure
        kubelet = conftest.KubeletProc(cluster).start()
        stack = Stack(cluster, kubelet, args.nrbc, work,
                      builder_idle_timeout="5m").install().start()
        if args.pod_starts:
            measure_pod_starts(cluster, args.pod_starts)

        # The baseline builder: a pod like the controller's, made by hand,
        # with the same Secret and ConfigMap, its own empty store.
        cluster.apply(json.dumps(conftest.builder_pod(
            "direct-builder", NAMESPACE, secret="nix-builder-ssh-keys",
            configmap="nix-config")))
        pod = conftest.wait_pod(cluster, NAMESPACE, "direct-builder", conftest.pod_ready, 60)
        host_pub = open(stack.keys["host-key"] + ".pub").read()
        direct = CountingForwarder(FWD_NET + ".2", (pod["status"]["podIP"], 22))
        through = CountingForwarder(FWD_NET + ".3", (PROXY_ADDRESS, stack.proxy_port))
        fwds = [direct, through]
        kh = os.path.join(work, "fwd_known_hosts")
        with open(kh, "w") as f:
            for fw in fwds:
                f.write("[%s]:%d %s" % (fw.ip, fw.port, host_pub))
        paths = {
            "direct": (direct, conftest.NixClient.sshopts(direct.port, stack.keys["builder-key"],
                                                          kh)),
            "nrbc": (through, conftest.NixClient.sshopts(through.port, stack.keys["user-key"],
                                                         kh)),
        }

        results = {"direct": [], "nrbc": []}
        for i in range(args.runs):
            bargs = {"salt": uuid.uuid4().hex, "n": args.n, "size": size,
                     "seconds": args.seconds}
            ref = client_with_input(work, "local-%d" % i, bargs)
            local = ref.build("closure.nix", args=bargs, max_jobs=1,
                              extra=["--option", "sandbox-paths", sandbox_paths()])
            want = outputs(ref, ref.store, local.out)
            line = []
            for name in ("direct", "nrbc"):
                fw, opts = paths[name]
                c = client_with_input(work, "%s-%d" % (name, i), bargs)
                up0, _, conns0 = fw.counts()
                metric0 = proxy_bytes_up(stack) if name == "nrbc" else 0
                jobs, extra = args.max_jobs, []
                if name == "nrbc" and args.written_config:
                    jobs, _ = written_max_jobs(cluster)
                    extra = ["--option", "builders-use-substitutes", "true"]
                watch = BuilderWatch(stack)
                watch.start()
                t0 = time.monotonic()
                try:
                    r = c.build("closure.nix", args=bargs, max_jobs=0, timeout=1800,
                                builders=conftest.NixClient.builders(fw.ip, args.scheme,
                                                                     max_jobs=jobs),
                                sshopts=opts, extra=extra)
                finally:
                    secs = time.monotonic() - t0
                    watch.stop.set()
                    watch.join()
                up, _, conns = fw.counts()
                metric = proxy_bytes_up(stack) - metric0 if name == "nrbc" else None
                same = r.out == local.out and outputs(c, c.store, r.out) == want
                if not same:
                    raise SystemExit("%s: outputs differ from the local build" % name)
                results[name].append((secs, up - up0, conns - conns0, metric))
                line.append("%s (maxJobs %d) %.2f s, up %.1f MiB on the wire, %d connections%s" % (
                    name, jobs, secs, (up - up0) / MIB, conns - conns0,
                    "" if metric is None else ", proxy payload up %.1f MiB, %d builders" % (
                        metric / MIB, len(watch.seen))))
            print("run %d: %s; outputs identical to a local build" % (i + 1, "; ".join(line)),
                  flush=True)
            # The next run starts clean (the direct builder pod stays).
            conftest.wait_for(lambda: not stack.requests(), 120, what="no NixBuildRequest left")

        d = statistics.median(s for s, *_ in results["direct"])
        t = statistics.median(s for s, *_ in results["nrbc"])
        dup = statistics.median(u for _, u, _, _ in results["direct"])
        tup = statistics.median(u for _, u, _, _ in results["nrbc"])
        pm = statistics.median(m for *_, m in results["nrbc"])
        print()
        print("P6c %d derivations + top sharing a %d MiB input built by the client, %s, "
              "max-jobs %d, median of %d:" % (args.n, args.size_mib, args.scheme,
                                              args.max_jobs, args.runs))
        print("P6c wall: direct %.2f s, through nrbc %.2f s, ratio %.2fx" % (d, t, t / d))
        cold = results["nrbc"][0][0] / results["direct"][0][0]
        print("P6c cold (run 1): %.2fx; warm builder (runs 2-%d): %s"
              % (cold, args.runs, "%.2fx" % (
                  statistics.median(s for s, *_ in results["nrbc"][1:]) /
                  statistics.median(s for s, *_ in results["direct"][1:]))
                  if args.runs > 1 else "n/a (--runs 1)"))
        print("P6c bytes up (wire, client side): direct %.1f MiB, through nrbc %.1f MiB "
              "(%.2fx, %.1f copies of the input); proxy payload up %.1f MiB"
              % (dup / MIB, tup / MIB, tup / dup, tup / size, pm / MIB))
    finally:
        for fw in fwds:
            fw.close()
        if stack:
            stack.stop()
        if kubelet:
            kubelet.stop()
        cluster.stop()
        # Client stores hold several copies of the input.
        if os.environ.get("NRBC_KEEP_BENCH_DIR") != "1":
            conftest.kubelet_mod.remove_tree(work)


if __name__ == "__main__":
    sys.exit(main())
