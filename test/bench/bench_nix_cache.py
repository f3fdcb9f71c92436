#!/usr/bin/python3
"""P6s: the closure-shaped Nix build of P6c (test/integration/nix/closure.nix:
n small derivations that all need one big input), through nrbc, with and
without a binary cache that holds the input, in one run on one machine.

The input is a chain of `--parts` store paths (incompressible bytes, each
path referring to the one before), the shape of a real input's closure. Before
each run someone else (a "publisher" store) built the same input and pushed it,
signed, to a binary cache served over HTTP on loopback
(test/integration/binary_cache.py); the builders' nix.conf trusts that
cache (as the shipped one trusts cache.nixos.org). The client built the
input itself too, so it can always upload it.

  upload   the client as before: builders-use-substitutes = false; the
           builder receives the input from the client through the proxy
  cache    builders-use-substitutes = true: the builder fetches the input
           from the cache; the client sends only what the cache lacks
  down     (--down) builders-use-substitutes = true, the builders' nix.conf
           naming the cache on a port where connections are refused (down
           from the builder's start): the builder's nix-daemon tries it,
           drops it, and the client uploads
  downN    (--down-attempts N) the same with download-attempts = N in the
           builders' nix.conf (Nix's default is 5)

Each variant uses a client key of its own (so its own builder: a builder
that already has the input would prove nothing), and a fresh input per run.
Variants alternate their order from run to run. The client's ssh reaches the
proxy through a TCP forwarder that counts the bytes it sends and can cap
its rate (--uplink-mbit: a user's uplink; the cache is on the builders'
side of it, as a datacenter's cache or cache.nixos.org's CDN is). Outputs
are compared with a local build of the same expression.

Usage: test/bench/bench_nix_cache.py [--nrbc build/src/nrbc] [--runs 3]
           [--n 10] [--size-mib 64] [--parts 8] [--uplink-mbit 0] [--down]
           [--down-attempts N] [--download-attempts N]
"""

import argparse
import os
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
sys.path.insert(0, HERE)

import conftest  # noqa: E402
from binary_cache import BinaryCache  # noqa: E402
from bench_nix_closure import CountingForwarder, outputs, sandbox_paths  # noqa: E402
from stack import PROXY_ADDRESS, Stack  # noqa: E402

MIB = 1024 * 1024
FWD_NET = "127.85.%d" % (20 + os.getpid() % 200)


class ThrottledForwarder(CountingForwarder):
    """A CountingForwarder whose client-to-server direction is capped at
    `rate` bytes per second (0: no cap), shared by all its connections."""

    def __init__(self, ip, target, rate):
        self.rate = rate
        self.next_free = time.monotonic()
        self.rate_lock = threading.Lock()
        super().__init__(ip, target)

    def _pump(self, src, dst, direction):
        if direction != "up" or not self.rate:
            return super()._pump(src, dst, direction)
        buf = bytearray(64 * 1024)
        view = memoryview(buf)
        try:
            while True:
                n = src.recv_into(buf)
                if not n:
                    break
                with self.rate_lock:
                    now = time.monotonic()
                    start = max(now, self.next_free)
                    self.next_free = start + n / self.rate
                    delay = self.next_free - now
                if delay > 0:
                    time.sleep(delay)
                dst.sendall(view[:n])
                with self.lock:
                    self.up += n
        except OSError:
            pass
        for sock, how in ((dst, 1), (src, 0)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


def proxy_bytes_up(stack):
    url = "http://%s:%d/metrics" % (PROXY_ADDRESS, stack.proxy.health_port)
    with urllib.request.urlopen(url, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith('nrbc_proxy_bytes_total{direction="up"}'):
                return float(line.split()[-1])
    raise SystemExit("proxy /metrics has no bytes counter")


def nar_bytes(cache, served):
    return sum(os.path.getsize(os.path.join(cache.nar_dir, p.lstrip("/"))) for p in served)


def fresh_builders(stack, cache):
    """The builders' nix.conf names `cache`; the builders made before go."""
    stack.set_builder_substituters(cache)
    stack.delete_builders()
    conftest.wait_for(lambda: not stack.builder_pods(), 120, what="old builders gone")


def client_with_input(work, name, args):
    c = conftest.NixClient(os.path.join(work, name))
    os.makedirs(c.dir, exist_ok=True)
    b = c.build("closure.nix", args=args, max_jobs=1,
                extra=["-A", "big", "--option", "sandbox-paths", sandbox_paths()])
    return c, b.out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nrbc", default=os.path.join(REPO, "build", "src", "nrbc"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--parts", type=int, default=8)
    ap.add_argument("--uplink-mbit", type=float, default=0,
                    help="cap on the client's upload rate (0: none)")
    ap.add_argument("--down", action="store_true", help="also: the cache unreachable")
    ap.add_argument("--down-attempts", type=int, default=0,
                    help="also: the cache unreachable, the builders' download-attempts = N")
    ap.add_argument("--download-attempts", type=int, default=0,
                    help="download-attempts in the builders' nix.conf (0: Nix's default)")
    args = ap.parse_args()
    size = args.size_mib * MIB
    variants = ["upload", "cache"] + (["down"] if args.down else [])
    if args.down_attempts:
        variants.append("down%d" % args.down_attempts)
    # Down variants start from fresh builders anyway: they share a key.
    user_of = {v: min(i, 2) for i, v in enumerate(variants)}

    work = tempfile.mkdtemp(prefix="nrbc-bench-cache-")
    os.chmod(work, 0o755)
    cluster = conftest.cluster_mod.Cluster(os.environ.get("NRBC_CLUSTER_BIN")
                                           or conftest.cluster_mod.build_binaries())
    kubelet = stack = cache = fwd = None
    try:
        cluster.start(os.path.join(work, "cluster"))
        conftest.HostNix().prepare()
        kubelet = conftest.KubeletProc(cluster).start()
        cache = BinaryCache(work).start()
        stack = Stack(cluster, kubelet, args.nrbc, work, builder_idle_timeout="5m",
                      cache=cache)
        if args.download_attempts:
            stack.builder_nix_settings["download-attempts"] = str(args.download_attempts)
        stack.install().start()
        fwd = ThrottledForwarder(FWD_NET + ".2", (PROXY_ADDRESS, stack.proxy_port),
                                 args.uplink_mbit * 1e6 / 8)
        kh = os.path.join(work, "fwd_known_hosts")
        with open(kh, "w") as f:
            f.write("[%s]:%d %s" % (fwd.ip, fwd.port,
                                    open(stack.keys["host-key"] + ".pub").read()))
        builders = conftest.NixClient.builders(fwd.ip, "ssh-ng", max_jobs=4)

        results = {v: [] for v in variants}
        for i in range(args.runs):
            order = variants if i % 2 == 0 else list(reversed(variants))
            line = []
            for v in order:
                bargs = {"salt": uuid.uuid4().hex, "n": args.n, "size": size,
                         "parts": args.parts}
                pub, top = client_with_input(work, "pub-%s-%d" % (v, i), bargs)
                cache.add(pub.store, [top])
                c, _ = client_with_input(work, "%s-%d" % (v, i), bargs)
                ref = c.build("closure.nix", args=bargs, max_jobs=1,
                              store=os.path.join(c.dir, "local-store"),
                              extra=["--option", "sandbox-paths", sandbox_paths()])
                want = outputs(c, ref.store, ref.out)
                if v.startswith("down"):
                    if v != "down":
                        stack.builder_nix_settings["download-attempts"] = str(args.down_attempts)
                    fresh_builders(stack, cache.unreachable())
                served0 = len(cache.served("/nar/"))
                up0, _, conns0 = fwd.counts()
                m0 = proxy_bytes_up(stack)
                opts = conftest.NixClient.sshopts(fwd.port, stack.keys[Stack.USERS[user_of[v]]],
                                                  kh)
                t0 = time.monotonic()
                try:
                    r = c.build("closure.nix", args=bargs, max_jobs=0, timeout=1800,
                                builders=builders, sshopts=opts, check=False,
                                extra=["--option", "builders-use-substitutes",
                                       "false" if v == "upload" else "true"])
                    if r.returncode != 0:
                        for p in stack.builder_pods():
                            print("--- builder pod %s:\n%s" % (
                                p["metadata"]["name"],
                                kubelet.pod_log(p["metadata"]["uid"])[-4000:]))
                        raise SystemExit("%s: nix-build failed:\n%s" % (v, r.stderr[-4000:]))
                finally:
                    secs = time.monotonic() - t0
                    if v.startswith("down"):
                        stack.builder_nix_settings.pop("download-attempts", None)
                        if args.download_attempts:
                            stack.builder_nix_settings["download-attempts"] = \
                                str(args.download_attempts)
                        fresh_builders(stack, cache)
                up, _, conns = fwd.counts()
                payload = proxy_bytes_up(stack) - m0
                served = cache.served("/nar/")[served0:]
                if r.out != ref.out or outputs(c, c.store, r.out) != want:
                    raise SystemExit("%s: outputs differ from the local build" % v)
                fetched = nar_bytes(cache, served)
                results[v].append((secs, up - up0, payload, fetched))
                line.append("%s %.2f s, up %.1f MiB (wire), proxy payload %.1f MiB, "
                            "%.1f MiB from the cache, %d connections"
                            % (v, secs, (up - up0) / MIB, payload / MIB, fetched / MIB,
                               conns - conns0))
                subprocess.run(["rm", "-rf", pub.dir])
            print("run %d: %s; outputs identical to a local build" % (i + 1, "; ".join(line)),
                  flush=True)

        print()
        print("P6s %d derivations + top sharing a %d MiB input (%d store paths), ssh-ng, "
              "uplink %s, median of %d:" % (args.n, args.size_mib, args.parts,
                                            "%g Mbit/s" % args.uplink_mbit
                                            if args.uplink_mbit else "uncapped", args.runs))
        med = {v: [statistics.median(r[k] for r in results[v]) for k in range(4)]
               for v in variants}
        for v in variants:
            s, up, pl, fe = med[v]
            print("P6s %-6s wall %.2f s (%.2fx upload), up %.2f MiB on the wire, proxy payload "
                  "%.2f MiB, %.1f MiB fetched from the cache" % (v, s, s / med["upload"][0],
                                                                 up / MIB, pl / MIB, fe / MIB))
    finally:
        if fwd:
            fwd.close()
        if stack:
            stack.stop()
        if cache:
            cache.stop()
        if kubelet:
            kubelet.stop()
        cluster.stop()
        if os.environ.get("NRBC_KEEP_BENCH_DIR") != "1":
            conftest.kubelet_mod.remove_tree(work)


if __name__ == "__main__":
    sys.exit(main())
