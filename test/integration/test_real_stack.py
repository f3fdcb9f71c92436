"""nrbc deployed as it ships, on a real node (real_stack.py): the images
built from the repository's Containerfiles, the controller and proxy as
their Deployments in containers, builder pods as containers with the
securityContext, probes and resources the controller sets, and a real Nix
client building through the proxy's pod."""

import hashlib
import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import NixClient, free_port, salt, wait_for
from real_stack import BUILDER_IMAGE, IMAGE, RealStack, containerd_ids
from stack import NAMESPACE, SECRET
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



@pytest.fixture
def gateway_http(stack, tmp_path):
    """An HTTP server on the node's gateway, which builder pods reach (as
    they reach the API server there), serving one file made for the test."""
    body = ("nrbc sandbox fetch %s\n" % salt()).encode()
    (tmp_path / "fetch").write_bytes(body)
    host = stack.cluster.node.gateway
    port = free_port(host)
    p = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", host,
                          "--directory", str(tmp_path), str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers():
        try:
            socket.create_connection((host, port), 1).close()
            return True
        except OSError:
            return False
    try:
        wait_for(answers, 10, what="the test's HTTP server")
        yield {"url": "http://%s:%d/fetch" % (host, port), "body": body,
               "hash": hashlib.sha256(body).hexdigest()}
    finally:
        p.terminate()
        p.wait(10)


def serving_builder(stack, nix_client):
    """A builder pod with an address, made by a build if there is none."""
    pods = [p for p in builder_pods(stack) if p["status"].get("podIP")]
    if not pods:
        nix_client.build("simple.nix", builders=stack.builders("ssh-ng"),
                         sshopts=stack.sshopts(), args={"salt": salt()})
        pods = [p for p in builder_pods(stack) if p["status"].get("podIP")]
    assert pods, "no builder pod"
    return pods[0]


def test_builds_are_sandboxed(stack, nix_client, gateway_http):
    """As shipped, builders build in Nix's sandbox, never without
    (sandbox-fallback = false: a build that ran at all ran sandboxed): an
    ordinary derivation cannot reach a server its builder pod reaches, nor
    see the pod's keys, config or sshd's files, and runs as a build user;
    a fixed-output one fetches from that same server."""
    args = {"salt": salt(), "url": gateway_http["url"], "hash": gateway_http["hash"]}
    builders = stack.builders("ssh-ng")
    fetched = nix_client.build("sandbox.nix", builders=builders, sshopts=stack.sshopts(),
                               args=args, extra=["-A", "fetched"])
    assert nix_client.read(fetched.out) == gateway_http["body"]
    probe = nix_client.build("sandbox.nix", builders=builders, sshopts=stack.sshopts(),
                             args=args, extra=["-A", "probe"])
    seen = nix_client.read(probe.out).decode()
    print("the sandboxed build saw:\n" + seen)
    # Its own network namespace, with only a loopback (where the test
    # network's 127.x addresses lead nowhere): wget ran and could not connect.
    assert "network: unreachable: wget: can't connect to remote host" in seen, seen
    for f in ("/etc/nrbc/ssh/host-key", "/etc/nrbc/ssh/public", "/etc/nix/nix.conf",
              "/run/nrbc/authorized_keys", "/run/nrbc/sshd_config"):
        assert "%s: absent" % f in seen, seen
    # Nix's sandbox maps the build user to uid 1000 of its own namespace.
    assert "uid: 1000" in seen, seen
    # The builder pod that built it: its own user namespace, an unmasked
    # /proc, the Localhost profile; and the pod itself reaches the server,
    # so "unreachable" above is the sandbox's doing, not the network's.
    pod = serving_builder(stack, nix_client)
    spec = pod["spec"]
    assert spec["hostUsers"] is False
    assert spec["securityContext"]["seccompProfile"] == {
        "type": "Localhost", "localhostProfile": "nrbc/builder-sandbox.json"}
    assert spec["containers"][0]["securityContext"]["procMount"] == "Unmasked"
    r = stack.exec(pod["metadata"]["name"], "busybox", "wget", "-q", "-O", "-",
                   gateway_http["url"])
    assert r.stdout.encode() == gateway_http["body"]
    r = stack.exec(pod["metadata"]["name"], "cat", "/proc/self/uid_map")
    inside, outside, _count = r.stdout.split()
    assert inside == "0" and outside != "0", r.stdout


def test_builder_that_cannot_sandbox_says_so(stack, nix_client):
    """A cluster without user-namespaced pods (an API server or kubelet
    without UserNamespacesSupport drops hostUsers and procMount, so the pod
    runs with the node's users and a masked /proc): such a builder serves
    no unsandboxed build; it exits at start, and its termination message,
    which the NixBuilder's status carries, says why and how to turn
    sandboxing off."""
    spec = serving_builder(stack, nix_client)["spec"]
    spec.pop("hostUsers", None)
    spec["containers"][0]["securityContext"].pop("procMount", None)
    # The shared Secret's public key only: the copy must not depend on the
    # builder's own host-key Secret, which goes when that builder idles out.
    spec["volumes"] = [v if v["name"] != "ssh-keys" else
                       {"name": "ssh-keys", "secret": {
                           "secretName": SECRET, "defaultMode": 0o400,
                           "items": [{"key": "public", "path": "public"}]}}
                       for v in spec["volumes"]]
    name = "nrbc-test-no-userns-" + salt()[:8]
    keep = ("containers", "volumes", "securityContext", "restartPolicy",
            "automountServiceAccountToken", "enableServiceLinks",
            "terminationGracePeriodSeconds")
    stack.cluster.apply(json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {k: v for k, v in spec.items() if k in keep}}))
    try:
        def terminated():
            st, p = stack.cluster.api("GET", "/api/v1/namespaces/%s/pods/%s"
                                      % (NAMESPACE, name))
            assert st == 200, p
            for cs in p["status"].get("containerStatuses") or []:
                if cs.get("state", {}).get("terminated"):
                    return cs["state"]["terminated"]
            return None
        t = wait_for(terminated, 120, what="the builder that cannot sandbox to exit")
        print("termination message: %s" % t.get("message"))
        assert t["exitCode"] != 0
        assert "Nix cannot sandbox builds in this pod" in t.get("message", ""), t
        assert "mounting /proc" in t["message"], t
        assert "--builder-sandbox=false" in t["message"], t
    finally:
        stack.cluster.kubectl("-n", NAMESPACE, "delete", "pod", name, "--wait=false",
                              check=False)
