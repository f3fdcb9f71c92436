#!/usr/bin/python3
"""Builder pod start and cold session latency, on the test kubelet (builder
pods as host processes) and on a real node (containers through containerd),
one after the other in the same run; the real node as shipped (sandboxed
builds) and with --builder-sandbox=false.

The stack is installed from manifests/ with no warm pool
(--warm-pool-size=0) and a 2 s idle timeout, so every session is cold:
each run waits until no builder is left, then a key opens one session
(`nix store ping` over ssh-ng through the proxy; three keys in turn).
Per run:

  session   the client's wall time of `nix store ping` (connect, the
            proxy's wait for a builder, the builder's handshake, nix-daemon)
  wait      the proxy's wait for the session's builder, request -> Running
            (its log: "ready after N ms")
  pod       builder pod created -> Ready (readiness probe on sshd), both
            as seen by a `kubectl get pods -w` started before the session
  start     of which builder pod created -> its container running

Usage: test/bench/bench_pod_start.py [--nrbc build/src/nrbc] [--runs 5]
       [--only test|real]
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from substrate import REPO, NAMESPACE, Substrate  # noqa: E402


class PodWatch:
    """Per builder pod (by uid: a key's builder pod gets the same name each
    time), when it was first seen, its container first running, and it
    first Ready: monotonic, at the watch line's arrival (a few ms late at
    most, the same on both substrates; the API's timestamps are whole
    seconds)."""

    def __init__(self, cluster):
        self.seen, self.running, self.ready = {}, {}, {}
        self.proc = subprocess.Popen(
            [os.path.join(cluster.bindir, "kubectl"), "--kubeconfig", cluster.kubeconfig,
             "-n", NAMESPACE, "get", "pods", "-w",
             "-l", "app.kubernetes.io/name=nrbc-builder", "-o",
             'jsonpath={.metadata.uid}{" "}'
             '{.status.conditions[?(@.type=="Ready")].status}{" "}'
             '{.status.containerStatuses[0].state.running.startedAt}{"\\n"}'],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            now = time.monotonic()
            uid, ready, started = (line.rstrip("\n").split(" ") + ["", ""])[:3]
            self.seen.setdefault(uid, now)
            if started:
                self.running.setdefault(uid, now)
            if ready == "True":
                self.ready.setdefault(uid, now)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def waits_ms(log_text):
    return [int(m) for m in re.findall(r"ready after (\d+) ms", log_text)]


def measure(real_node, nrbc, runs, sandbox=True):
    work = tempfile.mkdtemp(prefix="nrbc-bench-podstart-")
    os.chmod(work, 0o755)
    sub = watch = None
    out = {"session": [], "wait": [], "pod": [], "start": []}
    try:
        sub = Substrate(real_node, nrbc, work, builder_idle_timeout="2s", warm_pool_size=0,
                        sandbox=sandbox)
        s = sub.stack
        watch = PodWatch(sub.cluster)
        env = dict(os.environ)
        env.pop("NIX_REMOTE", None)
        for i in range(runs):
            s.wait_clean(timeout=120)
            before = len(waits_ms(sub.proxy_log()))
            uids = set(watch.seen)
            env["NIX_SSHOPTS"] = s.sshopts(i % len(s.USERS))
            t0 = time.monotonic()
            subprocess.run(["nix", "store", "ping", "--store",
                            "ssh-ng://nixbld@%s" % s.proxy_address], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
            out["session"].append(time.monotonic() - t0)
            time.sleep(0.5)     # the watch's Ready event may trail the session
            out["wait"] += [w / 1000 for w in waits_ms(sub.proxy_log())[before:]]
            new = set(watch.ready) - uids
            pods = [watch.ready[n] - watch.seen[n] for n in new]
            out["pod"] += pods
            out["start"] += [watch.running[n] - watch.seen[n] for n in new if n in watch.running]
            print("%s run %d: session %.2f s, proxy waited %s ms, pod created -> Ready %s s "
                  "(container running after %s s)"
                  % (sub.name, i + 1, out["session"][-1], waits_ms(sub.proxy_log())[before:],
                     ["%.2f" % p for p in pods],
                     ["%.2f" % (watch.running[n] - watch.seen[n]) for n in new
                      if n in watch.running]), flush=True)
    finally:
        if watch:
            watch.stop()
        if sub:
            sub.stop()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nrbc", default=os.path.join(REPO, "build", "src", "nrbc"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", choices=("test", "real"))
    args = ap.parse_args()
    results = {}
    # The real node twice: as shipped (builds sandboxed, so each builder
    # tries a sandboxed build before it listens) and with the sandbox off.
    for name, real, sandbox in (("test kubelet", False, False), ("real node", True, True),
                                ("real, no sbx", True, False)):
        if args.only and args.only != ("real" if real else "test"):
            continue
        results[name] = measure(real, args.nrbc, args.runs, sandbox=sandbox)
    print()
    print("median of %d cold sessions (warm pool 0): session / proxy wait / pod created "
          "-> Ready / of which -> container running" % args.runs)
    for name, r in results.items():
        med = [statistics.median(r[k]) if r[k] else float("nan")
               for k in ("session", "wait", "pod", "start")]
        print("  %-13s %.2f s / %.2f s / %.2f s / %.2f s  (%d pods)"
              % (name, *med, len(r["pod"])))


if __name__ == "__main__":
    sys.exit(main())
