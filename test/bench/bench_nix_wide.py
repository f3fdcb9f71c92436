#!/usr/bin/python3
"""P7: a wide build, N independent derivations of S seconds of builder-bound
work (parallel.nix), with the builders line `nrbc client-config` writes
(maxJobs = builder-slots x builders-per-key, from the nrbc-client
ConfigMap), beside the same build on one builder reached directly with
maxJobs = builder-slots, in one run on the same cluster.

  direct   one builder pod (a copy of one the controller made), ssh-ng to
           its IP, maxJobs 4: what one builder does
  nrbc     through the proxy as shipped; Nix opens up to maxJobs sessions
           at once and the controller spreads them over the key's builders

Prints both wall times, the ratio, how many builders served the nrbc build
and what share of its sessions waited for a builder pod to start (cold:
"ready after N ms" with N >= --cold-ms in the proxy's log).

Usage: test/bench/bench_nix_wide.py [--real-node] [--runs 2] [--n 24] [--seconds 3]
"""

import argparse
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "test", "integration"))
sys.path.insert(0, HERE)

import conftest  # noqa: E402
from nix_bench_common import BuilderWatch, timed_build, waits_ms, written_max_jobs  # noqa: E402
from substrate import Substrate  # noqa: E402


def build(client, builders, sshopts, n, seconds):
    return timed_build(client, "parallel.nix", builders, sshopts, n=n, seconds=seconds)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nrbc", default=os.path.join(REPO, "build", "src", "nrbc"))
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--cold-ms", type=int, default=300)
    ap.add_argument("--real-node", action="store_true")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="nrbc-bench-wide-")
    os.chmod(work, 0o755)
    sub = None
    try:
        # A short idle timeout: each run starts with no builder of the key
        # but what the warm pool holds, the case a wide build meets.
        sub = Substrate(args.real_node, args.nrbc, work, builder_idle_timeout="5s")
        stack = sub.stack
        max_jobs, slots = written_max_jobs(sub.cluster)
        direct_ip, direct_opts, _ = sub.builder_pod("direct-builder")
        print("substrate: %s; written maxJobs %d (slots %d)" % (sub.name, max_jobs, slots),
              flush=True)
        direct, through, used, cold = [], [], [], []
        for i in range(args.runs):
            c = conftest.NixClient(os.path.join(work, "client-%d" % i))
            os.makedirs(c.dir, exist_ok=True)
            direct.append(build(c, conftest.NixClient.builders(direct_ip, scheme="ssh-ng",
                                                               max_jobs=slots),
                                direct_opts, args.n, args.seconds))
            # (The direct builder is one of the builder pods on the test kubelet.)
            conftest.wait_for(lambda: not stack.requests() and not [
                p for p in stack.builder_pods() if p["metadata"]["name"] != "direct-builder"],
                120, what="the key's builders gone before the nrbc run")
            before = len(waits_ms(sub.proxy_log()))
            w = BuilderWatch(stack)
            w.start()
            try:
                through.append(build(c, stack.builders("ssh-ng", max_jobs=max_jobs),
                                     stack.sshopts(), args.n, args.seconds))
            finally:
                w.stop.set()
                w.join()
            waits = waits_ms(sub.proxy_log())[before:]
            used.append(len(w.seen))
            cold.append(sum(1 for x in waits if x >= args.cold_ms) / max(1, len(waits)))
            print("run %d: direct (maxJobs %d) %.2f s, nrbc (maxJobs %d) %.2f s, %d builders, "
                  "%d sessions, %.0f%% waited >= %d ms for a pod" % (
                      i + 1, slots, direct[-1], max_jobs, through[-1], used[-1], len(waits),
                      100 * cold[-1], args.cold_ms), flush=True)
        d, t = statistics.median(direct), statistics.median(through)
        print()
        print("P7 wide build, %d x %d s, median of %d: direct one builder %.2f s, through "
              "nrbc %.2f s: %.2fx faster; builders used %s; cold sessions %s" % (
                  args.n, args.seconds, args.runs, d, t, d / t, used,
                  ["%.0f%%" % (100 * x) for x in cold]))
    finally:
        if sub:
            sub.stop()


if __name__ == "__main__":
    sys.exit(main())
