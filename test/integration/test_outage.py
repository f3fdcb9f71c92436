"""Kubernetes API outages: kube-apiserver killed (every connection reset)
and started again on the same port with the same certificates, while etcd
and the test kubelet keep running.

The controller (two replicas with --leader-elect, as the Deployment runs
it) must not exit: the leader stops reconciling when it cannot renew, both
stay candidates, one leads again once the API is back, and requests made
before, during and after the outage get their pods. The proxy keeps bridged
sessions going through an outage."""

import os
import signal
import struct
import subprocess
import time

import pytest

from conftest import wait_for
from controller_fixtures import (builder_pods, controllers, create_nbr, install_config,
                                 install_rbac, phase_is, wait_nbr)


@pytest.fixture
def setup(cluster, kubelet, namespace, ssh_keys):
    install_rbac(cluster, namespace)
    install_config(cluster, namespace, ssh_keys)
    yield {"cluster": cluster, "ns": namespace}
    # Whatever happened, the next test gets an API.
    cluster.start_apiserver()


def leaders(replicas):
    return [c for c in replicas if not c.died() and
            c.metrics().get("nrbc_controller_leader") == 1]


def wait_running(cluster, ns, name, timeout):
    obj = wait_nbr(cluster, ns, name, phase_is("Running", "Failed"), timeout)
    assert obj["status"]["phase"] == "Running", obj["status"]
    return obj


@pytest.mark.parametrize("outage", [15, 60])
def test_controller_survives_an_api_outage(setup, controllers, outage):
    cluster, ns = setup["cluster"], setup["ns"]
    a = controllers("a").start("--leader-elect")
    b = controllers("b").start("--leader-elect")
    wait_for(lambda: len(leaders([a, b])) == 1, 30, what="one leader")
    (first,) = leaders([a, b])

    create_nbr(cluster, ns, "before")
    wait_running(cluster, ns, "before", 60)   # a build runs through the outage
    # A request waits through the outage: the controllers (paused for the
    # moment) have not seen it when the API goes. (Its pod is made only
    # afterwards: the test kubelet does not live through an outage in the
    # middle of starting a pod.)
    for c in (a, b):
        c.kill(signal.SIGSTOP)
    try:
        create_nbr(cluster, ns, "waiting")
        cluster.stop_apiserver()
    finally:
        for c in (a, b):
            c.kill(signal.SIGCONT)
    t0 = time.monotonic()
    # Longer than the renew deadline (10 s): the leader gives the lease up.
    wait_for(lambda: "leadership lost" in first.log(), outage + 5,
             what="the leader to stop leading")
    time.sleep(max(0.0, outage - (time.monotonic() - t0)))
    assert not a.died() and not b.died(), (a.log()[-3000:], b.log()[-3000:])
    assert first.metrics()["nrbc_controller_leader"] == 0
    assert first.get("/healthz")[0] == 200   # alive, nothing to restart
    cluster.start_apiserver()
    back = time.monotonic()

    wait_for(lambda: len(leaders([a, b])) == 1, 40, what="a leader again")
    create_nbr(cluster, ns, "after")
    for name in ("waiting", "after"):
        wait_running(cluster, ns, name, 60)
    print("outage %ds: leader again and requests Running %.1f s after the API returned "
          "(%s leads)" % (outage, time.monotonic() - back,
                          "the same replica" if leaders([a, b]) == [first] else "the other"))
    assert wait_running(cluster, ns, "before", 5)
    assert sorted(p["metadata"]["ownerReferences"][0]["name"]
                  for p in builder_pods(cluster, ns)) == ["after", "before", "waiting"]
    assert not a.died() and not b.died()
    for c in (a, b):
        assert "shutting down" not in c.log(), c.log()[-3000:]


def test_lease_lost_to_another_holder_then_won_back(setup, controllers):
    """Another holder takes the lease (split brain): the leader stops acting
    at once and stays up; when that holder releases the lease, it leads
    again and serves what came in meanwhile."""
    cluster, ns = setup["cluster"], setup["ns"]
    c = controllers("c").start("--leader-elect")
    wait_for(lambda: leaders([c]), 20, what="leading")
    path = "/apis/coordination.k8s.io/v1/namespaces/%s/leases/nrbc-controller" % ns
    st, le = cluster.api("GET", path)
    assert st == 200, le
    le["spec"]["holderIdentity"] = "intruder"
    le["spec"]["leaseDurationSeconds"] = 3600
    st, le = cluster.api("PUT", path, le)
    assert st == 200, le
    wait_for(lambda: "leadership lost" in c.log(), 15, what="the leader to notice")
    assert not c.died()
    assert c.metrics()["nrbc_controller_leader"] == 0
    create_nbr(cluster, ns, "meanwhile")
    time.sleep(2)
    assert builder_pods(cluster, ns) == []   # nobody acts while "intruder" holds it
    # The intruder steps down as a releasing holder does: empty holder.
    st, le = cluster.api("GET", path)
    le["spec"]["holderIdentity"] = ""
    st, le = cluster.api("PUT", path, le)
    assert st == 200, le
    wait_running(cluster, ns, "meanwhile", 30)
    assert leaders([c]) == [c]


# ---- the proxy ----------------------------------------------------------------------

SERVE_MAGIC_1 = 0x390c9deb
SERVE_MAGIC_2 = 0x5452eecb


@pytest.fixture
def stack(cluster, kubelet, nrbc_bin, tmp_path_factory):
    from stack import Stack
    s = Stack(cluster, kubelet, nrbc_bin, tmp_path_factory.mktemp("stack-outage"))
    s.install().start()
    yield s
    cluster.start_apiserver()
    s.stop()


def ssh_nix(stack):
    from stack import PROXY_ADDRESS
    argv = ["ssh", "-F", "/dev/null", "-p", str(stack.proxy_port),
            "-i", stack.keys["user-key"], "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", "UserKnownHostsFile=" + stack.known_hosts(),
            "-o", "StrictHostKeyChecking=no", "-o", "ConnectTimeout=20",
            "nixbld@" + PROXY_ADDRESS, "nix-store", "--serve", "--write"]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def serve_hello(p):
    """The `nix-store --serve` handshake: our magic and version, its magic
    and version back."""
    p.stdin.write(struct.pack("<QQ", SERVE_MAGIC_1, 0x205))
    p.stdin.flush()
    magic, = struct.unpack("<Q", p.stdout.read(8))
    assert magic == SERVE_MAGIC_2, hex(magic)
    version, = struct.unpack("<Q", p.stdout.read(8))
    return version


def last_nrbc_line(err):
    lines = [l for l in err.decode(errors="replace").splitlines() if l.startswith("nrbc: ")]
    return lines[-1] if lines else None


def test_proxy_through_an_outage(stack):
    """A bridged session keeps going; a session waiting for its builder is
    served once the API is back; one that starts during the outage waits,
    is told why on stderr, and is served once the API is back."""
    bridged = ssh_nix(stack)
    wait_for(lambda: [r for r in stack.requests()
                      if (r.get("status") or {}).get("phase") == "Running"], 60,
             what="a Running request")
    # The second session's request is made, but the controller (paused)
    # has not acted on it when the API goes.
    stack.controller.proc.send_signal(signal.SIGSTOP)
    try:
        waiting = ssh_nix(stack)
        wait_for(lambda: len(stack.requests()) == 2, 30, what="the second request")
        stack.cluster.stop_apiserver()
    finally:
        stack.controller.proc.send_signal(signal.SIGCONT)
    try:
        time.sleep(12)  # past the controller's renew deadline
        assert bridged.poll() is None and waiting.poll() is None
        # Bytes still flow both ways through the proxy to the builder.
        assert serve_hello(bridged) >= 0x200
        late = ssh_nix(stack)
        time.sleep(4)  # a few create tries, all unanswered
        assert late.poll() is None, late.stderr.read()
        assert stack.proxy.proc.poll() is None
        assert stack.controller.proc.poll() is None
    finally:
        stack.cluster.start_apiserver()
    # The waiting sessions get their builder.
    assert serve_hello(waiting) >= 0x200
    assert serve_hello(late) >= 0x200
    for p in (bridged, waiting, late):
        try:
            p.stdin.close()
        except BrokenPipeError:
            pass
        p.wait(30)
    assert waiting.returncode == 0, waiting.stderr.read()
    err = late.stderr.read()
    assert late.returncode == 0, err
    print("a session started during the outage saw: %s" % err.decode(errors="replace"))
    assert b"waiting for the Kubernetes API" in err, err
    # Their requests go and their pods with them once the API is back.
    stack.wait_clean(90)
    assert stack.controller.proc.poll() is None
