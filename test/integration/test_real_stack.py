"""nrbc deployed as it ships, on a real node (real_stack.py): the images
built from the repository's Containerfiles, the controller and proxy as
their Deployments in containers, builder pods as containers with the
securityContext, probes and resources the controller sets, and a real Nix
client building through the proxy's pod."""

import ipaddress
import os
import threading
import time

import pytest

from conftest import NixClient, salt, wait_for
from real_stack import BUILDER_IMAGE, IMAGE, RealStack, containerd_ids
from stack import NAMESPACE
from tcp_lb import TcpLoadBalancer

from test_e2e import build_graph


@pytest.fixture(scope="module")
def stack(real_cluster, tmp_path_factory):
    c = real_cluster
    api_port = int(c.server.rsplit(":", 1)[1])
    s = RealStack(c, tmp_path_factory.mktemp("real-stack"), c.node.gateway, api_port)
    s.install().start()
    yield s
    s.stop()


def builder_pods(stack):
    return stack.pods("nrbc-builder")


def test_deployments_run_as_shipped(stack):
    controllers = stack.pods("nrbc-controller")
    proxies = stack.pods("nrbc-proxy")
    assert len(controllers) == 2 and len(proxies) == 2
    for p in controllers + proxies:
        (c,) = p["spec"]["containers"]
        assert c["image"] == IMAGE
        ids = containerd_ids(p)
        assert ids and all(i.startswith("containerd://") for i in ids), ids
        assert (ipaddress.ip_address(p["status"]["podIP"])
                in ipaddress.ip_network(stack.cluster.node.subnet)), p["status"]
    # Not root, as the manifests and the image say.
    r = stack.exec(proxies[0]["metadata"]["name"], "id", "-u")
    assert r.stdout.strip() == "65532"
    # One leader, one standby, both ready (the standby's caches are synced).
    leader, _ = stack.wait_leader()
    assert leader in {p["metadata"]["name"] for p in controllers}
    for p in controllers:
        cond = {c["type"]: c["status"] for c in p["status"]["conditions"]}
        assert cond.get("Ready") == "True", p["status"]


@pytest.mark.parametrize("scheme", ["ssh", "ssh-ng"])
def test_nix_build_through_the_proxy_pod(stack, nix_client, scheme):
    build_graph(stack, nix_client, scheme, 4)

    served = [b for b in stack.nixbuilders() if b["spec"].get("identity")]
    assert served, stack.nixbuilders()
    pods = {p["metadata"]["name"]: p for p in builder_pods(stack)}
    for b in served:
        pod = pods.get("nix-builder-" + b["metadata"]["name"])
        assert pod is not None, (b["metadata"]["name"], list(pods))
        assert pod["spec"]["containers"][0]["image"] == BUILDER_IMAGE
        assert all(i.startswith("containerd://") for i in containerd_ids(pod))
    stack.wait_clean()


def test_builder_pod_is_the_container_the_controller_asked_for(stack):
    wait_for(lambda: builder_pods(stack) and all(
        (p["status"].get("containerStatuses") or [{}])[0].get("ready")
        for p in builder_pods(stack)), 120, what="ready warm-pool builder pods")
    pod = builder_pods(stack)[0]
    name = pod["metadata"]["name"]
    (spec,) = pod["spec"]["containers"]
    # The readiness probe the controller set is what made it ready.
    assert spec["readinessProbe"]["tcpSocket"]["port"] == 22
    # The capabilities the container really has are the ones asked for
    # (all dropped, a few added back), as the kernel reports them.
    added = set(spec["securityContext"]["capabilities"]["add"])
    status = stack.exec(name, "cat", "/proc/1/status").stdout
    capeff = int(next(line.split()[1] for line in status.splitlines()
                      if line.startswith("CapEff:")), 16)
    assert bin(capeff).count("1") == len(added), (hex(capeff), added)
    assert spec["securityContext"]["allowPrivilegeEscalation"] is False
    nnp = next(line.split()[1] for line in status.splitlines()
               if line.startswith("NoNewPrivs:"))
    assert nnp == "1"
    # The memory limit the controller set is the container's cgroup's.
    limit = spec["resources"]["limits"]["memory"]
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    want = int(limit[:-2]) * units[limit[-2:]] if limit[-2:] in units else int(limit)
    r = stack.exec(name, "sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
                   "2>/dev/null || cat /sys/fs/cgroup/memory.max")
    assert int(r.stdout.split()[0]) == want, (r.stdout, limit)


def test_leader_failover(stack, nix_client):
    leader, holder = stack.wait_leader()
    stack.cluster.kubectl("-n", NAMESPACE, "delete", "pod", leader, "--wait=false")
    new, _ = stack.wait_leader(timeout=90, not_=holder)
    assert new != leader
    # The new leader serves: a session gets a builder and a build works.
    args = {"salt": salt()}
    remote = nix_client.build("simple.nix", builders=stack.builders("ssh-ng"),
                              sshopts=stack.sshopts(), args=args)
    local = nix_client.build_local("simple.nix", args=args)
    assert remote.out == local.out
    # The Deployment replaces the deleted replica.
    wait_for(lambda: len([p for p in stack.pods("nrbc-controller")
                          if p["status"].get("phase") == "Running"]) == 2, 120,
             what="two running controller replicas again")


def test_busy_builder_evicted_mid_build_finishes_the_build(stack, nix_client):
    """An eviction through the Eviction API (what `kubectl drain` and the
    cluster autoscaler send) of the builder serving a build, on the real
    node with the shipped image and manifests: the derivation it runs ends
    there, later ones go to another builder, the build completes with the
    outputs of a local build, and the evicted pod goes once its session
    has ended."""
    args = {"salt": salt(), "n": 3, "seconds": 10}
    seen = {"builders": set(), "evicted": None, "evict_status": None}
    stop = threading.Event()

    def evict_the_busy_builder():
        while not stop.is_set():
            live = [r for r in stack.requests()
                    if (r.get("status") or {}).get("phase") == "Running"]
            for r in live:
                seen["builders"].add(r["status"].get("builder"))
            if live and seen["evicted"] is None:
                pod = live[0]["status"]["podName"]
                time.sleep(2)   # mid-derivation
                st, body = stack.cluster.api(
                    "POST", "/api/v1/namespaces/%s/pods/%s/eviction" % (NAMESPACE, pod),
                    {"apiVersion": "policy/v1", "kind": "Eviction",
                     "metadata": {"name": pod, "namespace": NAMESPACE}})
                seen["evicted"], seen["evict_status"] = pod, st
            time.sleep(0.2)

    t = threading.Thread(target=evict_the_busy_builder)
    t.start()
    try:
        # One job at a time: each derivation is one session of 10 s.
        remote = nix_client.build("parallel.nix", builders=stack.builders("ssh-ng", max_jobs=1),
                                  sshopts=stack.sshopts(), args=args)
    finally:
        stop.set()
        t.join()
    assert seen["evict_status"] == 201, seen
    local = nix_client.build_local("parallel.nix", args=args)
    assert remote.out == local.out
    assert nix_client.read(remote.out) == nix_client.read(local.out, store=local.store)
    # Served by more than the evicted builder.
    assert len(seen["builders"] - {None}) >= 2, seen
    wait_for(lambda: seen["evicted"] not in {p["metadata"]["name"] for p in builder_pods(stack)},
             60, what="the evicted builder pod to go")


def test_build_over_its_memory_limit_fails_and_says_why(stack, nix_client):
    """A derivation that takes memory without end, on a builder with the
    controller's memory limit (1Gi here): the kernel kills it, the build
    fails, the user is told it was killed, and the builder serves on."""
    r = nix_client.build("memory.nix", builders=stack.builders("ssh-ng", max_jobs=1),
                         sshopts=stack.sshopts(), args={"salt": salt()}, check=False,
                         timeout=300)
    print("the user saw:\n%s" % r.stderr[-2000:])
    assert r.returncode != 0
    # Node-dependent: with cgroup v1 (this machine) the kernel kills the
    # build's process, and Nix says "signal 9 (Killed)"; with cgroup v2 and
    # memory.oom.group the whole container goes and nrbc names OOMKilled.
    assert "Killed" in r.stderr or "OOMKilled" in r.stderr, r.stderr[-3000:]
    # The next build of the same key works.
    args = {"salt": salt()}
    remote = nix_client.build("simple.nix", builders=stack.builders("ssh-ng"),
                              sshopts=stack.sshopts(), args=args)
    assert remote.out == nix_client.build_local("simple.nix", args=args).out


def test_proxy_rollout_restart_during_a_build(stack, nix_client):
    """`kubectl rollout restart` of the proxy Deployment while a build runs
    through a load balancer that follows the Service's ready pods: the
    sessions on the old pods finish, new sessions reach the new pods, and
    the build completes with the outputs of a local build. (Last in this
    file: the proxy pods are new afterwards.)"""
    old = {p["metadata"]["name"] for p in stack.pods("nrbc-proxy")}
    args = {"salt": salt(), "n": 4, "seconds": 6}
    with TcpLoadBalancer(stack.cluster, NAMESPACE, "nrbc-proxy", "ssh") as lb:
        wait_for(lambda: len(lb.backends) == 2, 60, what="both proxy replicas behind the LB")
        known_hosts = os.path.join(stack.dir, "known_hosts_lb")
        with open(known_hosts, "w") as f:
            f.write("[%s]:%d %s" % (lb.address, lb.port,
                                    open(stack.keys["host-key"] + ".pub").read()))
        sshopts = NixClient.sshopts(lb.port, stack.keys[stack.USERS[0]], known_hosts)
        result = {}

        def build():
            result["b"] = nix_client.build(
                "parallel.nix", builders=NixClient.builders(lb.address, scheme="ssh-ng",
                                                            max_jobs=1),
                sshopts=sshopts, args=args, check=False)
        t = threading.Thread(target=build)
        t.start()
        # Mid-build: the first derivation's session is running.
        wait_for(lambda: any((r.get("status") or {}).get("phase") == "Running"
                             for r in stack.requests()), 120, what="a session running")
        stack.cluster.kubectl("-n", NAMESPACE, "rollout", "restart", "deployment/nrbc-proxy")
        t.join(600)
        assert not t.is_alive(), "the build did not end"
        stack.cluster.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/nrbc-proxy",
                              "--timeout=180s", timeout=190)
        served = dict(lb.served)
    b = result["b"]
    assert b.returncode == 0, "nix-build failed (%d):\n%s" % (b.returncode, b.stderr)
    local = nix_client.build_local("parallel.nix", args=args)
    assert b.out == local.out
    new = {p["metadata"]["name"] for p in stack.pods("nrbc-proxy")}
    assert new and not (new & old), (old, new)
    # Sessions reached more than the two old pods: the new ones served too.
    assert len(served) >= 3, served
    # Later tests talk to a proxy pod that exists.
    stack.proxy_address = stack.pods("nrbc-proxy")[0]["status"]["podIP"]
    stack.publish_service()
