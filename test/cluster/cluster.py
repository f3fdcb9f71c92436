#!/usr/bin/python3
"""A real, local Kubernetes control plane for nrbc's tests (test code).

etcd + kube-apiserver + kube-controller-manager, built by build.sh from the
official Go modules, started on 127.0.0.1 with random free ports, RBAC on,
service-account token signing (TokenRequest works), certificates made with
the openssl CLI. There is no kubelet or scheduler unless real_node (see
node.py); tests of nrbc use the test kubelet in test/kubelet/.

Library (stdlib only):

    c = Cluster(bindir=None)      # bindir: NRBC_CLUSTER_BIN or build.sh's output
    c.start(workdir)              # returns once /readyz is ok and the CRD is Established
    c.kubeconfig, c.server, c.ca_file, c.client_cert, c.client_key, c.workdir
    c.kubectl(*args, input=None, check=True)    -> CompletedProcess (text)
    c.apply(text_or_path)                         -> CompletedProcess
    c.api(method, path, body=None, headers=None) -> (status, parsed JSON or text)
    c.token(sa, namespace, seconds=3600)          -> TokenRequest token
    c.sa_kubeconfig(sa, namespace, path)          -> path of a kubeconfig using it
    c.stop()                                      # always kills every process

    Cluster(real_node=True)     # also a real node (node.py): pods really run
    c.node                      # that node (node.RealNode); c.nodes: all of them
    Cluster(real_node=True, extra_nodes=[{"labels": {"pool": "big"},
                                          "taints": ["pool=big:NoSchedule"]}])
                                # and one more real node per entry (node.py,
                                # "More nodes"): own subnet, containerd,
                                # kubelet, enforcer; registered with those
                                # labels and taints (both optional; a taint
                                # may also be {"key", "value", "effect"})

CLI:  python3 test/cluster/cluster.py up DIR [--kubelet] [--real-node]
      [--extra-node JSON]...   (with --real-node; JSON: an extra_nodes entry, e.g.
      '{"labels": {"nrbc.test/pool": "big"}, "taints": ["nrbc.test/pool=big:NoSchedule"]}')
      starts a cluster (and the test kubelet, or a real node), prints `export KUBECONFIG=...`,
      runs until SIGINT/SIGTERM, then stops everything.
"""

import atexit
import base64
import ctypes
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CRD_PATH = os.path.join(REPO, "manifests", "crd.yaml")

CONTROLLERS = ",".join([
    "garbage-collector-controller",
    "serviceaccount-token-controller",
    "serviceaccount-controller",
    "namespace-controller",
])
# With a real node, Deployments run too; node-lifecycle-controller takes the
# not-ready taint the kubelet registers its node with off once it is Ready.
# root-ca-certificate-publisher-controller: the kube-root-ca.crt ConfigMap
# every service-account token volume includes.
NODE_CONTROLLERS = (",deployment-controller,replicaset-controller,daemonset-controller"
                    ",node-lifecycle-controller"
                    ",root-ca-certificate-publisher-controller")

_PR_SET_PDEATHSIG = 1
_libc = None


def _die_with_parent(sig=signal.SIGKILL):
    """preexec_fn: the child gets `sig` when the thread that forked it dies,
    so even a SIGKILLed test run leaves no server behind."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except Exception:
        pass


def free_port(host="127.0.0.1"):
    """A TCP port free on host right now (the caller binds it soon after).
    The one copy for the cluster, the tests and the benchmarks."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class WaitTimeout(TimeoutError, AssertionError):
    """wait_for gave up: a failed assertion to a test, a TimeoutError to
    the cluster's own code."""


def wait_for(fn, timeout=30, interval=0.1, what="condition"):
    """Polls fn() until it returns something truthy, and returns that.
    The one copy for the cluster, the tests and the benchmarks."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise WaitTimeout("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(interval)


def build_binaries():
    """Directory with etcd, kube-apiserver, kube-controller-manager, kubectl."""
    env_dir = os.environ.get("NRBC_CLUSTER_BIN")
    if env_dir:
        return env_dir
    out = subprocess.run([os.path.join(HERE, "build.sh")], check=True,
                         stdout=subprocess.PIPE, text=True)
    return out.stdout.strip().splitlines()[-1]


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
CLIENT_EXT = ("basicConstraints=critical,CA:FALSE\n"
              "keyUsage=critical,digitalSignature,keyEncipherment\n"
              "extendedKeyUsage=clientAuth\n"
              "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")


def server_ext(san):
    return ("basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectAltName=%s\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n" % san)


def make_leaf(d, name, subj, ext):
    """d/name.{key,crt}: an EC key and a cert for it signed by d/ca.*."""
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write(ext)
    _openssl("req", "-new", *_EC, "-keyout", name + ".key", "-out",
             name + ".csr", "-subj", subj, cwd=d)
    _openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt",
             "-CAkey", "ca.key", "-CAcreateserial", "-days", "3650",
             "-extfile", name + ".ext", "-out", name + ".crt", cwd=d)


def make_pki(d, extra_ips=()):
    """CA, apiserver serving cert (also for extra_ips), admin client cert
    (system:masters) and the service-account signing key pair, all in
    directory d."""
    os.makedirs(d, exist_ok=True)
    _openssl("req", "-x509", *_EC, "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "3650", "-subj", "/CN=nrbc-test-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
             cwd=d)

    sans = "".join(",IP:" + ip for ip in extra_ips)
    make_leaf(d, "apiserver", "/CN=kube-apiserver", server_ext(
        "IP:127.0.0.1" + sans + ",DNS:localhost,DNS:kubernetes.default.svc"))
    make_leaf(d, "admin", "/O=system:masters/CN=admin", CLIENT_EXT)
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", "sa.key", cwd=d)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def write_kubeconfig(path, server, ca_file, user):
    """Block-style YAML (also what the C kubeconfig parser reads); `user` is
    a dict of user fields, e.g. {"token": ...} or client cert/key paths."""
    lines = [
        "apiVersion: v1",
        "kind: Config",
        "clusters:",
        "- name: nrbc-test",
        "  cluster:",
        "    server: %s" % server,
        "    certificate-authority: %s" % ca_file,
        "users:",
        "- name: nrbc-test-user",
        "  user:",
    ]
    for k, v in user.items():
        lines.append("    %s: %s" % (k, v))
    lines += [
        "contexts:",
        "- name: nrbc-test",
        "  context:",
        "    cluster: nrbc-test",
        "    user: nrbc-test-user",
        "    namespace: default",
        "current-context: nrbc-test",
        "",
    ]
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines))
    os.rename(tmp, path)
    return path


class ClusterError(Exception):
    pass


_live = set()
_live_lock = threading.Lock()


def _stop_all():
    with _live_lock:
        clusters = list(_live)
    for c in clusters:
        c.stop()


atexit.register(_stop_all)


class Cluster:
    def __init__(self, bindir=None, log=None, real_node=False, node_subnet=None,
                 extra_nodes=()):
        """real_node: also run a real node (node.py: containerd, kubelet,
        kube-scheduler, kube-network-policies enforcing NetworkPolicy; needs
        root), whose gateway address the API server
        then binds instead of 127.0.0.1 so pods can reach it.
        extra_nodes (with real_node): one more real node per entry, a dict
        with optional "labels" ({key: value}), "taints" (["key=value:Effect"
        or {"key", "value", "effect"}]) and "subnet" ("127.x.y"); node.py,
        "More nodes". Default: none, the one node as always."""
        self.bindir = bindir
        self.node = None
        self.nodes = []
        if extra_nodes and not real_node:
            raise ValueError("extra_nodes needs real_node=True")
        if real_node:
            import node as node_mod
            self.node = node_mod.RealNode(self, node_subnet)
            self.nodes = [self.node]
            for i, spec in enumerate(extra_nodes, start=2):
                unknown = set(spec) - {"labels", "taints", "subnet"}
                if unknown:
                    raise ValueError("extra_nodes: unknown keys %s" % sorted(unknown))
                self.nodes.append(node_mod.RealNode(
                    self, spec.get("subnet"), index=i, labels=spec.get("labels"),
                    taints=spec.get("taints")))
        self.workdir = None
        self.server = None
        self.kubeconfig = None
        self.ca_file = None
        self.client_cert = None
        self.client_key = None
        self.etcd_url = None
        self.procs = {}       # name -> Popen (each in its own process group)
        self._ssl = None
        self._log = log or (lambda msg: print("cluster: " + msg, file=sys.stderr))
        self.start_seconds = None

    # ---- lifecycle -------------------------------------------------------

    def start(self, workdir, timeout=90):
        t0 = time.monotonic()
        if self.bindir is None:
            self.bindir = build_binaries()
        self.workdir = os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        with _live_lock:
            _live.add(self)
        try:
            self._start(timeout)
        except BaseException:
            self._dump_logs()
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        self._log("ready in %.1f s: %s (kubeconfig %s)" %
                  (self.start_seconds, self.server, self.kubeconfig))
        return self

    def _start(self, timeout):
        wd = self.workdir
        pki = os.path.join(wd, "pki")
        make_pki(pki, [self.node.gateway] if self.node else [])
        for n in self.nodes:
            n.make_pki(pki)
        self.ca_file = os.path.join(pki, "ca.crt")
        self.client_cert = os.path.join(pki, "admin.crt")
        self.client_key = os.path.join(pki, "admin.key")

        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        self.etcd_url = "http://127.0.0.1:%d" % etcd_port
        peer = "http://127.0.0.1:%d" % peer_port
        self._spawn("etcd", [
            os.path.join(self.bindir, "etcd"),
            "--name", "default",
            "--data-dir", os.path.join(wd, "etcd"),
            "--listen-client-urls", self.etcd_url,
            "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", "default=" + peer,
            "--listen-metrics-urls", "http://127.0.0.1:%d" % free_port(),
            "--unsafe-no-fsync",
            "--log-level", "warn",
        ])

        host = self.node.gateway if self.node else "127.0.0.1"
        if self.node:
            api_port = free_port(host)
        self.server = "https://%s:%d" % (host, api_port)
        self._apiserver_argv = [
            os.path.join(self.bindir, "kube-apiserver"),
            "--etcd-servers", self.etcd_url,
            "--bind-address", host,
            "--advertise-address", host,
            "--secure-port", str(api_port),
            "--tls-cert-file", os.path.join(pki, "apiserver.crt"),
            "--tls-private-key-file", os.path.join(pki, "apiserver.key"),
            "--client-ca-file", self.ca_file,
            "--service-account-key-file", os.path.join(pki, "sa.pub"),
            "--service-account-signing-key-file", os.path.join(pki, "sa.key"),
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--authorization-mode", "Node,RBAC",
            "--service-cluster-ip-range", "10.0.0.0/24",
            "--allow-privileged",
            "--endpoint-reconciler-type", "none",
            "--cert-dir", os.path.join(wd, "apiserver-certs"),
            "--profiling=false",
        ] + (self.node.apiserver_args() if self.node else
             # Pods nobody runs need no service-account token volume (and
             # could not be made before their ServiceAccount exists). A real
             # node's pods are in-cluster clients and get one, as anywhere.
             ["--disable-admission-plugins", "ServiceAccount"])
        self._spawn("kube-apiserver", self._apiserver_argv)

        self.kubeconfig = write_kubeconfig(
            os.path.join(wd, "admin.kubeconfig"), self.server, self.ca_file,
            {"client-certificate": self.client_cert, "client-key": self.client_key})

        deadline = time.monotonic() + timeout
        self._wait_ready(deadline)

        # The CRD before the controller-manager: its garbage collector
        # discovers resource types at start and then only every 30 s, and
        # misses owner deletions of types it does not watch yet.
        self.kubectl("apply", "-f", CRD_PATH)
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                     "crd/nixbuildrequests.nix.io", "crd/nixbuilders.nix.io")

        self._spawn("kube-controller-manager", [
            os.path.join(self.bindir, "kube-controller-manager"),
            "--kubeconfig", self.kubeconfig,
            "--controllers", CONTROLLERS + (NODE_CONTROLLERS if self.node else ""),
            "--service-account-private-key-file", os.path.join(pki, "sa.key"),
            "--root-ca-file", self.ca_file,
            "--leader-elect=false",
            "--bind-address", "127.0.0.1",
            "--secure-port", "0",
            "--use-service-account-credentials=false",
        ])

        # The namespace controller must be up before tests delete namespaces,
        # and "default" must exist before anything is created in it.
        while True:
            self._check_alive()
            st, _ = self.api("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            if st == 200:
                break
            if time.monotonic() > deadline:
                raise ClusterError("default service account never appeared")
            time.sleep(0.1)
        self._wait_gc(deadline)
        for n in self.nodes:
            n.start(deadline + 60 * n.index)
            self._log("node %s Ready in %.1f s" % (n.name, n.ready_seconds))

    # ---- outages ----------------------------------------------------------

    def stop_apiserver(self, sig=signal.SIGKILL):
        """An API outage: kube-apiserver goes (SIGKILL by default: every
        connection resets, as when its node dies); etcd and the rest keep
        running. start_apiserver() brings it back on the same port with the
        same certificates."""
        p = self.procs.pop("kube-apiserver", None)
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
        self._log("kube-apiserver stopped")

    def start_apiserver(self, timeout=90):
        if "kube-apiserver" in self.procs and self.procs["kube-apiserver"].poll() is None:
            return
        self._spawn("kube-apiserver", self._apiserver_argv)
        self._wait_ready(time.monotonic() + timeout)
        self._log("kube-apiserver started again")

    def apiserver_running(self):
        p = self.procs.get("kube-apiserver")
        return p is not None and p.poll() is None

    def _wait_gc(self, deadline):
        """Garbage collection works for NixBuildRequest owners (a canary):
        tests and nrbc rely on it from the first second."""
        ns = "kube-system"
        st, owner = self.api("POST", "/apis/nix.io/v1alpha1/namespaces/%s/nixbuildrequests" % ns,
                             {"apiVersion": "nix.io/v1alpha1", "kind": "NixBuildRequest",
                              "metadata": {"generateName": "gc-canary-"},
                              "spec": {"sessionId": "gc-canary"}})
        if st != 201:
            raise ClusterError("gc canary owner: %s %s" % (st, owner))
        ref = {"apiVersion": "nix.io/v1alpha1", "kind": "NixBuildRequest",
               "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
               "controller": True}
        st, dep = self.api("POST", "/api/v1/namespaces/%s/configmaps" % ns,
                           {"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"generateName": "gc-canary-",
                                         "ownerReferences": [ref]}})
        if st != 201:
            raise ClusterError("gc canary dependent: %s %s" % (st, dep))
        self.api("DELETE", "/apis/nix.io/v1alpha1/namespaces/%s/nixbuildrequests/%s"
                 % (ns, owner["metadata"]["name"]))
        path = "/api/v1/namespaces/%s/configmaps/%s" % (ns, dep["metadata"]["name"])
        while self.api("GET", path)[0] != 404:
            self._check_alive()
            if time.monotonic() > deadline:
                raise ClusterError("garbage collector never collected the canary")
            time.sleep(0.1)

    def _spawn(self, name, argv, env=None):
        log = open(os.path.join(self.workdir, name + ".log"), "ab")
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 preexec_fn=_die_with_parent, cwd=self.workdir, env=env)
        finally:
            log.close()
        self.procs[name] = p
        return p

    def _check_alive(self):
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise ClusterError("%s exited with %s (log: %s)" % (
                    name, p.returncode, os.path.join(self.workdir, name + ".log")))

    def _wait_ready(self, deadline):
        while True:
            self._check_alive()
            try:
                st, body = self.api("GET", "/readyz")
                if st == 200:
                    return
            except (OSError, urllib.error.URLError, ssl.SSLError):
                pass
            if time.monotonic() > deadline:
                raise ClusterError("kube-apiserver not ready in time")
            time.sleep(0.1)

    def _dump_logs(self):
        for name in self.procs:
            path = os.path.join(self.workdir, name + ".log")
            try:
                with open(path, "rb") as f:
                    f.seek(0, 2)
                    f.seek(max(0, f.tell() - 3000))
                    tail = f.read().decode(errors="replace")
            except OSError:
                continue
            self._log("---- tail of %s ----\n%s" % (path, tail))

    def stop(self, grace=3.0):
        """SIGTERM every process group, SIGKILL what is left after `grace`.
        A real node goes first (it removes its containers), then a kubelet
        started by the CLI, given time to stop its pods."""
        for n in reversed(self.nodes):
            try:
                n.stop()
            except Exception as e:
                self._log("stopping the node %s: %r" % (n.name, e))
        k = self.procs.pop("kubelet", None)
        if k is not None and k.poll() is None:
            k.terminate()
            try:
                k.wait(15)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(k.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            k.wait()
        procs = list(self.procs.values())
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for p in procs:
            left = deadline - time.monotonic()
            try:
                p.wait(timeout=max(0.0, left))
            except subprocess.TimeoutExpired:
                pass
        for p in procs:
            # The group may outlive its leader; kill it regardless.
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.procs = {}
        with _live_lock:
            _live.discard(self)

    def _stop_proc(self, name, grace):
        """Stop one process group: SIGTERM, SIGKILL after grace seconds."""
        p = self.procs.pop(name, None)
        if p is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=wait)
                if sig == signal.SIGKILL or p.returncode is not None:
                    break
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(p.pid, signal.SIGKILL)   # the group may outlive its leader
        except ProcessLookupError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---- helpers ---------------------------------------------------------

    def ssl_context(self):
        if self._ssl is None:
            ctx = ssl.create_default_context(cafile=self.ca_file)
            ctx.load_cert_chain(self.client_cert, self.client_key)
            self._ssl = ctx
        return self._ssl

    def kubectl(self, *args, input=None, check=True, timeout=120):
        argv = [os.path.join(self.bindir, "kubectl"), "--kubeconfig", self.kubeconfig,
                "--cache-dir", os.path.join(self.workdir, "kubectl-cache"), *args]
        p = subprocess.run(argv, input=input, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise ClusterError("kubectl %s failed (%d): %s%s" % (
                " ".join(args), p.returncode, p.stdout, p.stderr))
        return p

    def apply(self, text_or_path, check=True):
        if "\n" not in text_or_path and os.path.exists(text_or_path):
            return self.kubectl("apply", "-f", text_or_path, check=check)
        return self.kubectl("apply", "-f", "-", input=text_or_path, check=check)

    def api(self, method, path, body=None, headers=None, timeout=30):
        """One request with the admin client certificate. Returns
        (HTTP status, parsed JSON body -- or the text if it is not JSON)."""
        data = None
        hdrs = {"Accept": "application/json"}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        if headers:
            hdrs.update(headers)
        req = urllib.request.Request(self.server + path, data=data, method=method,
                                     headers=hdrs)
        try:
            with urllib.request.urlopen(req, context=self.ssl_context(),
                                        timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        text = raw.decode(errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def token(self, sa, namespace, seconds=3600, audiences=None):
        spec = {"expirationSeconds": int(seconds)}
        if audiences:
            spec["audiences"] = list(audiences)
        st, body = self.api(
            "POST", "/api/v1/namespaces/%s/serviceaccounts/%s/token" % (namespace, sa),
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": spec})
        if st != 201:
            raise ClusterError("TokenRequest for %s/%s: %s %s" % (namespace, sa, st, body))
        return body["status"]["token"]

    def sa_kubeconfig(self, sa, namespace, path, seconds=3600):
        """Kubeconfig that authenticates as ServiceAccount namespace/sa, so
        nrbc runs with exactly the permissions its RBAC grants."""
        write_kubeconfig(path, self.server, self.ca_file,
                         {"token": self.token(sa, namespace, seconds)})
        # The default namespace of the context is the SA's own.
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace("    namespace: default\n",
                                 "    namespace: %s\n" % namespace))
        return path


def _main(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="cluster.py",
                                 description="Run the local test cluster until SIGINT/SIGTERM.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a cluster in DIR")
    up.add_argument("dir")
    up.add_argument("--kubelet", action="store_true",
                    help="also run the test kubelet (test/kubelet/kubelet.py), state in "
                         "DIR/kubelet; needs root, and the host's Nix set up as in "
                         "test/integration/conftest.py (HostNix)")
    up.add_argument("--real-node", action="store_true",
                    help="also run a real node (node.py: containerd, kubelet, "
                         "kube-scheduler, kube-network-policies); needs root")
    up.add_argument("--extra-node", action="append", default=[], metavar="JSON",
                    help="with --real-node: one more real node, e.g. "
                         "'{\"labels\": {\"pool\": \"big\"}, \"taints\": "
                         "[\"pool=big:NoSchedule\"]}' (node.py, \"More nodes\")")
    args = ap.parse_args(argv[1:])
    if args.extra_node and not args.real_node:
        ap.error("--extra-node needs --real-node")

    c = Cluster(real_node=args.real_node,
                extra_nodes=[json.loads(x) for x in args.extra_node])
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        c.start(args.dir)
        if args.kubelet:
            kdir = os.path.join(c.workdir, "kubelet")
            os.makedirs(kdir, exist_ok=True)
            # Pod files are read by the builder's SSH user.
            for d in (c.workdir, kdir):
                os.chmod(d, 0o755)
            c._spawn("kubelet", [sys.executable,
                                 os.path.join(REPO, "test", "kubelet", "kubelet.py"),
                                 "--kubeconfig", c.kubeconfig, "--dir", kdir])
        print("export KUBECONFIG=%s" % c.kubeconfig, flush=True)
        print("# kubectl: %s  (Ctrl-C stops the cluster)" %
              os.path.join(c.bindir, "kubectl"), file=sys.stderr, flush=True)
        while not stop.wait(1):
            dead = [n for n, p in c.procs.items() if p.poll() is not None]
            if dead:
                print("cluster: %s exited; stopping" % ",".join(dead), file=sys.stderr)
                return 1
    finally:
        c.stop()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
