#!/usr/bin/python3
"""P6: a real Nix build of an 11-derivation graph through nrbc, beside the
same build against one builder reached directly by SSH, in one run on the
same machine and the same local cluster.

  direct   one builder pod (made by hand, already Running), ssh-ng straight
           to its IP: the baseline
  nrbc     through the proxy, the shipped manifests (builder reuse, 4 slots,
           warm pool of 2, idle timeout 5m): Nix opens one connection per
           derivation; the first claims a pool builder, the rest reuse it

Run 1 is the cold case (no builder of this client key yet: a pool claim);
later runs find the key's builder warm. Prints wall times, the ratios, and
how much of the nrbc time sessions spent waiting for their builder (from
the proxy's log: "ready after N ms").

With --real-node both sides run in containers on a real node (kubelet,
containerd): nrbc's Deployments as shipped, and the direct builder a copy
of a builder pod the controller made, reached at its pod IP.

Usage: test/bench/bench_nix_build.py [--nrbc build/src/nrbc] [--runs 3] [--n 10]
       [--real-node]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "test", "integration"))
sys.path.insert(0, HERE)

import conftest  # noqa: E402
from nix_bench_common import timed_build, waits_ms  # noqa: E402
from substrate import Substrate  # noqa: E402


def build(client, builders, sshopts, n):
    return timed_build(client, "graph.nix", builders, sshopts, n=n)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nrbc", default=os.path.join(REPO, "build", "src", "nrbc"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--real-node", action="store_true",
                    help="nrbc's Deployments and the builder pods (the direct one "
                         "too) as containers on a real node")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="nrbc-bench-build-")
    os.chmod(work, 0o755)
    sub = None
    try:
        # The idle timeout as shipped (5m): later runs find the key's builder.
        sub = Substrate(args.real_node, args.nrbc, work, builder_idle_timeout="5m")
        stack = sub.stack
        # The baseline builder: a pod made by hand like the controller's,
        # with the same Secret and ConfigMap; Nix reaches it directly.
        _, direct_opts, direct_builders = sub.builder_pod("direct-builder")
        print("substrate: %s" % sub.name, flush=True)

        direct, through = [], []
        for i in range(args.runs):
            c = conftest.NixClient(os.path.join(work, "client-%d" % i))
            os.makedirs(c.dir, exist_ok=True)
            direct.append(build(c, direct_builders, direct_opts, args.n))
            before = len(waits_ms(sub.proxy_log()))
            through.append(build(c, stack.builders("ssh-ng"), stack.sshopts(), args.n))
            waits = waits_ms(sub.proxy_log())[before:]
            print("run %d: direct %.2f s, nrbc %.2f s (%d sessions, pod wait %.2f s in all)"
                  % (i + 1, direct[-1], through[-1], len(waits), sum(waits) / 1000),
                  flush=True)
        all_waits = waits_ms(sub.proxy_log())
        d, t = statistics.median(direct), statistics.median(through)
        wait_share = sum(all_waits) / 1000 / sum(through)
        print()
        print("P6 %d-derivation build, median of %d: direct %.2f s, through nrbc %.2f s, "
              "ratio %.2fx" % (args.n + 1, args.runs, d, t, t / d))
        print("P6 cold (run 1, pool claim): %.2fx; warm builder (runs 2-%d): %.2fx"
              % (through[0] / direct[0], args.runs,
                 statistics.median(through[1:]) / statistics.median(direct[1:])
                 if args.runs > 1 else float("nan")))
        print("P6 sessions waited for a fresh pod %.0f%% of nrbc's wall time "
              "(p50 %d ms per session, %d sessions)"
              % (100 * wait_share, statistics.median(all_waits), len(all_waits)))
    finally:
        if sub:
            sub.stop()


if __name__ == "__main__":
    sys.exit(main())
