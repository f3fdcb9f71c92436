"""The Kubernetes layer (src/kube/) through test/tools/kubetool.

Two halves:
  * a fake API server on loopback that streams broken watch lines
    (non-JSON, cut off, oversized, unknown type, 410s): the watch must
    report each error and the informer must recover without losing events;
  * a real kube-apiserver + etcd (test/cluster/cluster.py, a private
    cluster for this module because the tests restart the apiserver and
    compact etcd): CRUD, merge patch, status, 409 on a stale
    resourceVersion, the informer across an apiserver restart and a forced
    410, a 1,000-object burst, token rotation, TLS and kubeconfig errors.
"""

import base64
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "test", "cluster"))

import cluster as cluster_mod  # noqa: E402
from cluster import wait_for  # noqa: E402


def find_kubetool():
    env = os.environ.get("NRBC_KUBETOOL")
    if env:
        return env
    nrbc = os.environ.get("NRBC_BIN")
    cands = []
    if nrbc:
        cands.append(os.path.join(os.path.dirname(os.path.dirname(nrbc)), "test", "tools",
                                  "kubetool"))
    cands.append(os.path.join(REPO, "build", "test", "tools", "kubetool"))
    for c in cands:
        if os.access(c, os.X_OK):
            return c
    pytest.fail("kubetool not built (tried %s); set NRBC_KUBETOOL" % ", ".join(cands))


@pytest.fixture(scope="module")
def kubetool():
    return find_kubetool()


class Tool:
    """A long-running kubetool (informer, watch or shell) with its output
    lines collected by threads."""

    def __init__(self, argv, env=None, stdin=False):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.lines = []
        self.err = []
        self.cv = threading.Condition()
        self.t_out = threading.Thread(target=self._read, args=(self.p.stdout, self.lines),
                                      daemon=True)
        self.t_err = threading.Thread(target=self._read, args=(self.p.stderr, self.err),
                                      daemon=True)
        self.t_out.start()
        self.t_err.start()

    def _read(self, f, dest):
        for raw in f:
            line = raw.decode(errors="replace").rstrip("\n")
            with self.cv:
                dest.append(json.loads(line) if dest is self.lines else line)
                self.cv.notify_all()

    def events(self):
        with self.cv:
            return list(self.lines)

    def stderr(self):
        with self.cv:
            return "\n".join(self.err)

    def wait(self, pred, timeout=60, what="output"):
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                v = pred(self.lines)
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0 or self.p.poll() is not None and not self.t_out.is_alive():
                    raise AssertionError("timed out waiting for %s; stdout tail %s; stderr %s"
                                         % (what, self.lines[-5:], "\n".join(self.err[-20:])))
                self.cv.wait(min(left, 0.5))

    def send(self, cmd):
        self.p.stdin.write((json.dumps(cmd) + "\n").encode())
        self.p.stdin.flush()

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.t_out.join(5)
        self.t_err.join(5)
        return self.p.returncode

    def cache(self):
        """The last {"event":"cache"} dump."""
        dumps = [e for e in self.events() if e.get("event") == "cache"]
        assert dumps, "no cache dump; stderr:\n" + self.stderr()
        return dumps[-1]


def run(argv, input=None, env=None, timeout=60):
    p = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, env=env, timeout=timeout)
    body = None
    if p.stdout.strip():
        body = json.loads(p.stdout.strip().splitlines()[-1])
    return p.returncode, body, p.stderr


# =========================================================================
# Fake API server: broken watch streams
# =========================================================================

def pod(name, rv, ns="ns", **labels):
    return {"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": str(rv),
                         "uid": "uid-" + name, "labels": labels}}


def line(type_, obj):
    return (json.dumps({"type": type_, "object": obj}) + "\n").encode()


class FakeAPI:
    """Lists come from `self.items`; each watch request takes the next
    script from `self.watches` (a function of (handler, query)). Every
    request is recorded."""

    def __init__(self):
        self.items = {}
        self.list_rv = 1
        self.watches = []
        self.requests = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_stop = self.stop_event

            def log_message(self, *a):
                pass

            def do_GET(self):
                u = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(u.query))
                with api.lock:
                    api.requests.append((u.path, q))
                    script = api.watches.pop(0) if "watch" in q and api.watches else None
                    items = list(api.items.values())
                    rv = api.list_rv
                try:
                    if "watch" in q:
                        (script or FakeAPI.hold)(self, q)
                    elif u.path.endswith("/pods"):
                        self.json(200, {"kind": "PodList", "apiVersion": "v1",
                                        "metadata": {"resourceVersion": str(rv)},
                                        "items": items})
                    else:
                        self.json(404, {"kind": "Status", "apiVersion": "v1",
                                        "status": "Failure", "reason": "NotFound",
                                        "code": 404, "message": "pods \"x\" not found"})
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def json(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def stream(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def hold(h, q):
        h.stream()
        h.wfile.flush()
        while not h.server_stop.is_set():
            time.sleep(0.05)

    def watch_rvs(self):
        with self.lock:
            return [q.get("resourceVersion", "") for p, q in self.requests if "watch" in q]

    def lists(self):
        with self.lock:
            return [q for p, q in self.requests if "watch" not in q]

    def kubeconfig(self, path):
        with open(path, "w") as f:
            f.write("apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
                    "clusters: [{name: fake, cluster: {server: 'http://127.0.0.1:%d'}}]\n"
                    "contexts: [{name: fake, context: {cluster: fake, namespace: ns}}]\n"
                    % self.port)
        return path

    def close(self):
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake(tmp_path):
    api = FakeAPI()
    yield api
    api.close()


def send_lines(*chunks, close=True):
    def script(h, q):
        h.stream()
        for c in chunks:
            h.wfile.write(c)
            h.wfile.flush()
        if not close:
            FakeAPI.hold(h, q)
    return script


def send_410_status(h, q):
    h.json(410, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                 "reason": "Expired", "code": 410,
                 "message": "too old resource version: %s" % q.get("resourceVersion")})


def test_informer_recovers_from_broken_watch_streams(fake, tmp_path, kubetool):
    kc = fake.kubeconfig(str(tmp_path / "kubeconfig"))
    fake.items = {"a": pod("a", 5), "e": pod("e", 6)}
    fake.list_rv = 10

    def relist_state():
        # What the server "has" after watch 5: b changed, d new, a and e gone.
        with fake.lock:
            fake.items = {"b": pod("b", 21, tier="x"), "d": pod("d", 22)}
            fake.list_rv = 25

    def after(change, script):
        # The server's state changes as the watch is served, before the
        # informer can relist: not when the test thread gets round to it.
        def run(h, q):
            change()
            script(h, q)
        return run

    oversized = b'{"type":"ADDED","object":{"metadata":{"name":"big","x":"' + \
        b"x" * (17 << 20) + b'"}}}\n'
    fake.watches = [
        # 1: an event, then a line that is not JSON.
        send_lines(line("ADDED", pod("b", 11)), b"this is not json\n"),
        # 2: an event, then the stream is cut inside the next one.
        send_lines(line("MODIFIED", pod("b", 12)),
                   b'{"type":"ADDED","object":{"metadata":{"name":"c"'),
        # 3: a line over the 16 MiB limit.
        send_lines(oversized),
        # 4: an event and a bookmark split across writes, then a clean end.
        send_lines(line("DELETED", pod("a", 13))[:7], line("DELETED", pod("a", 13))[7:],
                   line("BOOKMARK", {"kind": "Pod", "metadata": {"resourceVersion": "20"}})),
        # 5: ERROR 410 inside the stream: relist.
        after(relist_state, send_lines(
            line("ERROR", {"kind": "Status", "code": 410, "reason": "Expired",
                           "message": "too old resource version"}), close=False)),
        # 6: a 410 HTTP status: relist again.
        send_410_status,
        # 7: healthy.
        send_lines(line("ADDED", pod("f", 27)), close=False),
    ]

    t = Tool([kubetool, "--kubeconfig", kc, "informer", "pods", "ns"])
    try:
        t.wait(lambda ls: any(e["event"] == "synced" for e in ls), what="synced")
        t.wait(lambda ls: any(e["event"] == "add" and e["key"] == "ns/f" for e in ls),
               what="add of ns/f after two relists")
        with fake.lock:
            fake.list_rv = 26  # unchanged content, the third list
    finally:
        t.stop()
    assert t.p.returncode == 0, t.stderr()  # LeakSanitizer would make it non-zero
    got = [(e["event"], e.get("key"), e.get("rv")) for e in t.events()
           if e["event"] != "cache"]
    assert got == [
        ("add", "ns/a", "5"), ("add", "ns/e", "6"), ("synced", None, None),
        ("add", "ns/b", "11"),
        ("update", "ns/b", "12"),
        ("delete", "ns/a", "13"),
        # The relist after ERROR 410 emits exactly the difference.
        ("update", "ns/b", "21"), ("add", "ns/d", "22"), ("delete", "ns/e", "6"),
        ("add", "ns/f", "27"),
    ], t.stderr()
    assert t.cache()["items"] == {"ns/b": "21", "ns/d": "22", "ns/f": "27"}
    # Each resume starts at the last resourceVersion seen (the bookmark
    # moved it to 20); each relist starts a watch at the list's version.
    rvs = fake.watch_rvs()
    assert rvs[:7] == ["10", "11", "12", "12", "20", "25", "25"], rvs
    assert len(fake.lists()) == 3
    assert all(q.get("limit") == "500" for q in fake.lists())
    err = t.stderr()
    assert "watch event is not valid JSON" in err
    assert "watch stream ended in the middle of an event" in err
    assert "watch event longer than 16777216 bytes" in err
    assert "relisting" in err


def test_watch_output_and_end(fake, tmp_path, kubetool):
    kc = fake.kubeconfig(str(tmp_path / "kubeconfig"))
    fake.watches = [send_lines(line("ADDED", pod("a", 2)), b"\n",
                               b'{"type":"SYNC","object":{}}\n', close=False)]
    p = subprocess.run([kubetool, "--kubeconfig", kc, "watch", "pods", "ns", "--rv", "1"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    out = [json.loads(x) for x in p.stdout.splitlines()]
    assert out[0]["type"] == "ADDED" and out[0]["object"]["metadata"]["name"] == "a"
    assert out[-1]["end"] == "error"
    assert out[-1]["error"] == 'unknown watch event type "SYNC"'
    assert p.returncode == 1
    assert fake.watch_rvs() == ["1"]
    path, q = fake.requests[0]
    assert q["watch"] == "1" and q["allowWatchBookmarks"] == "true"
    assert 300 <= int(q["timeoutSeconds"]) <= 600


def test_status_errors_decoded(fake, tmp_path, kubetool):
    kc = fake.kubeconfig(str(tmp_path / "kubeconfig"))
    rc, body, err = run([kubetool, "--kubeconfig", kc, "get", "pods", "ns", "x"])
    assert rc == 104, err
    assert body["reason"] == "NotFound"
    assert 'HTTP 404 NotFound: pods "x" not found' in err


def test_connection_refused_is_a_transport_error(tmp_path, kubetool):
    port = cluster_mod.free_port()
    kc = tmp_path / "kubeconfig"
    kc.write_text("current-context: c\n"
                  "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:%d'}}]\n"
                  "contexts: [{name: c, context: {cluster: k}}]\n" % port)
    rc, body, err = run([kubetool, "--kubeconfig", str(kc), "get", "pods", "ns", "x"])
    assert rc == 1
    assert "HTTP 0" in err and "onnect" in err, err


# =========================================================================
# A real kube-apiserver
# =========================================================================

@pytest.fixture(scope="module")
def kc(tmp_path_factory):
    """A private cluster: these tests restart the apiserver and compact etcd."""
    bindir = os.environ.get("NRBC_CLUSTER_BIN") or cluster_mod.build_binaries()
    c = cluster_mod.Cluster(bindir)
    try:
        c.start(str(tmp_path_factory.mktemp("kube-cluster")))
        yield c
    finally:
        c.stop()


_ns_counter = [0]


@pytest.fixture
def ns(kc):
    _ns_counter[0] += 1
    name = "kube-test-%d-%d" % (os.getpid() % 10000, _ns_counter[0])
    st, body = kc.api("POST", "/api/v1/namespaces",
                      {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert st == 201, body
    yield name
    kc.api("DELETE", "/api/v1/namespaces/" + name)


def kt(kubetool, kc, *args, input=None, env=None):
    return run([kubetool, "--kubeconfig", kc.kubeconfig, *args], input=input, env=env)


def nbr(name, session="s"):
    return {"apiVersion": "nix.io/v1alpha1", "kind": "NixBuildRequest",
            "metadata": {"name": name}, "spec": {"sessionId": session}}


def test_crud_pods(kc, ns, kubetool):
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "labels": {"a": "1"}},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    rc, body, err = kt(kubetool, kc, "create", "pods", ns, "-", input=json.dumps(obj))
    assert rc == 0, err
    assert body["metadata"]["uid"] and body["metadata"]["namespace"] == ns
    first_rv = body["metadata"]["resourceVersion"]

    rc, body, err = kt(kubetool, kc, "create", "pods", ns, "-", input=json.dumps(obj))
    assert rc == 109 and body["reason"] == "AlreadyExists", err

    rc, body, err = kt(kubetool, kc, "get", "pods", ns, "p1")
    assert rc == 0 and body["metadata"]["name"] == "p1"

    rc, body, err = kt(kubetool, kc, "patch", "pods", ns, "p1",
                       '{"metadata":{"labels":{"b":"2","a":null}}}')
    assert rc == 0, err
    assert body["metadata"]["labels"] == {"b": "2"}

    rc, body, err = kt(kubetool, kc, "list", "pods", ns, "--selector", "b in (2,3)")
    assert rc == 0 and [i["metadata"]["name"] for i in body["items"]] == ["p1"]
    rc, body, err = kt(kubetool, kc, "list", "pods", ns, "--selector", "b=3")
    assert rc == 0 and body["items"] == []

    # PUT with the first resourceVersion: stale, so 409 Conflict.
    stale = dict(obj, metadata={"name": "p1", "resourceVersion": first_rv})
    rc, body, err = kt(kubetool, kc, "update", "pods", ns, "p1", "-", input=json.dumps(stale))
    assert rc == 109, err
    assert body["reason"] == "Conflict"
    assert "the object has been modified" in err

    rc, cur, err = kt(kubetool, kc, "get", "pods", ns, "p1")
    cur["status"] = {"phase": "Running", "message": "from kubetool"}
    rc, body, err = kt(kubetool, kc, "update-status", "pods", ns, "p1", "-",
                       input=json.dumps(cur))
    assert rc == 0, err
    assert body["status"]["phase"] == "Running"

    rc, body, err = kt(kubetool, kc, "patch", "pods", ns, "p1",
                       '{"status":{"message":"patched"}}', "--status")
    assert rc == 0, err
    assert body["status"]["message"] == "patched"

    rc, body, err = kt(kubetool, kc, "delete", "pods", ns, "p1", "--uid", "wrong-uid")
    assert rc == 109 and body["reason"] == "Conflict", err
    rc, body, err = kt(kubetool, kc, "delete", "pods", ns, "p1", "--propagation",
                       "Background")
    assert rc == 0, err
    rc, body, err = kt(kubetool, kc, "get", "pods", ns, "p1")
    assert rc == 104 and body["reason"] == "NotFound"


def test_crud_nixbuildrequests(kc, ns, kubetool):
    rc, body, err = kt(kubetool, kc, "create", "nixbuildrequests", ns, "-",
                       input=json.dumps(nbr("b1")))
    assert rc == 0, err
    uid = body["metadata"]["uid"]
    first_rv = body["metadata"]["resourceVersion"]

    # The schema is enforced: 422 with the server's message.
    bad = nbr("b2")
    del bad["spec"]["sessionId"]
    rc, body, err = kt(kubetool, kc, "create", "nbr", ns, "-", input=json.dumps(bad))
    assert rc == 122 and body["reason"] == "Invalid", err
    assert "sessionId" in err

    # The status subresource: a PUT there changes only status...
    rc, cur, err = kt(kubetool, kc, "get", "nixbuildrequests", ns, "b1")
    cur["status"] = {"phase": "Pending", "message": "waiting"}
    cur["spec"]["sessionId"] = "ignored-by-status"
    rc, body, err = kt(kubetool, kc, "update-status", "nixbuildrequests", ns, "b1", "-",
                       input=json.dumps(cur))
    assert rc == 0, err
    assert body["status"]["phase"] == "Pending"
    assert body["spec"]["sessionId"] == "s"
    # ...and a merge patch of status through /status too.
    rc, body, err = kt(kubetool, kc, "patch", "nbr", ns, "b1",
                       '{"status":{"phase":"Running","podName":"p"}}', "--status")
    assert rc == 0, err
    assert body["status"] == {"phase": "Running", "podName": "p", "message": "waiting"}
    # A merge patch of the main resource ignores status.
    rc, body, err = kt(kubetool, kc, "patch", "nbr", ns, "b1",
                       '{"spec":{"image":"img"},"status":{"phase":"Failed"}}')
    assert rc == 0 and body["spec"]["image"] == "img"
    assert body["status"]["phase"] == "Running"

    stale = nbr("b1")
    stale["metadata"]["resourceVersion"] = first_rv
    rc, body, err = kt(kubetool, kc, "update", "nbr", ns, "b1", "-", input=json.dumps(stale))
    assert rc == 109 and body["reason"] == "Conflict", err
    stale["status"] = {"phase": "Failed"}
    rc, body, err = kt(kubetool, kc, "update-status", "nbr", ns, "b1", "-",
                       input=json.dumps(stale))
    assert rc == 109 and body["reason"] == "Conflict", err

    rc, body, err = kt(kubetool, kc, "delete", "nbr", ns, "b1", "--uid", uid)
    assert rc == 0, err
    rc, body, err = kt(kubetool, kc, "get", "nbr", ns, "b1")
    assert rc == 104


def test_http2_and_shell(kc, ns, kubetool):
    t = Tool([kubetool, "-v", "--kubeconfig", kc.kubeconfig, "shell"], stdin=True)
    try:
        for i in range(3):
            t.send(["create", "nbr", ns, nbr("h%d" % i)])
        t.send(["list", "nbr", ns])
        t.send(["get", "nbr", ns, "missing"])
        t.send(["bogus"])
        t.wait(lambda ls: len(ls) >= 6, what="6 shell replies")
    finally:
        t.p.stdin.close()
        # End of input ends the shell; give it the time to see that before
        # stop() signals it (a busy machine took longer than a poll).
        try:
            t.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        rc = t.stop()
    out = t.events()
    assert [o["status"] for o in out[:6]] == [201, 201, 201, 200, 404, -1]
    assert len(out[3]["body"]["items"]) == 3
    assert out[4]["reason"] == "NotFound"
    assert rc == 0
    # The API server offers HTTP/2 over TLS and the client uses it.
    assert "(h2," in t.stderr(), t.stderr()


# ---- informer against the real server ---------------------------------------------

def cache_of_list(kc, ns, plural="nixbuildrequests", group="/apis/nix.io/v1alpha1"):
    # Right after a restart the server answers 429 until its cache is ready.
    def get():
        st, body = kc.api("GET", "%s/namespaces/%s/%s" % (group, ns, plural))
        assert st in (200, 429), (st, body)
        return body if st == 200 else None
    body = wait_for(get, timeout=60, interval=0.2, what="a list")
    return {"%s/%s" % (ns, i["metadata"]["name"]): i["metadata"]["resourceVersion"]
            for i in body["items"]}


def informer(kubetool, kc, ns, *extra, kubeconfig=None):
    t = Tool([kubetool, "--kubeconfig", kubeconfig or kc.kubeconfig, "informer",
              "nixbuildrequests", ns, *extra])
    t.wait(lambda ls: any(e["event"] == "synced" for e in ls), what="informer synced")
    return t


def final_cache(t):
    t.p.send_signal(signal.SIGUSR1)
    n = len([e for e in t.events() if e.get("event") == "cache"])
    t.wait(lambda ls: len([e for e in ls if e.get("event") == "cache"]) > n, what="dump")
    return t.cache()["items"]


def replay(events):
    """The cache implied by the handler calls: each key's last rv."""
    state = {}
    for e in events:
        if e["event"] == "get":
            continue
        if e["event"] in ("add", "update"):
            assert e["event"] != "add" or e["key"] not in state, e
            assert e["event"] != "update" or e["key"] in state, e
            state[e["key"]] = e["rv"]
        elif e["event"] == "delete":
            assert e["key"] in state, e
            del state[e["key"]]
    return state


def test_informer_crud_and_selector(kc, ns, kubetool):
    labelled = nbr("l1")
    labelled["metadata"]["labels"] = {"team": "a"}
    assert kt(kubetool, kc, "create", "nbr", ns, "-", input=json.dumps(labelled))[0] == 0
    t = informer(kubetool, kc, ns, "--get-on-event")
    ts = informer(kubetool, kc, ns, "--selector", "team=a")
    try:
        assert kt(kubetool, kc, "create", "nbr", ns, "-", input=json.dumps(nbr("x")))[0] == 0
        assert kt(kubetool, kc, "patch", "nbr", ns, "x", '{"metadata":{"labels":'
                  '{"team":"a"}}}')[0] == 0
        assert kt(kubetool, kc, "patch", "nbr", ns, "l1", '{"metadata":{"labels":'
                  '{"team":"b"}}}')[0] == 0
        assert kt(kubetool, kc, "delete", "nbr", ns, "x")[0] == 0
        want = cache_of_list(kc, ns)
        wait_for(lambda: replay(t.events()) == want, what="informer converged")
        wait_for(lambda: any(e["event"] == "delete" for e in ts.events()),
                   what="selector informer saw the delete")
    finally:
        t.stop()
        ts.stop()
    assert t.p.returncode == 0 and ts.p.returncode == 0, t.stderr() + ts.stderr()
    kinds = [(e["event"], e.get("key")) for e in t.events()
             if e["event"] not in ("cache", "get")]
    k = ns + "/"
    # Requests started from inside the handlers completed.
    gets = sorted((e["key"], e["status"]) for e in t.events() if e["event"] == "get")
    assert [g[0] for g in gets] == [k + "l1", k + "x"]
    assert all(g[1] in (200, 404) for g in gets) and gets[0][1] == 200, gets
    assert kinds == [("add", k + "l1"), ("synced", None), ("add", k + "x"),
                     ("update", k + "x"), ("update", k + "l1"), ("delete", k + "x")]
    assert t.cache()["items"] == want
    # With a selector, objects enter and leave as their labels change.
    skinds = [(e["event"], e.get("key")) for e in ts.events() if e["event"] != "cache"]
    assert skinds == [("add", k + "l1"), ("synced", None), ("add", k + "x"),
                      ("delete", k + "l1"), ("delete", k + "x")]


def etcd_post(kc, path, body):
    req = urllib.request.Request(kc.etcd_url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def etcd_compact(kc):
    """Compacts etcd at its current revision (etcd v3 HTTP gateway)."""
    rev = int(etcd_post(kc, "/v3/kv/range",
                        {"key": base64.b64encode(b"/registry/").decode()})["header"]["revision"])
    etcd_post(kc, "/v3/kv/compaction", {"revision": rev, "physical": True})
    return rev


def apiserver_args(kc):
    return list(kc.procs["kube-apiserver"].args)


def kill_apiserver(kc):
    p = kc.procs["kube-apiserver"]
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)


def start_apiserver(kc, argv, name="kube-apiserver"):
    kc._spawn(name, argv)
    kc._wait_ready(time.monotonic() + 90)


def second_apiserver(kc, tmp_path):
    """Another apiserver on the same etcd: changes can be made while the
    one the informer talks to is down."""
    argv = apiserver_args(kc)
    port = cluster_mod.free_port()
    argv[argv.index("--secure-port") + 1] = str(port)
    argv[argv.index("--cert-dir") + 1] = str(tmp_path / "apiserver-b-certs")
    p = kc._spawn("kube-apiserver-b", argv)
    server = "https://127.0.0.1:%d" % port
    kcfg = str(tmp_path / "b.kubeconfig")
    with open(kc.kubeconfig) as f:
        text = f.read()
    with open(kcfg, "w") as f:
        f.write(text.replace(kc.server, server))
    ctx = kc.ssl_context()

    def ready():
        try:
            with urllib.request.urlopen(server + "/readyz", context=ctx, timeout=5) as r:
                return r.status == 200
        except Exception:
            return False
    wait_for(ready, timeout=90, what="second apiserver ready")
    return p, kcfg


def stop_second(kc, p):
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    kc.procs.pop("kube-apiserver-b", None)


def test_informer_across_apiserver_restart_and_forced_410(kc, ns, kubetool, tmp_path):
    for i in range(10):
        assert kt(kubetool, kc, "create", "nbr", ns, "-", input=json.dumps(nbr("r%d" % i)))[0] == 0
    t = informer(kubetool, kc, ns)
    try:
        wait_for(lambda: replay(t.events()) == cache_of_list(kc, ns), what="initial sync")
        argv = apiserver_args(kc)

        # 1. A plain restart, with changes made right after it is ready: the
        #    informer resumes (or relists) and misses none of them.
        kill_apiserver(kc)
        time.sleep(1)
        start_apiserver(kc, argv)
        assert kt(kubetool, kc, "create", "nbr", ns, "-", input=json.dumps(nbr("n1")))[0] == 0
        assert kt(kubetool, kc, "patch", "nbr", ns, "r0", '{"spec":{"image":"i1"}}')[0] == 0
        assert kt(kubetool, kc, "delete", "nbr", ns, "r1")[0] == 0
        want = cache_of_list(kc, ns)
        wait_for(lambda: replay(t.events()) == want, timeout=60,
                   what="informer converged after restart")

        # 2. The informer's apiserver goes down; meanwhile a second
        #    apiserver changes things and etcd is compacted, so the
        #    informer's resourceVersion is gone when it comes back: it must
        #    get 410, relist and emit exactly the difference.
        before = len(t.events())
        err_before = len(t.err)
        kill_apiserver(kc)
        pb, kcfg_b = second_apiserver(kc, tmp_path)
        try:
            def b(*args, input=None):
                return run([kubetool, "--kubeconfig", kcfg_b, *args], input=input)
            assert b("create", "nbr", ns, "-", input=json.dumps(nbr("n2")))[0] == 0
            assert b("patch", "nbr", ns, "r2", '{"spec":{"image":"i2"}}')[0] == 0
            assert b("delete", "nbr", ns, "r3")[0] == 0
            for i in range(30):  # churn past any watch-cache window
                assert b("patch", "nbr", ns, "r4", '{"spec":{"image":"c%d"}}' % i)[0] == 0
            rev = etcd_compact(kc)
            assert rev > 0
        finally:
            stop_second(kc, pb)
        start_apiserver(kc, argv)
        want = cache_of_list(kc, ns)
        wait_for(lambda: replay(t.events()) == want, timeout=90,
                   what="informer converged after compaction")
        after = [(e["event"], e["key"].split("/")[1]) for e in t.events()[before:]
                 if e["event"] in ("add", "update", "delete")]
        assert sorted(after) == sorted([("add", "n2"), ("update", "r2"), ("delete", "r3"),
                                        ("update", "r4")]), after
        assert final_cache(t) == want
        # The gap was bridged by a 410 and a relist, not by luck.
        assert any("expired, relisting" in x or "410 Gone, relisting" in x
                   for x in t.err[err_before:]), t.stderr()
    finally:
        t.stop()
    assert t.p.returncode == 0, t.stderr()


def test_informer_burst_of_1000(kc, ns, kubetool, tmp_path):
    # Each add handler also GETs its object: 1,000 requests started from
    # inside libcurl's write callback, queued and multiplexed.
    t = informer(kubetool, kc, ns, "--get-on-event")
    tmpl = tmp_path / "nbr.json"
    tmpl.write_text(json.dumps(nbr("burst")))
    try:
        t0 = time.monotonic()
        rc, body, err = kt(kubetool, kc, "create-many", "nbr", ns, str(tmpl), "1000")
        assert rc == 0 and body["done"] == 1000 and body["failed"] == 0, err
        create_ms = body["ms"]
        t.wait(lambda ls: len([e for e in ls if e["event"] == "add"]) >= 1000, timeout=120,
               what="1000 adds")
        seen_s = time.monotonic() - t0
        gets = t.wait(lambda ls: (lambda g: len(g) >= 1000 and g)(
            [e for e in ls if e["event"] == "get"]), timeout=120, what="1000 gets")
        assert len(gets) == 1000 and all(g["status"] == 200 for g in gets)
        assert len({g["key"] for g in gets}) == 1000
        want = cache_of_list(kc, ns)
        assert len(want) == 1000
        assert final_cache(t) == want
        assert replay(t.events()) == want
        rc, body, err = kt(kubetool, kc, "delete-many", "nbr", ns, "burst", "1000")
        assert rc == 0 and body["failed"] == 0, err
        t.wait(lambda ls: len([e for e in ls if e["event"] == "delete"]) >= 1000,
               timeout=120, what="1000 deletes")
        assert final_cache(t) == {} == cache_of_list(kc, ns)
    finally:
        t.stop()
    assert t.p.returncode == 0, t.stderr()
    print("burst: 1000 creates in %.0f ms over one client; informer saw all in %.1f s"
          % (create_ms, seen_s))


# ---- configuration and credentials -------------------------------------------------

RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: kubetool, namespace: %(ns)s}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: kubetool, namespace: %(ns)s}
rules:
- apiGroups: ["nix.io"]
  resources: ["nixbuildrequests"]
  verbs: ["get", "list", "watch", "create"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: kubetool, namespace: %(ns)s}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: kubetool}
subjects:
- {kind: ServiceAccount, name: kubetool, namespace: %(ns)s}
"""


def test_in_cluster_token_rotation(kc, ns, kubetool, tmp_path):
    kc.apply(RBAC % {"ns": ns})
    sa = tmp_path / "sa"
    sa.mkdir()
    shutil.copy(kc.ca_file, sa / "ca.crt")
    (sa / "namespace").write_text(ns)
    (sa / "token").write_text(kc.token("kubetool", ns))
    env = dict(os.environ, KUBERNETES_SERVICE_HOST="127.0.0.1",
               KUBERNETES_SERVICE_PORT=kc.server.rsplit(":", 1)[1],
               NRBC_SERVICEACCOUNT_DIR=str(sa))
    t = Tool([kubetool, "--in-cluster", "shell"], env=env, stdin=True)
    try:
        t.send(["create", "nbr", ns, nbr("t1")])
        t.wait(lambda ls: len(ls) >= 1)
        # RBAC is real: this service account may not delete.
        t.send(["delete", "nbr", ns, "t1"])
        t.wait(lambda ls: len(ls) >= 2)
        # Rotate to a garbage token: the next request must use it (401)...
        tmp = sa / "token.new"
        tmp.write_text("not-a-valid-token")
        os.rename(tmp, sa / "token")
        t.send(["get", "nbr", ns, "t1"])
        t.wait(lambda ls: len(ls) >= 3)
        # ...and then a fresh valid one, again without a restart.
        tmp.write_text(kc.token("kubetool", ns))
        os.rename(tmp, sa / "token")
        t.send(["get", "nbr", ns, "t1"])
        t.wait(lambda ls: len(ls) >= 4)
    finally:
        t.p.stdin.close()
        t.stop()
    st = [o["status"] for o in t.events()]
    assert st[:4] == [201, 403, 401, 200], (t.events(), t.stderr())
    assert "token file" in t.stderr() and "changed" in t.stderr()


def test_kubeconfig_with_inline_data_and_token(kc, ns, kubetool, tmp_path):
    kc.apply(RBAC % {"ns": ns})

    def b64(path):
        with open(path, "rb") as f:
            return base64.b64encode(f.read()).decode()
    data_cfg = tmp_path / "data.kubeconfig"
    data_cfg.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: admin\n"
        "clusters:\n- name: k\n  cluster:\n    server: %s\n"
        "    certificate-authority-data: %s\n"
        "contexts:\n- name: admin\n  context: {cluster: k, user: admin, namespace: %s}\n"
        "- name: sa\n  context: {cluster: k, user: sa}\n"
        "users:\n- name: admin\n  user:\n    client-certificate-data: %s\n"
        "    client-key-data: %s\n- name: sa\n  user:\n    token: %s\n"
        % (kc.server, b64(kc.ca_file), ns, b64(kc.client_cert), b64(kc.client_key),
           kc.token("kubetool", ns)))
    rc, body, err = run([kubetool, "--kubeconfig", str(data_cfg), "list", "pods", ns])
    assert rc == 0, err
    rc, body, err = run([kubetool, "--kubeconfig", str(data_cfg), "--context", "sa",
                         "list", "pods", ns])
    assert rc == 103 and body["reason"] == "Forbidden", err
    rc, body, err = run([kubetool, "--kubeconfig", str(data_cfg), "--context", "sa",
                         "list", "nbr", ns])
    assert rc == 0, err


def test_wrong_ca_fails_with_a_tls_error(kc, kubetool, tmp_path):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=other-ca", "-keyout", str(tmp_path / "other.key"),
                    "-out", str(tmp_path / "other.crt")], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(kc.kubeconfig) as f:
        text = f.read()
    bad = tmp_path / "bad-ca.kubeconfig"
    bad.write_text(text.replace(kc.ca_file, str(tmp_path / "other.crt")))
    assert str(tmp_path / "other.crt") in bad.read_text()
    rc, body, err = run([kubetool, "--kubeconfig", str(bad), "get", "pods", "default", "x"])
    assert rc == 1
    assert "SSL certificate problem" in err, err


def test_broken_kubeconfig_names_the_problem(kc, kubetool, tmp_path):
    with open(kc.kubeconfig) as f:
        text = f.read()
    cases = {
        "missing-cert": (text.replace(kc.client_cert, "/nonexistent/admin.crt"),
                         ".user.client-certificate: cannot read /nonexistent/admin.crt: "
                         "No such file or directory"),
        "yaml": ("clusters: [\n", "invalid YAML at line"),
    }
    for name, (content, want) in cases.items():
        path = tmp_path / (name + ".kubeconfig")
        path.write_text(content)
        rc, body, err = run([kubetool, "--kubeconfig", str(path), "get", "pods", "default",
                             "x"])
        assert rc == 3, err
        assert err.startswith("kubetool: kubeconfig %s: " % path), err
        assert want in err, err
    rc, body, err = run([kubetool, "--kubeconfig", kc.kubeconfig, "--context", "nope",
                         "get", "pods", "default", "x"])
    assert rc == 3
    assert 'kubeconfig %s: context "nope" not found' % kc.kubeconfig in err, err
