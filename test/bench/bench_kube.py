#!/usr/bin/python3
"""Benchmark of the Kubernetes layer (src/kube/, driven through
test/tools/kubetool) against the local test cluster. Each figure is printed
beside baselines measured in the same run on the same API server:

  K1  create -> informer ADDED latency, N objects created one at a time
      (time just before the POST is sent -> time the event is seen):
        nrbc      kubetool informer --timestamps (CLOCK_MONOTONIC stamped in
                  the informer's add handler), and the same lines as read by
                  this script (the measure kubectl gets);
        kubectl   `kubectl get --watch --output-watch-events -o name` (which
                  prints only kind/name), stamped when this script reads it;
        raw       a Python http.client watch stream in this process.
  K2  GET of one object, COUNT times, 1 and 16 in flight:
        nrbc      kubetool bench-get (libcurl multi + libuv, HTTP/2), timed
                  inside kubetool after one untimed GET;
        curl      one curl process, COUNT URLs, HTTP/2, sequential or
                  --parallel --parallel-max 16 (its start-up and TLS
                  handshake removed by subtracting a 1-URL run);
        python    http.client keep-alive HTTP/1.1, 1 connection, or 16
                  threads with a connection each.
      The API server is the bottleneck on a 2-core machine, so K2 also
      prints the client's own CPU time per GET (rusage of the kubetool or
      curl child; process time of this script for python).

Usage: test/bench/bench_kube.py [--kubetool build-bench/test/tools/kubetool]
       [--n 300] [--resource configmaps|nixbuildrequests] [--gets 2000]
       [--rounds 3] [--keep]
Set NRBC_CLUSTER_BIN=$(test/cluster/build.sh) to skip the build check.
Loopback only; the cluster and every child are stopped on any exit.
"""

import argparse
import resource
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

NS = "bench"
TARGET = "bench-get-target"
MARKER = "bench-ready-marker"

RESOURCES = {
    "configmaps": ("/api/v1/namespaces/%s/configmaps" % NS,
                   lambda n: {"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": n}, "data": {"k": "v"}}),
    "nixbuildrequests": ("/apis/nix.io/v1alpha1/namespaces/%s/nixbuildrequests" % NS,
                         lambda n: {"apiVersion": "nix.io/v1alpha1",
                                    "kind": "NixBuildRequest", "metadata": {"name": n},
                                    "spec": {"sessionId": n}}),
}


def ssl_ctx(c):
    ctx = ssl.create_default_context(cafile=c.ca_file)
    ctx.load_cert_chain(c.client_cert, c.client_key)
    return ctx


class Conn:
    """One keep-alive HTTPS (HTTP/1.1) connection with the admin certificate."""

    def __init__(self, c):
        host = c.server.split("//")[1]
        self.h = http.client.HTTPSConnection(host, context=ssl_ctx(c), timeout=60)

    def req(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        hdr = {"Accept": "application/json"}
        if data is not None:
            hdr["Content-Type"] = "application/json"
        self.h.request(method, path, body=data, headers=hdr)
        r = self.h.getresponse()
        raw = r.read()
        return r.status, raw


class Seen:
    """First-seen times by object name, shared by the watchers."""

    def __init__(self, what):
        self.what = what
        self.t = {}
        self.cv = threading.Condition()

    def add(self, name, t):
        with self.cv:
            if name not in self.t:
                self.t[name] = t
                self.cv.notify_all()

    def wait(self, name, timeout=30):
        with self.cv:
            if not self.cv.wait_for(lambda: name in self.t, timeout):
                raise TimeoutError("%s never saw %s" % (self.what, name))
            return self.t[name]


class LineProc:
    """A child whose stdout lines are parsed by `parse(line) -> name or
    None, self-stamp or None`; records the read time (and the child's own
    stamp when it has one)."""

    def __init__(self, what, argv, parse, log):
        self.what = what
        self.read = Seen(what + " (read)")
        self.stamped = Seen(what + " (stamped)")
        self.parse = parse
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=log, preexec_fn=cluster_mod._die_with_parent)
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        for line in self.p.stdout:
            t = time.monotonic()
            name, stamp = self.parse(line)
            if name is None:
                continue
            self.read.add(name, t)
            if stamp is not None:
                self.stamped.add(name, stamp)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def parse_kubetool(line):
    try:
        ev = json.loads(line)
    except ValueError:
        return None, None
    if ev.get("event") != "add":
        return None, None
    return ev["key"].split("/", 1)[-1], ev.get("mono")


def parse_kubectl(line):
    # "configmap/NAME": kubectl 1.32 drops --output-watch-events with
    # -o name; every object here is created once and never changed, so the
    # first line naming it is its ADDED event.
    parts = line.decode(errors="replace").split()
    if not parts or parts[0] not in ("ADDED", parts[-1]) or "/" not in parts[-1]:
        return None, None
    return parts[-1].split("/", 1)[-1], None


class RawWatch(threading.Thread):
    """A plain HTTP/1.1 watch stream (list, then watch from its RV)."""

    def __init__(self, c, path):
        super().__init__(daemon=True)
        self.conn = Conn(c)
        self.path = path
        self.seen = Seen("raw watch")
        self.error = None

    def run(self):
        try:
            st, raw = self.conn.req("GET", self.path)
            assert st == 200, raw
            lst = json.loads(raw)
            for o in lst["items"]:
                self.seen.add(o["metadata"]["name"], time.monotonic())
            self.conn.h.request("GET", "%s?watch=1&resourceVersion=%s&timeoutSeconds=3600" % (
                self.path, lst["metadata"]["resourceVersion"]),
                headers={"Accept": "application/json"})
            r = self.conn.h.getresponse()
            while True:
                line = r.readline()
                if not line:
                    return
                t = time.monotonic()
                ev = json.loads(line)
                if ev["type"] == "ADDED":
                    self.seen.add(ev["object"]["metadata"]["name"], t)
        except Exception as e:  # reported by the waiter's timeout
            self.error = e

    def stop(self):
        try:
            self.conn.h.sock.shutdown(2)
        except Exception:
            pass


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def fmt(xs):
    return "p50 %6.2f ms  p99 %6.2f ms  max %6.2f ms" % (
        pct(xs, 50) * 1e3, pct(xs, 99) * 1e3, max(xs) * 1e3)


# ---- K1 --------------------------------------------------------------------------------

def bench_latency(c, args, kubetool, work, log):
    coll, make = RESOURCES[args.resource]
    conn = Conn(c)
    st, raw = conn.req("POST", coll, make(MARKER))
    assert st == 201, raw
    kt_res = "nixbuildrequests" if args.resource == "nixbuildrequests" else args.resource
    kt = LineProc("nrbc informer", [kubetool, "--kubeconfig", c.kubeconfig, "informer", kt_res,
                                    NS, "--timestamps"], parse_kubetool, log)
    kc = LineProc("kubectl watch", [os.path.join(c.bindir, "kubectl"), "--kubeconfig",
                                    c.kubeconfig, "--cache-dir",
                                    os.path.join(work, "kubectl-cache"), "get", args.resource,
                                    "-n", NS, "--watch", "--output-watch-events", "-o", "name"],
                  parse_kubectl, log)
    raw_w = RawWatch(c, coll)
    raw_w.start()
    try:
        for s in (kt.read, kc.read, raw_w.seen):
            s.wait(MARKER, timeout=60)
        # Warm-up objects, not counted: the first events after a list can
        # race the watch being set up.
        for i in range(5):
            name = "warm-%d" % i
            st, raw = conn.req("POST", coll, make(name))
            assert st == 201, raw
            for s in (kt.read, kc.read, raw_w.seen):
                s.wait(name)
        nrbc_stamp, nrbc_read, kubectl, raw_l = [], [], [], []
        for i in range(args.n):
            name = "lat-%04d" % i
            t0 = time.monotonic()
            st, raw = conn.req("POST", coll, make(name))
            assert st == 201, raw
            nrbc_stamp.append(kt.stamped.wait(name) - t0)
            nrbc_read.append(kt.read.wait(name) - t0)
            kubectl.append(kc.read.wait(name) - t0)
            raw_l.append(raw_w.seen.wait(name) - t0)
    finally:
        kt.stop()
        kc.stop()
        raw_w.stop()
    if kt.p.returncode not in (0, None):
        print("warning: kubetool informer exited %d" % kt.p.returncode)
    print("K1  %s created -> ADDED seen, %d one at a time (from just before the POST):"
          % (args.resource, args.n))
    print("      nrbc informer, stamped in handler : %s" % fmt(nrbc_stamp))
    print("      nrbc informer, line read here     : %s" % fmt(nrbc_read))
    print("      baseline kubectl --watch, read here: %s" % fmt(kubectl))
    print("      baseline raw Python watch stream  : %s" % fmt(raw_l))
    print("      ratio p50 nrbc(read)/kubectl %.2fx  nrbc(stamped)/raw %.2fx;"
          "  p99 nrbc(read)/kubectl %.2fx" % (
              pct(nrbc_read, 50) / pct(kubectl, 50), pct(nrbc_stamp, 50) / pct(raw_l, 50),
              pct(nrbc_read, 99) / pct(kubectl, 99)))
    return {"nrbc_stamp": nrbc_stamp, "nrbc_read": nrbc_read, "kubectl": kubectl,
            "raw": raw_l}


# ---- K2 --------------------------------------------------------------------------------

def child_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def get_nrbc(c, kubetool, count, conc):
    """(req/s timed inside kubetool, CPU seconds of the GETs: the CPU of a
    1-GET run -- start-up, kubeconfig, TLS -- subtracted)."""
    one = min(nrbc_run(c, kubetool, 1, 1)[1] for _ in range(3))
    rps, cpu = nrbc_run(c, kubetool, count, conc)
    return rps, max(cpu - one, 0.0)


def nrbc_run(c, kubetool, count, conc):
    cpu0 = child_cpu()
    p = subprocess.run([kubetool, "--kubeconfig", c.kubeconfig, "bench-get", "configmaps", NS,
                        TARGET, str(count), "--concurrency", str(conc)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300,
                       preexec_fn=cluster_mod._die_with_parent)
    if p.returncode != 0:
        raise RuntimeError("kubetool bench-get exited %d: %s" % (p.returncode, p.stderr[-500:]))
    out = json.loads(p.stdout.decode().strip().splitlines()[-1])
    assert out["done"] == count and out["failed"] == 0, out
    return out["rps"], child_cpu() - cpu0


def curl_run(c, cfg_path, count, conc, work):
    url = "%s/api/v1/namespaces/%s/configmaps/%s" % (c.server, NS, TARGET)
    with open(cfg_path, "w") as f:
        for _ in range(count):
            f.write('url = "%s"\noutput = "/dev/null"\n' % url)
    argv = ["curl", "--http2", "-s", "--no-progress-meter", "--cacert", c.ca_file,
            "--cert", c.client_cert, "--key", c.client_key, "-H", "Accept: application/json",
            "-w", "%{http_code} %{http_version}\n", "-K", cfg_path]
    if conc > 1:
        argv += ["--parallel", "--parallel-max", str(conc)]
    t0 = time.monotonic()
    cpu0 = child_cpu()
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300,
                       preexec_fn=cluster_mod._die_with_parent)
    dt = time.monotonic() - t0
    cpu = child_cpu() - cpu0
    codes = p.stdout.decode().split("\n")
    ok = sum(1 for x in codes if x == "200 2")
    if p.returncode != 0 or ok != count:
        raise RuntimeError("curl: rc %d, %d of %d were 200 over HTTP/2: %r" % (
            p.returncode, ok, count, (codes[:3], p.stderr[-300:])))
    return dt, cpu


def get_curl(c, count, conc, work):
    cfg = os.path.join(work, "curl-urls.cfg")
    one, one_cpu = min(curl_run(c, cfg, 1, 1, work) for _ in range(3))
    many, many_cpu = curl_run(c, cfg, count, conc, work)
    return (count - 1) / max(many - one, 1e-6), max(many_cpu - one_cpu, 0.0)


def get_python(c, count, conc):
    path = "/api/v1/namespaces/%s/configmaps/%s" % (NS, TARGET)
    conns = [Conn(c) for _ in range(conc)]
    for k in conns:
        st, raw = k.req("GET", path)
        assert st == 200, raw
    per = [count // conc + (1 if i < count % conc else 0) for i in range(conc)]
    bad = []

    def work(i):
        for _ in range(per[i]):
            st, raw = conns[i].req("GET", path)
            if st != 200:
                bad.append(st)
    ts = [threading.Thread(target=work, args=(i,)) for i in range(conc)]
    t0 = time.monotonic()
    cpu0 = time.process_time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    for k in conns:
        k.h.close()
    assert not bad, bad[:5]
    return count / dt, cpu


def bench_get(c, args, kubetool, work):
    st, raw = Conn(c).req("POST", "/api/v1/namespaces/%s/configmaps" % NS,
                          {"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": TARGET}, "data": {"k": "v"}})
    assert st == 201, raw
    res = {}
    for conc in (1, 16):
        runs = {"nrbc": [], "curl": [], "python": []}
        cpus = {"nrbc": [], "curl": [], "python": []}
        # Interleaved rounds, so a busy moment on the shared machine hits
        # every client alike; the median of the rounds is reported.
        for _ in range(args.rounds):
            for k, fn in (("nrbc", lambda: get_nrbc(c, kubetool, args.gets, conc)),
                          ("curl", lambda: get_curl(c, args.gets, conc, work)),
                          ("python", lambda: get_python(c, args.gets, conc))):
                rps, cpu = fn()
                runs[k].append(rps)
                cpus[k].append(cpu * 1e6 / args.gets)
        med = {k: statistics.median(v) for k, v in runs.items()}
        cpu_med = {k: statistics.median(v) for k, v in cpus.items()}
        res[conc] = runs
        print("K2  GET configmap x%d, %2d in flight: nrbc %7.0f req/s | baseline curl HTTP/2 "
              "%7.0f req/s (ratio %.2fx) | python http.client HTTP/1.1 %7.0f req/s "
              "(ratio %.2fx)   [median of %d; rounds nrbc %s curl %s python %s]" % (
                  args.gets, conc, med["nrbc"], med["curl"], med["nrbc"] / med["curl"],
                  med["python"], med["nrbc"] / med["python"], args.rounds,
                  "/".join("%.0f" % x for x in runs["nrbc"]),
                  "/".join("%.0f" % x for x in runs["curl"]),
                  "/".join("%.0f" % x for x in runs["python"])))
        print("      client CPU per GET (user+sys): nrbc %.0f us | curl %.0f us (ratio %.2fx) | "
              "python %.0f us (ratio %.2fx)" % (
                  cpu_med["nrbc"], cpu_med["curl"], cpu_med["nrbc"] / max(cpu_med["curl"], 1e-9),
                  cpu_med["python"], cpu_med["nrbc"] / max(cpu_med["python"], 1e-9)))
        sys.stdout.flush()
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubetool", default=os.path.join(REPO, "build-bench", "test", "tools",
                                                       "kubetool"))
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--resource", choices=sorted(RESOURCES), default="configmaps")
    ap.add_argument("--gets", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-get", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    args = ap.parse_args()
    if not os.access(args.kubetool, os.X_OK):
        sys.exit("kubetool not found at %s (meson setup build-bench && ninja -C build-bench)"
                 % args.kubetool)
    kubetool = os.path.abspath(args.kubetool)

    # SIGTERM/SIGHUP unwind through the finally below like Ctrl-C does.
    def on_signal(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    work = tempfile.mkdtemp(prefix="nrbc-bench-kube-")
    c = cluster_mod.Cluster(os.environ.get("NRBC_CLUSTER_BIN"))
    log = open(os.path.join(work, "children.log"), "ab")
    try:
        c.start(os.path.join(work, "cluster"))
        c.kubectl("create", "namespace", NS)
        print("cluster up: kube-apiserver on %s (started in %.1f s); kubetool %s" % (
            c.server, c.start_seconds or 0.0, kubetool))
        sys.stdout.flush()
        if not args.skip_latency:
            bench_latency(c, args, kubetool, work, log)
            sys.stdout.flush()
        if not args.skip_get:
            bench_get(c, args, kubetool, work)
    finally:
        log.close()
        c.stop()
        if not args.keep:
            subprocess.run(["rm", "-rf", work])
        else:
            print("work dir:", work)


if __name__ == "__main__":
    main()
