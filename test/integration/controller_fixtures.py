"""Helpers for running `nrbc controller` against the test cluster with the
shipped RBAC (manifests/controller/) and its own ServiceAccount token."""

import json
import random
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from binary_cache import builders_nix_conf
from conftest import REPO, free_port, wait_for

MANIFESTS = os.path.join(REPO, "manifests")
SA = "nrbc-controller"
SECRET = "nix-builder-ssh-keys"
CONFIGMAP = "nix-config"
IMAGE = "docker.io/nixos/nix:2.8.0"
NBR_PATH = "/apis/nix.io/v1alpha1/namespaces/%s/nixbuildrequests"
# Builders listen on podIP:REMOTE_PORT. Test kubelets of concurrent test
# runs hand out the same 127.0.x.y addresses, so a per-run port keeps one
# run's builders from answering for another's.
REMOTE_PORT = random.randrange(20000, 40000)


def install_rbac(cluster, namespace):
    """ServiceAccount, Role and RoleBinding exactly as shipped."""
    for f in ("serviceaccount.yaml", "role.yaml"):
        cluster.kubectl("apply", "-n", namespace, "-f",
                        os.path.join(MANIFESTS, "controller", f))


def install_config(cluster, namespace, keys):
    """The Secret, and the shipped nix-config ConfigMap with its
    substituters emptied (tests never reach the public cache)."""
    keys.create_secret(cluster, namespace, name=SECRET)
    r = cluster.kubectl("apply", "-n", namespace, "-f", os.path.join(MANIFESTS, "nix-config.yaml"),
                        "--dry-run=client", "-o", "json")
    cm = json.loads(r.stdout)
    cm["metadata"]["namespace"] = namespace
    cm["data"]["nix.conf"] = builders_nix_conf(cm["data"]["nix.conf"])
    cluster.apply(json.dumps(cm))


class Controller:
    """One `nrbc controller` process."""

    def __init__(self, nrbc_bin, cluster, namespace, workdir, name="controller"):
        self.bin = nrbc_bin
        self.cluster = cluster
        self.namespace = namespace
        self.dir = str(workdir)
        self.name = name
        self.kubeconfig = os.path.join(self.dir, "%s.kubeconfig" % name)
        self.log_path = os.path.join(self.dir, "%s.log" % name)
        self.proc = None
        self.health_port = None

    def start(self, *extra, wait_ready=True, env=None):
        if not os.path.exists(self.kubeconfig):
            self.cluster.sa_kubeconfig(SA, self.namespace, self.kubeconfig)
        self.health_port = free_port()
        argv = [self.bin, "controller", "--kubeconfig", self.kubeconfig,
                "--namespace", self.namespace, "--builder-image", IMAGE,
                "--nix-config", CONFIGMAP, "--remote-port", str(REMOTE_PORT), "--ssh-key-secret", SECRET,
                "--health-address", "127.0.0.1", "--health-port", str(self.health_port),
                "--log-level", "debug", *extra]
        if os.path.exists("/usr/bin/setpriv"):
            argv = ["/usr/bin/setpriv", "--pdeathsig", "KILL"] + argv
        e = dict(os.environ)
        e.pop("KUBECONFIG", None)
        # No warm pool unless a test asks for one (--warm-pool-size wins):
        # most tests count the builder pods their requests make.
        e.setdefault("NRBC_CONTROLLER_WARM_POOL_SIZE", "0")
        # The test kubelet runs builders as host processes, with no user
        # namespace or seccomp profile to give a sandbox.
        e.setdefault("NRBC_CONTROLLER_BUILDER_SANDBOX", "false")
        e.update(env or {})
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, env=e)
        log.close()
        if wait_ready:
            wait_for(lambda: self.get("/readyz")[0] == 200 or self.died(), 30,
                     what="controller /readyz")
            assert not self.died(), "controller exited:\n" + self.log()
        return self

    def died(self):
        return self.proc.poll() is not None

    def get(self, path):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.health_port, path),
                                        timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:
            return 0, str(e)

    def metrics(self):
        st, text = self.get("/metrics")
        assert st == 200, text
        out = {}
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
        return out

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout=40):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log(self):
        try:
            return open(self.log_path, errors="replace").read()
        except OSError:
            return ""


def nbr(name, session=None, metadata=None, **spec):
    s = {"sessionId": session or name}
    s.update(spec)
    m = {"name": name}
    m.update(metadata or {})
    return {"apiVersion": "nix.io/v1alpha1", "kind": "NixBuildRequest",
            "metadata": m, "spec": s}


def create_nbr(cluster, namespace, name, metadata=None, **spec):
    st, body = cluster.api("POST", NBR_PATH % namespace, nbr(name, metadata=metadata, **spec))
    assert st == 201, body
    return body


def get_nbr(cluster, namespace, name):
    st, body = cluster.api("GET", (NBR_PATH % namespace) + "/" + name)
    return body if st == 200 else None


def wait_nbr(cluster, namespace, name, pred, timeout=30, what=None):
    box = {}

    def check():
        box["nbr"] = get_nbr(cluster, namespace, name)
        return box["nbr"] is not None and pred(box["nbr"])
    try:
        wait_for(check, timeout, what=what or "NixBuildRequest %s/%s" % (namespace, name))
    except AssertionError as e:
        raise AssertionError("%s; last seen status: %s" % (
            e, json.dumps((box.get("nbr") or {}).get("status"), indent=1)))
    return box["nbr"]


def phase_is(*phases):
    return lambda o: (o.get("status") or {}).get("phase") in phases


def set_nbr_status(cluster, namespace, name, **status):
    """Merge-patch the status (what the proxy does at the end of a session)."""
    st, body = cluster.api(
        "PATCH", (NBR_PATH % namespace) + "/" + name + "/status", {"status": status},
        headers={"Content-Type": "application/merge-patch+json"})
    assert st == 200, body
    return body


def builder_pods(cluster, namespace, request=None):
    sel = "app.kubernetes.io/name=nrbc-builder"
    if request:
        sel += ",nix.io/build-request=" + request
    st, body = cluster.api("GET", "/api/v1/namespaces/%s/pods?labelSelector=%s" % (
        namespace, urllib.request.quote(sel)))
    assert st == 200, body
    return body["items"]


def events_for(cluster, namespace, name):
    st, body = cluster.api("GET", "/api/v1/namespaces/%s/events?fieldSelector=%s" % (
        namespace, urllib.request.quote("involvedObject.name=" + name)))
    assert st == 200, body
    return body["items"]


def wait_event(cluster, namespace, name, reason, type_=None, timeout=15):
    def check():
        for e in events_for(cluster, namespace, name):
            if e["reason"] == reason and (type_ is None or e["type"] == type_):
                return e
        return None
    return wait_for(check, timeout, what="Event %s on %s" % (reason, name))


def now():
    return time.monotonic()


# ---- pytest fixtures shared by the controller test modules (imported there) --

@pytest.fixture
def setup(cluster, kubelet, namespace, ssh_keys):
    """The shipped RBAC and config in a fresh namespace."""
    install_rbac(cluster, namespace)
    install_config(cluster, namespace, ssh_keys)
    return {"cluster": cluster, "ns": namespace, "keys": ssh_keys, "kubelet": kubelet}


@pytest.fixture
def controllers(nrbc_bin, cluster, namespace, tmp_path):
    """make(name) -> a new Controller; all are stopped at the end."""
    made = []

    def make(name="controller"):
        c = Controller(nrbc_bin, cluster, namespace, tmp_path, name)
        made.append(c)
        return c
    yield make
    for c in made:
        c.stop()
        if os.environ.get("NRBC_SHOW_CONTROLLER_LOG") == "1":
            print("---- %s log ----\n%s" % (c.name, c.log()))
