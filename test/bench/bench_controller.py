#!/usr/bin/python3
"""Benchmark of `nrbc controller` against the local test cluster (no
kubelet: pods are created, never run). Prints, each beside a baseline
measured in the same run on the same API server:

  P3   NixBuildRequest created -> its pod seen on a pod watch, one at a time
       (N requests): p50 / p99 / max. Baseline: a ConfigMap created -> seen
       on a ConfigMap watch (one API write + one watch delivery; the
       controller adds a watch delivery and a write of its own).
  P3b  100 requests created at once -> the last pod seen, measured from the
       last create's response.
  P4   controller RSS with 120 requests (and their 120 pods) cached, and
       with 5,000.

Usage: test/bench/bench_controller.py [--nrbc build/src/nrbc] [--latency-n 200]
       [--burst 100] [--big 5000[,20000...]] [--keep]
The controller runs with its own ServiceAccount token and the shipped Role.
"""

import argparse
import http.client
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "test", "cluster"))
import cluster as cluster_mod  # noqa: E402
sys.path.insert(0, os.path.join(REPO, "test", "integration"))
from procmem import describe as mem, private_dirty_kib  # noqa: E402

NS = "bench"
SELECTOR = "app.kubernetes.io%2Fname%3Dnrbc-builder"


class Conn:
    """One keep-alive HTTPS connection with the admin certificate."""

    def __init__(self, c):
        ctx = ssl.create_default_context(cafile=c.ca_file)
        ctx.load_cert_chain(c.client_cert, c.client_key)
        host = c.server.split("//")[1]
        self.h = http.client.HTTPSConnection(host, context=ctx, timeout=None)

    def req(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        hdr = {"Accept": "application/json"}
        if data is not None:
            hdr["Content-Type"] = "application/json"
        self.h.request(method, path, body=data, headers=hdr)
        r = self.h.getresponse()
        raw = r.read()
        return r.status, (json.loads(raw) if raw else None)


class Watch(threading.Thread):
    """Streams ADDED events of a collection; records the arrival time of
    each object name and wakes waiters."""

    def __init__(self, c, path, key=lambda o: o["metadata"]["name"]):
        super().__init__(daemon=True)
        self.conn = Conn(c)
        self.path = path
        self.key = key
        self.seen = {}
        self.cv = threading.Condition()
        self.ready = threading.Event()

    def run(self):
        st, lst = self.conn.req("GET", self.path)
        assert st == 200, lst
        rv = lst["metadata"]["resourceVersion"]
        sep = "&" if "?" in self.path else "?"
        self.conn.h.request("GET", "%s%swatch=1&resourceVersion=%s&timeoutSeconds=3600" % (
            self.path, sep, rv), headers={"Accept": "application/json"})
        r = self.conn.h.getresponse()
        self.ready.set()
        while True:
            line = r.readline()
            if not line:
                return
            ev = json.loads(line)
            if ev["type"] != "ADDED":
                continue
            t = time.monotonic()
            with self.cv:
                self.seen.setdefault(self.key(ev["object"]), t)
                self.cv.notify_all()

    def wait(self, name, timeout=30):
        with self.cv:
            if not self.cv.wait_for(lambda: name in self.seen, timeout):
                raise TimeoutError("never saw " + name)
            return self.seen[name]

    def wait_count(self, n, timeout=120):
        with self.cv:
            if not self.cv.wait_for(lambda: len(self.seen) >= n, timeout):
                raise TimeoutError("saw %d of %d" % (len(self.seen), n))
            return max(self.seen.values())


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def fmt(xs):
    return "p50 %6.2f ms  p99 %6.2f ms  max %6.2f ms" % (
        pct(xs, 50) * 1e3, pct(xs, 99) * 1e3, max(xs) * 1e3)


def nbr(name):
    return {"apiVersion": "nix.io/v1alpha1", "kind": "NixBuildRequest",
            "metadata": {"name": name}, "spec": {"sessionId": name}}


def metrics(port):
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        return "\n".join(line for line in r.read().decode().splitlines()
                         if line.startswith("nrbc_controller") and "bucket" not in line)


def histogram_quantiles(port, name, qs=(50, 99)):
    """Quantiles of a Prometheus histogram as bucket upper bounds (ms)."""
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        text = r.read().decode()
    buckets = []
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le),
                            float(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1] if buckets else 0
    out = []
    for q in qs:
        for le, n in buckets:
            if total and n >= total * q / 100.0:
                out.append(le * 1e3)
                break
    return total, out


def metric(port, name):
    for line in metrics(port).splitlines():
        k, _, v = line.rpartition(" ")
        if k == name:
            return float(v)
    return 0.0


def create_many(c, names, threads=4):
    """Creates requests from a few connections at once; returns the
    monotonic time the last create answered."""
    chunks = [names[i::threads] for i in range(threads)]
    last = [0.0] * threads

    def work(i):
        conn = Conn(c)
        for n in chunks[i]:
            st, body = conn.req("POST", "/apis/nix.io/v1alpha1/namespaces/%s/nixbuildrequests"
                                % NS, nbr(n))
            assert st == 201, body
        last[i] = time.monotonic()
    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return max(last)


def delete_all(c):
    conn = Conn(c)
    conn.req("DELETE", "/apis/nix.io/v1alpha1/namespaces/%s/nixbuildrequests" % NS)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nrbc", default=os.path.join(REPO, "build", "src", "nrbc"))
    ap.add_argument("--latency-n", type=int, default=200)
    ap.add_argument("--burst", type=int, default=100)
    ap.add_argument("--big", default="5000",
                    help="comma-separated request counts to measure memory at; with more "
                    "than one, the growth per request + pod between them is printed")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="nrbc-bench-controller-")
    c = cluster_mod.Cluster(os.environ.get("NRBC_CLUSTER_BIN"))
    ctl = None
    try:
        c.start(os.path.join(work, "cluster"))
        c.kubectl("create", "namespace", NS)
        for f in ("serviceaccount.yaml", "role.yaml"):
            c.kubectl("apply", "-n", NS, "-f", os.path.join(REPO, "manifests", "controller", f))
        kc = c.sa_kubeconfig("nrbc-controller", NS, os.path.join(work, "controller.kubeconfig"))
        log = open(os.path.join(work, "controller.log"), "ab")
        health_port = cluster_mod.free_port()
        wrap = os.environ.get("NRBC_BENCH_WRAP", "").split()
        ctl = subprocess.Popen(wrap + [args.nrbc, "controller", "--kubeconfig", kc, "--namespace", NS,
                                "--builder-image", "nrbc-builder:bench", "--builder-sandbox=false", "--nix-config",
                                "nix-config", "--ssh-key-secret", "nix-builder-ssh-keys",
                                "--health-address", "127.0.0.1", "--health-port",
                                str(health_port), "--log-level", "info"],
                               stdout=log, stderr=subprocess.STDOUT)
        time.sleep(1.0)
        print("controller idle: " + mem(ctl.pid))

        pods = Watch(c, "/api/v1/namespaces/%s/pods?labelSelector=%s" % (NS, SELECTOR),
                     key=lambda o: o["metadata"]["ownerReferences"][0]["name"])
        cms = Watch(c, "/api/v1/namespaces/%s/configmaps" % NS)
        # The two round trips the controller cannot avoid, measured on their
        # own: a request created -> seen on a watch, and the same pod the
        # controller makes, created directly -> seen on a watch.
        nbrs = Watch(c, "/apis/nix.io/v1alpha1/namespaces/%s/nixbuildrequests" % NS)
        direct_pods = Watch(c, "/api/v1/namespaces/%s/pods?labelSelector=bench%%3Ddirect" % NS)
        for w in (pods, cms, nbrs, direct_pods):
            w.start()
        for w in (pods, cms, nbrs, direct_pods):
            w.ready.wait(10)
        conn = Conn(c)

        # -- P3: one at a time, interleaved with the baseline
        lat, base, trip_nbr, trip_pod = [], [], [], []
        pod_template = None
        rss120 = None
        for i in range(args.latency_n):
            name = "lat-%04d" % i
            t0 = time.monotonic()
            st, body = conn.req("POST", "/api/v1/namespaces/%s/configmaps" % NS,
                                {"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": name}})
            assert st == 201, body
            base.append(cms.wait(name) - t0)
            t0 = time.monotonic()
            st, body = conn.req("POST", "/apis/nix.io/v1alpha1/namespaces/%s/nixbuildrequests"
                                % NS, nbr(name))
            assert st == 201, body
            lat.append(pods.wait(name) - t0)
            trip_nbr.append(nbrs.wait(name) - t0)
            if pod_template is None:
                st, made = conn.req("GET", "/api/v1/namespaces/%s/pods?labelSelector=%s" % (
                    NS, SELECTOR))
                assert st == 200 and made["items"], made
                pod_template = made["items"][0]
            direct = {"apiVersion": "v1", "kind": "Pod", "spec": pod_template["spec"],
                      "metadata": {"name": "direct-%04d" % i, "labels": {"bench": "direct"}}}
            t0 = time.monotonic()
            st, body = conn.req("POST", "/api/v1/namespaces/%s/pods" % NS, direct)
            assert st == 201, body
            trip_pod.append(direct_pods.wait("direct-%04d" % i) - t0)
            if i + 1 == 120:
                rss120 = mem(ctl.pid)
        print("P3  CR created -> pod created, %d one at a time:" % args.latency_n)
        print("      controller: %s" % fmt(lat))
        print("      baseline  : %s   (ConfigMap created -> seen on a watch)" % fmt(base))
        print("      ratio p50 %.2fx; added by the controller p50 %.2f ms" % (
            pct(lat, 50) / pct(base, 50), (pct(lat, 50) - pct(base, 50)) * 1e3))
        two = [a + b for a, b in zip(trip_nbr, trip_pod)]
        print("      two round trips: %s   (request created -> seen, plus the controller's "
              "pod made directly -> seen; request alone p50 %.2f ms, pod alone p50 %.2f ms)" % (
                  fmt(two), pct(trip_nbr, 50) * 1e3, pct(trip_pod, 50) * 1e3))
        print("      controller over two round trips: p50 %+.2f ms" % (
            (pct(lat, 50) - pct(two, 50)) * 1e3))
        n, (q50, q99) = histogram_quantiles(health_port, "nrbc_controller_pod_created_seconds")
        print("      inside the controller (request seen -> pod create answered, its own "
              "histogram, %d samples): p50 <= %g ms, p99 <= %g ms" % (n, q50, q99))
        if rss120:
            print("P4  controller with 120 requests + 120 pods cached: " + rss120)

        # -- P3b: a burst
        names = ["burst-%04d" % i for i in range(args.burst)]
        before = len(pods.seen)
        t_start = time.monotonic()
        t_last_cr = create_many(c, names)
        t_last_pod = pods.wait_count(before + args.burst)
        print("P3b %d CRs at once: created in %.3f s; last pod %.3f s after the last CR "
              "(%.3f s after the first create was sent)" % (
                  args.burst, t_last_cr - t_start, t_last_pod - t_last_cr,
                  t_last_pod - t_start))
        cm_names = ["burstcm-%04d" % i for i in range(args.burst)]
        conns = [Conn(c) for _ in range(4)]
        t_start = time.monotonic()
        ts = []
        lasts = [0.0] * 4

        def cm_work(i):
            for n in cm_names[i::4]:
                st, body = conns[i].req("POST", "/api/v1/namespaces/%s/configmaps" % NS,
                                        {"apiVersion": "v1", "kind": "ConfigMap",
                                         "metadata": {"name": n}})
                assert st == 201, body
            lasts[i] = time.monotonic()
        for i in range(4):
            ts.append(threading.Thread(target=cm_work, args=(i,)))
            ts[-1].start()
        for t in ts:
            t.join()
        t_last_cm = max(lasts)
        t_seen = cms.wait_count(args.latency_n + args.burst)
        print("      baseline: %d ConfigMaps at once: last seen %.3f s after the last create"
              % (args.burst, t_seen - t_last_cm))

        # -- P4: RSS at 120 and at --big requests
        steps = []
        have = len(pods.seen)  # the watch is still exact here; later it lags
        for target in [int(n) for n in args.big.split(",")]:
            if have < target:
                more = ["big-%05d" % i for i in range(have, target)]
                t0 = time.monotonic()
                create_many(c, more, threads=8)
                # A Python watcher this busy gets cut off by the API server
                # as too slow; the controller's own counter is the measure.
                deadline = time.monotonic() + 600
                while metric(health_port, "nrbc_controller_pods_created_total") < target:
                    if time.monotonic() > deadline:
                        print(metrics(health_port))
                        raise TimeoutError("pods never reached %d" % target)
                    time.sleep(0.5)
                print("      (%d more requests and their pods in %.1f s)" % (
                    len(more), time.monotonic() - t0))
                have = target
            time.sleep(2.0)
            print("P4  controller with %d requests + %d pods cached: %s" % (
                target, target, mem(ctl.pid)))
            steps.append((target, private_dirty_kib(ctl.pid)))
            if len(steps) > 1:
                (n0, k0), (n1, k1) = steps[-2], steps[-1]
                print("      growth %d -> %d: %.2f KiB private per request + pod" % (
                    n0, n1, (k1 - k0) / float(n1 - n0)))
        print("controller metrics:")
        print(metrics(health_port))
    finally:
        if ctl is not None:
            ctl.send_signal(signal.SIGTERM)
            try:
                ctl.wait(20)
            except subprocess.TimeoutExpired:
                ctl.kill()
        c.stop()
        if not args.keep:
            subprocess.run(["rm", "-rf", work])
        else:
            print("work dir:", work)


if __name__ == "__main__":
    main()
