"""`nrbc proxy` with its Kubernetes backend, as installed by the manifests:
what a Nix user sees when a builder is slow, fails or goes away, and that
no NixBuildRequest or pod outlives its session, even across kill -9."""

import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import relay, wait_for
from stack import NAMESPACE, SECRET, Role, Stack, free_port, PROXY_ADDRESS

import kubelet as kubelet_mod


@pytest.fixture(scope="module")
def stack(cluster, kubelet, nrbc_bin, tmp_path_factory):
    s = Stack(cluster, kubelet, nrbc_bin, tmp_path_factory.mktemp("stack-proxy"))
    s.install().start()
    yield s
    s.stop()


@pytest.fixture
def no_controller(stack):
    """Requests stay Pending while the controller is stopped."""
    stack.controller.stop()
    yield
    stack.controller.start()
    wait_for(stack.controller.ready, 30, what="controller /readyz")


def ssh_nix(stack, port=None, key=None):
    """A Nix-like session through the proxy that stays open until its stdin
    closes: `nix-store --serve` waits for commands."""
    argv = ["ssh", "-F", "/dev/null", "-p", str(port or stack.proxy_port),
            "-i", key or stack.keys["user-key"], "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", "UserKnownHostsFile=" + stack.known_hosts(),
            "-o", "StrictHostKeyChecking=no", "-o", "ConnectTimeout=20",
            "nixbld@" + PROXY_ADDRESS, "nix-store", "--serve", "--write"]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def one_request(stack):
    items = stack.requests()
    return items[0] if len(items) == 1 else None


def phase(obj):
    return (obj.get("status") or {}).get("phase")


def test_session_waits_then_runs_and_cleans_up(stack):
    p = ssh_nix(stack)
    req = wait_for(lambda: (lambda r: r if r and phase(r) == "Running" else None)(
        one_request(stack)), 60, what="a Running request")
    assert req["spec"]["sessionId"]
    assert req["metadata"]["labels"]["nix.io/proxy"].startswith("nrbc-proxy-")
    # Owned by the proxy's Pod: if the proxy goes for good, so do its requests.
    (ref,) = req["metadata"]["ownerReferences"]
    assert ref["kind"] == "Pod" and ref["name"] == stack.proxy.pod["metadata"]["name"]
    assert req["status"]["podName"] in {p["metadata"]["name"] for p in stack.builder_pods()}
    p.stdin.close()
    p.wait(30)
    stack.wait_clean(30)


def test_client_that_gives_up_while_waiting_leaves_nothing(stack, no_controller):
    p = ssh_nix(stack)
    wait_for(lambda: one_request(stack), 30, what="the session's request")
    time.sleep(0.5)
    p.kill()
    p.wait(10)
    # Nothing is built for a client that left: the request goes at once and
    # the controller (started again afterwards) finds nothing to do.
    stack.wait_clean(15)


def test_waiting_times_out_with_a_message(stack, no_controller):
    quick = Role(stack, stack.deployment("nrbc-proxy"),
                 ["--listen-address=" + PROXY_ADDRESS,
                  "--port=%d" % free_port(PROXY_ADDRESS),
                  "--health-port=%d" % free_port(PROXY_ADDRESS),
                  "--builder-timeout=3s"])
    quick.health_port = int(quick.overrides[2].split("=")[1])
    quick.start()
    try:
        wait_for(quick.ready, 30, what="second proxy /readyz")
        port = int(quick.overrides[1].split("=")[1])
        p = ssh_nix(stack, port=port)
        out, err = p.communicate(timeout=60)
        assert p.returncode != 0
        assert b"gave up waiting for a builder after 3s" in err, err
        assert last_nrbc_line(err).startswith("nrbc: gave up waiting for a builder after 3s"), err
        wait_for(lambda: not stack.requests(), 15, what="the timed-out request to go")
    finally:
        quick.stop()
        stack.cluster.api("DELETE", "/api/v1/namespaces/%s/pods/%s" % (
            NAMESPACE, quick.pod["metadata"]["name"]))


def test_a_wait_is_told_only_once_it_lasts(stack, no_controller):
    # Most waits end within milliseconds (a reused or pooled builder), and
    # Nix opens a session per derivation: the proxy says nothing for the
    # first second of a wait, then tells where it stands. Here the wait
    # lasts (no controller), so the first line comes, but not before.
    t0 = time.monotonic()
    p = ssh_nix(stack)
    first = {}

    def read():
        line = p.stderr.readline()
        first["t"] = time.monotonic() - t0
        first["line"] = line
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        reader.join(30)
        assert "line" in first, "no status within 30 s"
        # The latest status at that moment (no controller: nothing bound).
        assert first["line"] == b"nrbc: waiting for a builder: Pending\n", first
        assert first["t"] >= 1.0, first
    finally:
        p.kill()
        p.wait(10)
    wait_for(lambda: not stack.requests(), 30, what="the request to go")


def test_a_reused_builder_says_nothing(stack):
    """The second session of a key is bound to the builder its first one
    used, within milliseconds: nothing from nrbc on the user's terminal."""
    for i in range(2):
        p = ssh_nix(stack)
        serve_hello(p)
        p.stdin.close()
        p.wait(60)
        err = p.stderr.read()
        assert p.returncode == 0, err
    assert b"nrbc: " not in err, err
    stack.wait_clean(30)


def test_progress_reaches_the_client(stack, no_controller):
    p = ssh_nix(stack)
    req = wait_for(lambda: one_request(stack), 30, what="the session's request")
    # Play the controller: report a reason, then fail the request.
    name = req["metadata"]["name"]
    path = "/apis/nix.io/v1alpha1/namespaces/%s/nixbuildrequests/%s/status" % (NAMESPACE, name)
    hdr = {"Content-Type": "application/merge-patch+json"}
    st, body = stack.cluster.api("PATCH", path, {"status": {
        "phase": "Creating", "podName": "nix-builder-" + name, "reason": "Unschedulable",
        "message": "0/1 nodes are available: 1 Insufficient cpu."}}, headers=hdr)
    assert st == 200, body
    time.sleep(1)
    st, body = stack.cluster.api("PATCH", path, {"status": {
        "phase": "Failed", "reason": "Unschedulable", "message": "gave up"}}, headers=hdr)
    assert st == 200, body
    out, err = p.communicate(timeout=30)
    assert p.returncode != 0
    assert b"Unschedulable: 0/1 nodes are available: 1 Insufficient cpu." in err, err
    assert b"failed: Unschedulable: gave up" in err, err
    wait_for(lambda: not stack.requests(), 15, what="the failed request to go")


def serve_hello(p):
    """`nix-store --serve`'s handshake through the proxy: the session is
    bridged to the builder."""
    p.stdin.write(struct.pack("<QQ", 0x390c9deb, 0x205))
    p.stdin.flush()
    assert struct.unpack("<Q", p.stdout.read(8))[0] == 0x5452eecb
    return struct.unpack("<Q", p.stdout.read(8))[0]


def wait_open(p, timeout):
    """Like p.communicate(timeout=...), but stdin stays open: a client's EOF
    would let `nix-store --serve` end well on its own, while the test
    wants to see what ends the session from the builder's side."""
    out, err = [], []
    readers = [threading.Thread(target=lambda f, acc: acc.append(f.read()), args=(f, acc),
                                daemon=True) for f, acc in ((p.stdout, out), (p.stderr, err))]
    for t in readers:
        t.start()
    try:
        p.wait(timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for t in readers:
            t.join(10)
        p.stdin.close()
    return b"".join(out), b"".join(err)


def last_nrbc_line(err):
    lines = [l for l in err.decode(errors="replace").splitlines() if l.startswith("nrbc: ")]
    return lines[-1] if lines else None


def test_builder_pod_killed_mid_session(stack):
    p = ssh_nix(stack)
    wait_for(lambda: (lambda r: r if r and phase(r) == "Running" else None)(
        one_request(stack)), 60, what="a Running request")
    serve_hello(p)
    pod = one_request(stack)["status"]["podName"]
    # Forced: the object goes at once while the kubelet, which never sees
    # the deletion's grace, gives the container its spec's (the builder
    # drains: the session would go on), so the controller's word ends it.
    st, _ = stack.cluster.api("DELETE", "/api/v1/namespaces/%s/pods/%s" % (NAMESPACE, pod),
                              {"gracePeriodSeconds": 0})
    assert st == 200
    out, err = wait_open(p, 60)
    assert p.returncode != 0, (out, err)
    # One line says why (the pod deleted, or its command killed with it, or
    # the connection to it gone): not just Nix's "unexpected end-of-file".
    line = last_nrbc_line(err)
    print("the user saw: %s" % line)
    assert line and "builder" in line, err
    assert "Socket error" not in line and "SSH_MSG" not in line, line
    stack.wait_clean(30)


def evict(stack, name):
    """The Eviction API, as `kubectl drain` and the cluster autoscaler use it."""
    return stack.cluster.api(
        "POST", "/api/v1/namespaces/%s/pods/%s/eviction" % (NAMESPACE, name),
        {"apiVersion": "policy/v1", "kind": "Eviction",
         "metadata": {"name": name, "namespace": NAMESPACE}})


def get_pod(stack, name):
    st, pod = stack.cluster.api("GET", "/api/v1/namespaces/%s/pods/%s" % (NAMESPACE, name))
    return pod if st == 200 else None


def safe_to_evict(pod):
    return ((pod or {}).get("metadata", {}).get("annotations") or {}).get(
        "cluster-autoscaler.kubernetes.io/safe-to-evict")


def request_of(stack, session_pod=None, other_than=None):
    """The one request whose status.podName is session_pod, or the one bound
    to a builder other than other_than."""
    for r in stack.requests():
        st = r.get("status") or {}
        if session_pod and st.get("podName") == session_pod:
            return r
        if other_than and st.get("builder") and st.get("podName") != other_than:
            return r
    return None


def test_evicted_builder_finishes_its_session_and_takes_no_new_one(stack):
    """An eviction (a node drain, a scale-down) of a busy builder: the
    session it holds goes on to its own end, a session opened meanwhile is
    bound to another builder, and the pod goes once its session has ended."""
    p, pod = bridged_session(stack)
    name = pod["metadata"]["name"]
    # Busy: the cluster autoscaler is asked to leave it alone.
    wait_for(lambda: safe_to_evict(get_pod(stack, name)) == "false", 30,
             what="safe-to-evict false on the busy builder")
    st, body = evict(stack, name)
    assert st == 201, body
    req = wait_for(lambda: (lambda r: r if r and r["status"].get("reason") ==
                            "BuilderDraining" else None)(request_of(stack, name)),
                   30, what="the request to say its builder drains")
    assert req["status"]["phase"] == "Running", req["status"]
    assert "evicted" in req["status"]["message"], req["status"]
    # Opened while the old builder drains: bound elsewhere.
    p2 = ssh_nix(stack)
    try:
        other = wait_for(lambda: request_of(stack, other_than=name), 60,
                         what="the new session's request bound to another builder")
        assert other["status"]["podName"] != name
        # The first session was not cut: it ends as its client ends it.
        assert get_pod(stack, name) is not None, "the draining pod went too early"
        out, err = p.communicate(timeout=30)   # EOF: nix-store --serve ends
        assert p.returncode == 0, (p.returncode, err)
        assert last_nrbc_line(err) is None, err
        # Nothing held it any more: the drain ended, and the pod with it
        # (well within the 10 s grace the test kubelet allows).
        wait_for(lambda: get_pod(stack, name) is None, 30, what="the drained pod to go")
        wait_for(lambda: (lambda r: r if r and phase(r) == "Running" else None)(
            request_of(stack, other_than=name)), 60, what="the new session Running")
        serve_hello(p2)
        out, err = p2.communicate(timeout=30)
        assert p2.returncode == 0, (p2.returncode, err)
    finally:
        if p2.poll() is None:
            p2.kill()
            p2.wait()
    stack.wait_clean(30)


def test_evicted_builder_past_its_drain_timeout_is_reported(stack):
    """A session that outlasts its builder's drain timeout (the pod's grace
    period: cut to 10 s by the test kubelet) is killed with the pod; the user
    hears that the builder was evicted, not "unexpected end-of-file"."""
    p, pod = bridged_session(stack)
    name = pod["metadata"]["name"]
    st, body = evict(stack, name)
    assert st == 201, body
    started = time.monotonic()
    out, err = wait_open(p, 90)
    took = time.monotonic() - started
    assert p.returncode not in (0, 255), (p.returncode, err)
    line = last_nrbc_line(err)
    print("the user saw after %.1fs: %s" % (took, line))
    assert line and name in line and "evicted" in line, err
    # It lasted the drain: the session was not cut at the eviction.
    assert took >= 5, took
    stack.wait_clean(30)


class ExtraProxy:
    """A second proxy from the same Deployment, with flags of the test's own;
    stopped and its Pod deleted at the end."""

    def __init__(self, stack, *flags):
        self.stack = stack
        self.port = free_port(PROXY_ADDRESS)
        health = free_port(PROXY_ADDRESS)
        self.role = Role(stack, stack.deployment("nrbc-proxy"),
                         ["--listen-address=" + PROXY_ADDRESS, "--port=%d" % self.port,
                          "--health-port=%d" % health] + list(flags))
        self.role.health_port = health
        # A log of its own: the stack's proxy writes to nrbc-proxy.log.
        self.role.log_path = os.path.join(stack.dir, "nrbc-proxy-%d.log" % self.port)

    def __enter__(self):
        self.role.start()
        wait_for(self.role.ready, 30, what="second proxy /readyz")
        return self

    def __exit__(self, *exc):
        self.role.stop()
        self.stack.cluster.api("DELETE", "/api/v1/namespaces/%s/pods/%s" % (
            NAMESPACE, self.role.pod["metadata"]["name"]))


def bridged_session(stack, port=None):
    """A session through the proxy, bridged to its builder: (process, the
    builder pod)."""
    p = ssh_nix(stack, port=port)
    req = wait_for(lambda: (lambda r: r if r and phase(r) == "Running" else None)(
        one_request(stack)), 60, what="a Running request")
    serve_hello(p)
    name = req["status"]["podName"]
    st, pod = stack.cluster.api("GET", "/api/v1/namespaces/%s/pods/%s" % (NAMESPACE, name))
    assert st == 200, pod
    return p, pod


def pod_processes(stack, pod):
    """Every process of a builder pod the test kubelet runs."""
    root = stack.kubelet.pod_pid(pod["metadata"]["uid"])
    assert root, "no process for pod %s" % pod["metadata"]["name"]
    return kubelet_mod.descendants({root[0]: root[1]}, {root[0]: root[1]})


def signal_pod(stack, pod, sig):
    for pid in pod_processes(stack, pod):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def test_builder_container_killed_mid_session(stack):
    """Every process of the builder dies at once (OOM kill of the container,
    a crashed node agent) while the pod object stays: the connection breaks
    with no exit status, and the user hears what Kubernetes says of the pod."""
    p, pod = bridged_session(stack)
    procs = pod_processes(stack, pod)
    kubelet_mod._signal_all(procs, signal.SIGSTOP)
    kubelet_mod._signal_all(procs, signal.SIGKILL)
    out, err = wait_open(p, 60)
    assert p.returncode not in (0, 255), (p.returncode, err)
    line = last_nrbc_line(err)
    print("the user saw: %s" % line)
    assert line and pod["metadata"]["name"] in line, err
    assert "exited with code 137" in line or "lost the connection" in line, line
    stack.wait_clean(30)


def test_frozen_builder_is_found_by_keepalives(stack):
    """A builder whose processes all stop (a hung node looks like this: its
    kernel still acknowledges packets): the session ends within the keepalive
    bound, says so, and its request goes."""
    with ExtraProxy(stack, "--keepalive-interval=2s", "--keepalive-count=2",
                    "--builder-lost-wait=1s") as extra:
        p, pod = bridged_session(stack, port=extra.port)
        signal_pod(stack, pod, signal.SIGSTOP)
        try:
            started = time.monotonic()
            out, err = p.communicate(timeout=60)
            took = time.monotonic() - started
        finally:
            signal_pod(stack, pod, signal.SIGCONT)
        assert p.returncode == 1, (p.returncode, err)
        line = last_nrbc_line(err)
        print("the user saw after %.1fs: %s" % (took, line))
        assert line and pod["metadata"]["name"] in line and "keepalive" in line, err
        # 2 s x 2 without an answer, then 1 s for the cluster to say why;
        # generous for a loaded machine, far below the idle timeout.
        assert took < 30, took
        wait_for(lambda: not stack.requests(), 30, what="the request to go")


def test_frozen_client_is_found_by_keepalives(stack):
    """A Nix client that stops (its laptop suspended, its process stopped):
    the proxy ends the session within the keepalive bound and frees its
    builder slot (the request goes) instead of holding it for the idle
    timeout."""
    with ExtraProxy(stack, "--keepalive-interval=2s", "--keepalive-count=2") as extra:
        p, _ = bridged_session(stack, port=extra.port)
        p.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: not stack.requests(), 30, what="the frozen client's request to go")
        finally:
            p.send_signal(signal.SIGCONT)
        p.communicate(timeout=30)
        assert p.returncode == 255, p.returncode
        assert "answered no keepalive" in extra.role.log(), extra.role.log()[-2000:]


def test_a_quiet_session_outlives_the_keepalive_bound(stack):
    """Keepalives end sessions whose peers are gone, not quiet ones: a
    bridged session with no traffic either way (a long silent build) for
    three times the keepalive bound still works, and so does its builder."""
    with ExtraProxy(stack, "--keepalive-interval=1s", "--keepalive-count=2") as extra:
        p, _ = bridged_session(stack, port=extra.port)
        time.sleep(6)
        assert p.poll() is None, wait_open(p, 10)
        # The serve protocol still answers: the same handshake again is an
        # unknown command to nix-store --serve, which then ends; any answer
        # proves the bridge carried it. Close instead: a clean end.
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, (p.returncode, err)
        assert "answered no keepalive" not in extra.role.log(), extra.role.log()[-3000:]


def test_proxy_shutdown_tells_waiting_sessions(stack, no_controller):
    quick = Role(stack, stack.deployment("nrbc-proxy"),
                 ["--listen-address=" + PROXY_ADDRESS,
                  "--port=%d" % free_port(PROXY_ADDRESS),
                  "--health-port=%d" % free_port(PROXY_ADDRESS),
                  "--shutdown-timeout=1s"])
    quick.health_port = int(quick.overrides[2].split("=")[1])
    quick.start()
    try:
        wait_for(quick.ready, 30, what="second proxy /readyz")
        p = ssh_nix(stack, port=int(quick.overrides[1].split("=")[1]))
        name = wait_for(lambda: one_request(stack), 30,
                        what="the session's request")["metadata"]["name"]
        hold(stack, name)
        try:
            assert quick.stop() == 0, quick.log()[-3000:]
            out, err = p.communicate(timeout=30)
            assert p.returncode == 1, err
            assert last_nrbc_line(err) == ("nrbc: the nrbc proxy is shutting down (proxy "
                                           "shutdown timeout): retry the build"), err
            # The session cut at the deadline still had its end written
            # before the process exited: Failed with the reason, deleted.
            obj = deleted(stack, name)
            assert obj, (request(stack, name), quick.log()[-3000:])
            assert obj["status"]["phase"] == "Failed", obj["status"]
            assert "proxy shutdown timeout" in obj["status"]["message"], obj["status"]
        finally:
            let_go(stack, name)
    finally:
        quick.stop()
        stack.cluster.api("DELETE", "/api/v1/namespaces/%s/pods/%s" % (
            NAMESPACE, quick.pod["metadata"]["name"]))
    wait_for(lambda: not stack.requests(), 30, what="the request to go")


def test_kill_9_of_the_proxy_leaves_nothing_behind(stack, no_controller):
    p = ssh_nix(stack)
    req = wait_for(lambda: one_request(stack), 30, what="the session's request")
    stack.proxy.stop(signal.SIGKILL)
    p.wait(30)
    assert [r["metadata"]["name"] for r in stack.requests()] == [req["metadata"]["name"]]
    # The same Pod restarts its container: same name, same proxy id.
    stack.proxy.start()
    wait_for(stack.proxy.ready, 30, what="restarted proxy /readyz")
    wait_for(lambda: not stack.requests(), 30, what="the leftover request to go")
    assert "left behind by an earlier run" in stack.proxy.log()


def test_without_authorized_keys_the_public_key_is_allowed(stack, tmp_path):
    """The original quick start: the Secret has only private/public, and the
    key pair's public half is the one client key let in."""
    c = stack.cluster
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "quickstart-keys", "namespace": NAMESPACE},
              "type": "Opaque",
              "stringData": {"private": open(stack.keys["builder-key"]).read(),
                             "public": open(stack.keys["builder-key"] + ".pub").read(),
                             "host-key": open(stack.keys["host-key"]).read()}}
    c.apply(json.dumps(secret))
    port = free_port(PROXY_ADDRESS)
    proc = subprocess.Popen([stack.nrbc_bin, "proxy", "--kubeconfig", c.kubeconfig,
                             "--namespace", NAMESPACE, "--ssh-key-secret", "quickstart-keys",
                             "--listen-address", PROXY_ADDRESS, "--port", str(port),
                             "--health-port", "-1", "--builder-address", "127.0.0.1:1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: subprocess.run(["bash", "-c", "exec 3<>/dev/tcp/%s/%d" % (
            PROXY_ADDRESS, port)], stderr=subprocess.DEVNULL).returncode == 0, 20,
            what="proxy listening")
        # The builder key gets in (and then fails to reach the fake builder).
        p = ssh_nix(stack, port=port, key=stack.keys["builder-key"])
        _, err = p.communicate(timeout=60)
        assert p.returncode == 1, err
        assert b"Permission denied" not in err, err
        # The user key, not listed anywhere in this Secret, does not.
        p = ssh_nix(stack, port=port, key=stack.keys["user-key"])
        _, err = p.communicate(timeout=60)
        assert p.returncode == 255 and b"Permission denied" in err, err
    finally:
        proc.terminate()
        proc.wait(30)


# ---- the proxy's own restarts lose nothing ---------------------------------------

NBR_PATH = "/apis/nix.io/v1alpha1/namespaces/%s/nixbuildrequests" % NAMESPACE
MERGE = {"Content-Type": "application/merge-patch+json"}
HOLD = "nix.io/test-hold"


def hold(stack, name):
    """A finalizer of the test's own: the request's delete then only marks
    it (deletionTimestamp), and what the proxy wrote before deleting it
    stays readable."""
    st, body = stack.cluster.api("PATCH", NBR_PATH + "/" + name,
                                 {"metadata": {"finalizers": [HOLD]}}, headers=MERGE)
    assert st == 200, body


def let_go(stack, name):
    stack.cluster.api("PATCH", NBR_PATH + "/" + name, {"metadata": {"finalizers": None}},
                      headers=MERGE)


def request(stack, name):
    st, body = stack.cluster.api("GET", NBR_PATH + "/" + name)
    assert st in (200, 404), body
    return body if st == 200 else None


def deleted(stack, name):
    """The request once the proxy has deleted it (held by the finalizer)."""
    obj = request(stack, name)
    return obj if obj and obj["metadata"].get("deletionTimestamp") else None


class ApiGate:
    """A TCP relay in front of kube-apiserver that the test closes (every
    connection through it reset, new ones refused) and opens again: an API
    outage for one process only, here one proxy."""

    def __init__(self, server):
        host, port = server.split("://", 1)[1].rsplit(":", 1)
        self.target = (host, int(port))
        self.host = host
        self.port = free_port(host)
        self.lock = threading.Lock()
        self.conns = []
        self.listener = None
        self.open()

    def open(self):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self.host, self.port))
        ls.listen(64)
        self.listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def _accept(self, ls):
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.target, 5)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, up]
            threading.Thread(target=relay, args=(c, up), daemon=True).start()
            threading.Thread(target=relay, args=(up, c), daemon=True).start()

    def close(self):
        if self.listener is None:
            return
        try:
            self.listener.shutdown(socket.SHUT_RDWR)   # wakes the accept()
        except OSError:
            pass
        self.listener.close()
        self.listener = None
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class GatedRole(Role):
    """A proxy whose in-cluster API address is the gate's."""

    def __init__(self, stack, gate, overrides):
        super().__init__(stack, stack.deployment("nrbc-proxy"), overrides)
        self.gate = gate

    def _env(self):
        env = super()._env()
        env["KUBERNETES_SERVICE_PORT"] = str(self.gate.port)
        return env


def gated_extra_proxy(stack, gate, *flags):
    """An ExtraProxy whose API traffic goes through gate."""
    extra = ExtraProxy(stack, *flags)
    plain = extra.role
    extra.role = GatedRole(stack, gate, plain.overrides)
    extra.role.health_port = plain.health_port
    extra.role.log_path = plain.log_path
    return extra


def test_drain_waits_for_the_end_of_a_session_ending_during_it(stack):
    """SIGTERM: the proxy stops taking sessions (/readyz 503) while a live
    one goes on; when it ends, its request is marked Completed and deleted
    before the process exits, not left Running to hold a builder slot."""
    with ExtraProxy(stack, "--shutdown-timeout=30s") as extra:
        p, _ = bridged_session(stack, port=extra.port)
        name = one_request(stack)["metadata"]["name"]
        hold(stack, name)
        try:
            extra.role.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: not extra.role.ready(), 10, what="/readyz 503 while draining")
            time.sleep(1)
            assert p.poll() is None, "the live session was cut by the drain"
            assert extra.role.proc.poll() is None, "the proxy left a live session"
            assert phase(request(stack, name)) == "Running"
            p.stdin.close()
            assert p.wait(30) == 0, p.stderr.read()
            assert extra.role.proc.wait(30) == 0, extra.role.log()[-3000:]
            # Before the process was gone: the outcome, then the delete.
            obj = deleted(stack, name)
            assert obj, (request(stack, name), extra.role.log()[-3000:])
            assert obj["status"]["phase"] == "Completed", obj["status"]
            assert obj["status"].get("completionTime"), obj["status"]
            assert "every request's end has landed" in extra.role.log()
        finally:
            let_go(stack, name)
    wait_for(lambda: not stack.requests(), 30, what="the request to go")


def test_a_failed_end_is_tried_again_until_it_lands(stack):
    """The API goes away (for this proxy only) as a session ends: the
    status patch and the delete fail, the proxy says so and tries again
    with backoff, and both land once the API is back."""
    gate = ApiGate(stack.cluster.server)
    name = None
    try:
        with gated_extra_proxy(stack, gate) as extra:
            p, _ = bridged_session(stack, port=extra.port)
            name = one_request(stack)["metadata"]["name"]
            hold(stack, name)
            gate.close()
            p.stdin.close()
            assert p.wait(30) == 0, p.stderr.read()
            wait_for(lambda: "cannot record the outcome of the request" in extra.role.log(),
                     20, what="the proxy to say the end failed")
            # Tries at 0.5 s, 1 s, 2 s...: some more fail, nothing is lost.
            wait_for(lambda: "try 3;" in extra.role.log(), 20, what="a third failed try")
            obj = request(stack, name)
            assert phase(obj) == "Running" and not obj["metadata"].get("deletionTimestamp")
            m = extra.role.metrics()
            assert m["nrbc_proxy_request_ends_pending"] == 1, m
            assert m["nrbc_proxy_request_end_failures_total"] >= 3, m
            gate.open()
            obj = wait_for(lambda: deleted(stack, name), 60,
                           what="the end to land once the API is back")
            assert obj["status"]["phase"] == "Completed", obj["status"]
            log = extra.role.log()
            assert "nbr=%s/%s: outcome recorded after" % (NAMESPACE, name) in log, log[-3000:]
            wait_for(lambda: extra.role.metrics()["nrbc_proxy_request_ends_pending"] == 0, 10,
                     what="no end pending")
            assert extra.role.stop() == 0, extra.role.log()[-3000:]
    finally:
        gate.close()
        if name:
            let_go(stack, name)
    wait_for(lambda: not stack.requests(), 30, what="the request to go")


def test_ends_are_given_up_only_at_the_shutdown_deadline(stack):
    """SIGTERM while the API is away: the end of a session that ends in
    the drain is tried until the deadline (the shutdown timeout, at least
    the 5 s write grace), then given up with a log line naming the request;
    the process still exits in bounded time."""
    gate = ApiGate(stack.cluster.server)
    name = None
    try:
        with gated_extra_proxy(stack, gate, "--shutdown-timeout=2s") as extra:
            p, _ = bridged_session(stack, port=extra.port)
            name = one_request(stack)["metadata"]["name"]
            gate.close()
            t0 = time.monotonic()
            extra.role.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            p.stdin.close()
            assert p.wait(30) == 0, p.stderr.read()
            assert extra.role.proc.wait(30) == 0, extra.role.log()[-3000:]
            took = time.monotonic() - t0
            # Tried for the write grace (the 2 s timeout had less left), no longer.
            assert 4.5 <= took < 15, took
            log = extra.role.log()
            assert "nbr=%s/%s: stopping before the request's end landed" % (
                NAMESPACE, name) in log, log[-3000:]
            assert "nbr=%s/%s: cannot record the outcome of the request" % (
                NAMESPACE, name) in log, log[-3000:]
            # Still there: the garbage collector's (with the proxy's Pod) now.
            assert phase(request(stack, name)) == "Running"
    finally:
        gate.close()
        if name:
            stack.cluster.api("DELETE", NBR_PATH + "/" + name)
    wait_for(lambda: not stack.requests(), 30, what="the request to go")


def test_a_request_no_session_holds_is_swept_while_the_proxy_runs(stack, no_controller):
    """A request labelled with this proxy's id that no live session holds
    (as an end given up at a shutdown deadline leaves, or one made by hand)
    is deleted by the periodic sweep, once two passes in a row saw it
    unheld; the request of a live session, waiting for its builder, is
    never touched."""
    with ExtraProxy(stack, "--sweep-interval=1s") as extra:
        proxy_id = extra.role.pod["metadata"]["name"]
        p = ssh_nix(stack, port=extra.port)
        live = wait_for(lambda: one_request(stack), 30, what="the session's request")
        live_name = live["metadata"]["name"]
        assert live["metadata"]["labels"]["nix.io/proxy"] == proxy_id
        def make(prefix, owner):
            st, obj = stack.cluster.api("POST", NBR_PATH, {
                "apiVersion": "nix.io/v1alpha1", "kind": "NixBuildRequest",
                "metadata": {"generateName": prefix,
                             "labels": {"app.kubernetes.io/managed-by": "nrbc-proxy",
                                        "nix.io/proxy": owner}},
                "spec": {"sessionId": prefix.strip("-")}})
            assert st == 201, obj
            return obj
        # Another replica's request is that replica's business.
        other = make("build-other-", "nrbc-proxy-another-replica")["metadata"]["name"]
        # Made after the start-up sweep, so only the periodic one can find it.
        left = make("build-left-", proxy_id)
        t0 = time.monotonic()
        left_name = left["metadata"]["name"]
        wait_for(lambda: not request(stack, left_name), 20, what="the sweep to delete it")
        took = time.monotonic() - t0
        # Two passes 1 s apart saw it: not deleted at first sight.
        assert took >= 0.8, took
        log = extra.role.log()
        assert "nbr=%s/%s: no session of proxy %s holds this request" % (
            NAMESPACE, left_name, proxy_id) in log, log[-3000:]
        assert "left behind by an earlier run" not in log, log[-3000:]
        assert extra.role.metrics()["nrbc_proxy_requests_swept_total"] == 1
        # Several more passes: the live session's request stays.
        time.sleep(3)
        assert request(stack, live_name), "the sweep deleted a live session's request"
        assert request(stack, other), "the sweep deleted another proxy's request"
        st, _ = stack.cluster.api("DELETE", NBR_PATH + "/" + other)
        assert st == 200
        assert "nbr=%s/%s: no session" % (NAMESPACE, live_name) not in extra.role.log()
        assert p.poll() is None
        p.kill()
        p.wait(10)
        assert extra.role.stop() == 0, extra.role.log()[-3000:]
    wait_for(lambda: not stack.requests(), 30, what="the session's request to go")


def test_manifests_keep_a_proxy_serving_through_upgrades(stack):
    """Two replicas, surge before removal, one voluntary disruption at a
    time, and a grace period that covers the drain."""
    d = stack.deployment("nrbc-proxy")
    assert d["spec"]["replicas"] == 2
    ru = d["spec"]["strategy"]["rollingUpdate"]
    assert d["spec"]["strategy"]["type"] == "RollingUpdate"
    assert ru["maxUnavailable"] == 0 and ru["maxSurge"] == 1, ru
    pdb = stack.objects[("PodDisruptionBudget", "nrbc-proxy")]
    assert pdb["spec"]["maxUnavailable"] == 1, pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"] == d["spec"]["selector"]["matchLabels"]
    spec = d["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    shutdown = [a for a in c["args"] if a.startswith("--shutdown-timeout=")]
    assert shutdown == ["--shutdown-timeout=30s"], c["args"]
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    # preStop, then the sessions' shutdown timeout, then the 5 s the ends
    # of sessions cut at that deadline get, with a margin.
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + 30 + 5 + 5, spec


def builder_status(stack, name):
    for b in stack.nixbuilders():
        if b["metadata"]["name"] == name:
            return b.get("status") or {}
    return None


def test_the_proxy_pins_each_builders_own_host_key(stack, tmp_path):
    """The proxy verifies a builder by the host key the controller made for
    it and recorded (the pod's annotation, mirrored into the request's
    status), never by the proxy's own key. A builder presenting any other
    key is refused with a line that says so."""
    p = ssh_nix(stack)
    serve_hello(p)
    req = one_request(stack)
    st = req["status"]
    p.stdin.close()
    p.wait(60)
    assert p.returncode == 0, p.stderr.read()
    proxy_key = open(stack.keys["host-key"] + ".pub").read().split()[1]
    assert st["builderHostKey"].startswith("ecdsa-sha2-nistp256 "), st
    assert proxy_key not in st["builderHostKey"]
    name = st["builder"]
    try:
        # What the controller records for the builder is no longer what its
        # sshd has: as if its key had been swapped for one someone else
        # holds.
        subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f",
                        str(tmp_path / "other")], check=True)
        other = " ".join(open(str(tmp_path / "other.pub")).read().split()[:2])
        code, body = stack.cluster.api(
            "PATCH", "/api/v1/namespaces/%s/pods/%s" % (NAMESPACE, st["podName"]),
            {"metadata": {"annotations": {"nix.io/host-key": other}}}, headers=MERGE)
        assert code == 200, body
        wait_for(lambda: (builder_status(stack, name) or {}).get("hostKey") == other, 30,
                 what="the builder's status shows the patched key")
        p = ssh_nix(stack)
        out, err = wait_open(p, 60)
        assert p.returncode != 0, (out, err)
        line = last_nrbc_line(err)
        print("the user saw: %s" % line)
        assert line and "not its own host key" in line and "refusing to connect" in line, err
    finally:
        stack.cluster.api("DELETE", "/apis/nix.io/v1alpha1/namespaces/%s/nixbuilders/%s" %
                          (NAMESPACE, name))
    stack.wait_clean(30)
