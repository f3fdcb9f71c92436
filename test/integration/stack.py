"""The whole nrbc stack as a user installs it, on the local test cluster.

`kubectl apply -k manifests` installs everything. The test cluster runs no
Deployments (there is no deployment controller or kubelet for them), so the
controller and the proxy run here as local processes, each started from its
Deployment's pod template: the template becomes a real Pod object (never
scheduled: the test kubelet only runs builder pods) whose name, uid and
namespace fill the downward-API variables; the process runs in-cluster mode
with a token of the template's ServiceAccount, so the shipped RBAC is what
is exercised. The only changes to the manifests' arguments are the ones a
shared machine forces: listen addresses on loopback and free ports. The
only change to the builders' nix.conf (ConfigMap nix-config): the tests
never reach the internet, so its substituters (https://cache.nixos.org as
shipped) become the stack's test binary cache on loopback, or none.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
import tempfile
import threading
import time

from binary_cache import builders_nix_conf, set_nix_conf
from conftest import REPO, NixClient, free_port, wait_for

NAMESPACE = "nrbc"
SECRET = "nix-builder-ssh-keys"
PROXY_ADDRESS = "127.0.0.9"
HOST_KEY_CONFIG_MAP = "nrbc-host-key"


def port_taken(host, port):
    s = socket.socket()
    try:
        s.bind((host, port))
        return False
    except OSError:
        return True
    finally:
        s.close()


class Role:
    """One nrbc process started from a Deployment's pod template."""

    def __init__(self, stack, deployment, overrides):
        self.stack = stack
        self.name = deployment["metadata"]["name"]
        self.template = deployment["spec"]["template"]
        self.overrides = overrides
        self.proc = None
        self.pod = None
        self.log_path = os.path.join(stack.dir, self.name + ".log")
        self.health_port = None

    def _make_pod(self):
        c = self.stack.cluster
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": self.name + "-",
                            "namespace": NAMESPACE,
                            "labels": dict(self.template["metadata"].get("labels") or {})},
               "spec": self.template["spec"]}
        st, body = c.api("POST", "/api/v1/namespaces/%s/pods" % NAMESPACE, pod)
        assert st == 201, body
        self.pod = body

    def _env(self):
        meta = self.pod["metadata"]
        fields = {"metadata.name": meta["name"], "metadata.uid": meta["uid"],
                  "metadata.namespace": meta["namespace"]}
        (container,) = self.template["spec"]["containers"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        for e in container.get("env") or []:
            if "value" in e:
                env[e["name"]] = e["value"]
            else:
                env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        # In-cluster configuration, as in a pod: service host/port and the
        # service-account files (token of the template's ServiceAccount).
        sa = self.template["spec"]["serviceAccountName"]
        sadir = os.path.join(self.stack.dir, "sa-" + self.name)
        os.makedirs(sadir, exist_ok=True)
        with open(os.path.join(sadir, "token"), "w") as f:
            f.write(self.stack.cluster.token(sa, NAMESPACE))
        with open(os.path.join(sadir, "namespace"), "w") as f:
            f.write(NAMESPACE)
        with open(os.path.join(sadir, "ca.crt"), "w") as f:
            f.write(open(self.stack.cluster.ca_file).read())
        server = self.stack.cluster.server.split("://", 1)[1]
        host, port = server.rsplit(":", 1)
        env.update({"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port,
                    "NRBC_SERVICEACCOUNT_DIR": sadir})
        return env

    def argv(self):
        (container,) = self.template["spec"]["containers"]
        # NRBC_TEST_LOG_LEVEL=debug: every role logs at that level (to debug a test).
        level = os.environ.get("NRBC_TEST_LOG_LEVEL")
        extra = ["--log-level=" + level] if level else []
        return [self.stack.nrbc_bin] + list(container.get("args") or []) + self.overrides + extra

    def start(self):
        if self.pod is None:
            self._make_pod()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), env=self._env(), stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        return self

    def ready(self):
        if self.proc.poll() is not None:
            raise AssertionError("%s exited with %s:\n%s" % (self.name, self.proc.returncode,
                                                             self.log()))
        try:
            with socket.create_connection(("127.0.0.1" if self.name.endswith("controller")
                                           else PROXY_ADDRESS, self.health_port), 2) as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
                return s.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def metrics(self):
        """/metrics as {"name{labels}": value}."""
        host = "127.0.0.1" if self.name.endswith("controller") else PROXY_ADDRESS
        with urllib.request.urlopen("http://%s:%d/metrics" % (host, self.health_port),
                                    timeout=10) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                out[k] = float(v)
        return out

    def stop(self, sig=signal.SIGTERM, timeout=40):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5)

    def log(self):
        try:
            return open(self.log_path, errors="replace").read()
        except OSError:
            return ""


class Stack:
    def __init__(self, cluster, kubelet, nrbc_bin, workdir, builder_idle_timeout="10s",
                 cache=None, controller_args=(), key_options=None):
        self.builder_idle_timeout = builder_idle_timeout
        self.extra_controller_args = list(controller_args)
        # {user key name: authorized_keys options}, e.g. 'nrbc-classes="big"'.
        self.key_options = dict(key_options or {})
        self.cache = cache      # a binary_cache.BinaryCache the builders trust, or None
        self.builder_nix_settings = {}
        self.cluster = cluster
        self.kubelet = kubelet
        self.nrbc_bin = nrbc_bin
        self.dir = str(workdir)
        self.objects = {}
        self.controller = None
        self.proxy = None
        self.keys = {}
        # Where Nix clients reach the proxy, and what `kubectl apply -k` is
        # given: a subclass running the real Deployments changes both.
        self.proxy_address = PROXY_ADDRESS
        self.kustomize_dir = os.path.join(REPO, "manifests")

    # -- keys: the builders' shared pair, one host key, one user key
    def _keygen(self, name, comment):
        path = os.path.join(self.dir, name)
        if not os.path.exists(path):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                            "-f", path], check=True)
        self.keys[name] = path
        return path

    def install(self):
        self.make_keys()
        self.apply_manifests()
        self.set_builder_substituters(self.cache)
        self.create_secrets()
        self.delete_builders()
        return self

    def make_keys(self):
        for name, comment in (("builder-key", "nix-builder"), ("host-key", "nrbc-host"),
                              ("user-key", "nix-user"), ("user-key-2", "nix-user-2"),
                              ("user-key-3", "nix-user-3")):
            self._keygen(name, comment)

    def apply_manifests(self):
        r = self.cluster.kubectl("apply", "-k", self.kustomize_dir, "-o", "json")
        applied = json.loads(r.stdout)
        for obj in applied.get("items", [applied]):
            self.objects[(obj["kind"], obj["metadata"]["name"])] = obj

    def create_secrets(self):
        """The Secret the README has the operator create, and the host key's
        public half the operator publishes for `nrbc client-config`."""
        k = self.keys
        secret = {"apiVersion": "v1", "kind": "Secret",
                  "metadata": {"name": SECRET, "namespace": NAMESPACE},
                  "type": "Opaque",
                  "stringData": {"private": open(k["builder-key"]).read(),
                                 "public": open(k["builder-key"] + ".pub").read(),
                                 "host-key": open(k["host-key"]).read(),
                                 "authorized-keys": "".join(
                                     (self.key_options[u] + " " if u in self.key_options
                                      else "") + open(k[u] + ".pub").read()
                                     for u in self.USERS)}}
        self.cluster.apply(json.dumps(secret))
        self.cluster.apply(json.dumps(
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": HOST_KEY_CONFIG_MAP, "namespace": NAMESPACE},
             "data": {"host-key.pub": open(k["host-key"] + ".pub").read()}}))

    def set_builder_substituters(self, cache):
        """The builders' nix.conf substitutes from `cache` only (None: from
        nowhere), never from the shipped public cache. Pods made from now
        on read it; running ones keep what they started with."""
        cm = self.objects[("ConfigMap", "nix-config")]
        conf = builders_nix_conf(cm["data"]["nix.conf"], cache)
        if self.builder_nix_settings:     # benchmarks' variations
            conf = set_nix_conf(conf, self.builder_nix_settings)
        self.cluster.apply(json.dumps({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "nix-config", "namespace": NAMESPACE,
                         "labels": cm["metadata"].get("labels") or {}},
            "data": {"nix.conf": conf}}))
        self.builder_nix_conf = conf

    def deployment(self, name):
        return self.objects[("Deployment", name)]

    def start(self):
        # Builder pods listen on their own 127.0.x.y; only a listener on the
        # wildcard address could take port 22 from them.
        remote = []
        if port_taken("127.0.3.254", 22):
            port = free_port()
            remote = ["--remote-port=%d" % port]
        controller_health = free_port()
        proxy_health = free_port(PROXY_ADDRESS)
        self.proxy_port = free_port(PROXY_ADDRESS)
        # Idle builders go after seconds, not the shipped minutes, so a test
        # can see that everything is cleaned up once sessions end.
        self.controller = Role(self, self.deployment("nrbc-controller"),
                               ["--health-address=127.0.0.1",
                                "--health-port=%d" % controller_health,
                                "--builder-idle-timeout=%s" % self.builder_idle_timeout,
                                # The test kubelet runs builders as host
                                # processes: no user namespace, no seccomp,
                                # nothing of the sandbox's pod to test.
                                "--builder-sandbox=false",
                                # Builders reach the proxy where clients do.
                                "--builder-sibling-proxy=%s:%d" % (PROXY_ADDRESS,
                                                                    self.proxy_port)]
                               + remote + self.extra_controller_args)
        self.controller.health_port = controller_health
        self.proxy = Role(self, self.deployment("nrbc-proxy"),
                          ["--listen-address=" + PROXY_ADDRESS, "--port=%d" % self.proxy_port,
                           "--health-port=%d" % proxy_health] + remote)
        self.proxy.health_port = proxy_health
        self.controller.start()
        self.proxy.start()
        wait_for(self.controller.ready, 30, what="controller /readyz")
        wait_for(self.proxy.ready, 30, what="proxy /readyz")
        self.publish_service()
        return self

    def publish_service(self):
        """What a cloud load balancer does for the LoadBalancer Service: an
        external address in its status. Here that is the proxy's own
        loopback address, and the Service's port is the one it listens on."""
        # `kubectl apply` (not a patch), so that the next `kubectl apply -k
        # manifests` sees this port in last-applied and puts 22 back cleanly.
        svc = self.objects[("Service", "nrbc-proxy")]
        spec = {k: svc["spec"][k] for k in ("type", "externalTrafficPolicy", "selector")}
        spec["ports"] = [{"name": "ssh", "port": self.proxy_port, "targetPort": "ssh"}]
        self.cluster.apply(json.dumps(
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "nrbc-proxy", "namespace": NAMESPACE,
                          "labels": svc["metadata"].get("labels") or {}},
             "spec": spec}))
        merge = {"Content-Type": "application/merge-patch+json"}
        path = "/api/v1/namespaces/%s/services/nrbc-proxy" % NAMESPACE
        st, body = self.cluster.api("PATCH", path + "/status", json.dumps(
            {"status": {"loadBalancer": {"ingress": [{"ip": self.proxy_address}]}}}).encode(),
            headers=merge)
        assert st == 200, body

    def stop(self):
        for role in (self.proxy, self.controller):
            if role is not None:
                role.stop()
        self.delete_builders()

    def delete_builders(self):
        """Builders (pool ones above all) carry the host key of the Secret
        they were made with; the next module's Stack writes new keys, so
        they go (as an operator deletes them after rotating the Secret)."""
        st, body = self.cluster.api(
            "DELETE", "/apis/nix.io/v1alpha1/namespaces/%s/nixbuilders" % NAMESPACE)
        assert st == 200, body
        # Their pods too, and wait: the garbage collector would delete them in
        # its own time (tens of seconds after another module re-created the
        # CRD), and the next module's wait_clean would count them.
        # Only the pods there now: a running controller makes new pool ones.
        pods = "/api/v1/namespaces/%s/pods?labelSelector=%s" % (
            NAMESPACE, "app.kubernetes.io%2Fname%3Dnrbc-builder")

        def uids():
            return {p["metadata"]["uid"] for p in self.cluster.api("GET", pods)[1]["items"]}
        old = uids()
        st, body = self.cluster.api("DELETE", pods)
        assert st == 200, body
        try:
            # A pod on a real node goes when its kubelet has stopped it.
            wait_for(lambda: not (old & uids()), 120,
                     what="the builder pods of deleted builders to go")
        except Exception:
            for p in self.cluster.api("GET", pods)[1]["items"]:
                if p["metadata"]["uid"] in old:
                    print("still there: %s phase %s node %s deleting since %s" % (
                        p["metadata"]["name"], p["status"].get("phase"),
                        p["spec"].get("nodeName"), p["metadata"].get("deletionTimestamp")),
                        file=sys.stderr)
            raise

    # -- what a Nix user needs
    def known_hosts(self):
        path = os.path.join(self.dir, "known_hosts")
        with open(path, "w") as f:
            f.write("[%s]:%d %s" % (self.proxy_address, self.proxy_port,
                                    open(self.keys["host-key"] + ".pub").read()))
        return path

    # Three client keys: three identities, each with builders of its own.
    USERS = ("user-key", "user-key-2", "user-key-3")

    def sshopts(self, user=0):
        return NixClient.sshopts(self.proxy_port, self.keys[self.USERS[user]],
                                 self.known_hosts())

    def builders(self, scheme="ssh", max_jobs=4, user="nixbld", **kw):
        return NixClient.builders(self.proxy_address, scheme=scheme, max_jobs=max_jobs,
                                  user=user, **kw)

    def requests(self):
        st, body = self.cluster.api(
            "GET", "/apis/nix.io/v1alpha1/namespaces/%s/nixbuildrequests" % NAMESPACE)
        assert st == 200, body
        return body["items"]

    def controller_metrics(self):
        return self.controller.metrics()

    def proxy_metrics(self):
        return self.proxy.metrics()

    def nixbuilders(self):
        st, body = self.cluster.api(
            "GET", "/apis/nix.io/v1alpha1/namespaces/%s/nixbuilders" % NAMESPACE)
        assert st == 200, body
        return body["items"]

    def builder_pods(self):
        # Pods serving clients: the pods of unclaimed warm-pool builders
        # (--warm-pool-size in the manifests) stay by design.
        pool = {"nix-builder-" + b["metadata"]["name"] for b in self.nixbuilders()
                if not b["spec"].get("identity")}
        st, body = self.cluster.api(
            "GET", "/api/v1/namespaces/%s/pods?labelSelector=%s" %
            (NAMESPACE, "app.kubernetes.io%2Fname%3Dnrbc-builder"))
        assert st == 200, body
        return [p for p in body["items"] if p["metadata"]["name"] not in pool]

    def wait_clean(self, timeout=60):
        """No request and no builder pod left (but unclaimed pool ones):
        builders outlive their sessions by the idle timeout, so that is
        added to the wait."""
        idle = self.builder_idle_timeout
        idle_s = float(idle[:-1]) * {"s": 1, "m": 60, "h": 3600}[idle[-1]]
        wait_for(lambda: not self.requests() and not self.builder_pods(), timeout + idle_s,
                 what="no NixBuildRequest and no builder pod left")


class StackWatcher:
    """While a build runs (a `with` block), the latest state of every
    request's class, NixBuilder and builder pod seen on `stack`: builders
    and their pods go after the idle timeout, before a test looks."""

    def __init__(self, stack, period=0.2):
        self.stack, self.period = stack, period
        self.classes, self.builders, self.pods = set(), {}, {}
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run)

    def run(self):
        while not self.stop.is_set():
            for r in self.stack.requests():
                self.classes.add(r["spec"].get("builderClass", ""))
            for b in self.stack.nixbuilders():
                self.builders[b["metadata"]["name"]] = b
            for p in self.stack.builder_pods():
                self.pods[p["metadata"]["name"]] = p
            time.sleep(self.period)

    def by_class(self):
        """{class name ("" default): [pods]} of builders that served a client."""
        out = {}
        for name, b in self.builders.items():
            p = self.pods.get("nix-builder-" + name)
            if b["spec"].get("identity") and p is not None:
                out.setdefault(b["spec"].get("builderClass", ""), []).append(p)
        return out

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join()
