"""nrbc deployed as it ships, on a real node (real_stack.py): the images
built from the repository's Containerfiles, the controller and proxy as
their Deployments in containers, builder pods as containers with the
securityContext, probes and resources the controller sets, and a real Nix
client building through the proxy's pod."""

import ipaddress
import os
import subprocess
import sys
import threading
import time

import pytest

from binary_cache import BinaryCache
from conftest import NixClient, salt, wait_for
from real_stack import BUILDER_IMAGE, IMAGE, RealStack, containerd_ids
from stack import NAMESPACE
from tcp_lb import TcpLoadBalancer

from test_e2e import build_graph


@pytest.fixture(scope="module")
def node_cache(real_cluster, tmp_path_factory):
    """The test binary cache, on the node's address (the one address off
    the pod network that the node's pods reach): the builders' only
    substituter, allowed by the test stack's addition to the egress policy."""
    c = BinaryCache(tmp_path_factory.mktemp("node-cache"), address=real_cluster.node.gateway)
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def stack(real_cluster, tmp_path_factory, node_cache):
    c = real_cluster
    api_port = int(c.server.rsplit(":", 1)[1])
    s = RealStack(c, tmp_path_factory.mktemp("real-stack"), c.node.gateway, api_port,
                  cache=node_cache)
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


class Outside:
    """A network namespace this test makes, standing for what lies beyond
    the pod network, with a TCP listener on port 443 of two addresses that
    exist only inside it: LINK_LOCAL (169.254.77.x, a metadata service's
    kind of address) and PUBLIC (203.0.113.x, TEST-NET-3: an address on the
    internet's side). The host
    reaches them through a veth pair of the test's own (its host side holds
    the node's gateway address, as the CNI plugin's do, and one /32 route
    per address; the routes go with the veth). Each connection accepted is
    answered with one line naming the address."""

    PORT = 443

    def __init__(self, node):
        # One host per node subnet 127.203.N (claimed per machine), so test
        # runs at the same time do not meet.
        host = 1 + int(node.gateway.split(".")[2]) % 254
        self.LINK_LOCAL = "169.254.77.%d" % host
        self.PUBLIC = "203.0.113.%d" % host
        n = os.getpid() % 100000
        self.ns = "nrbc-egress-%d" % n
        self.host_if, self.peer_if = "egrh%05d" % n, "egrp%05d" % n
        self.gateway, self.subnet = node.gateway, node.subnet
        self.proc = None

    def _run(self, *argv):
        subprocess.run(argv, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def start(self):
        self.stop()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self):
        self._run("ip", "netns", "add", self.ns)
        self._run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name",
                  self.peer_if)
        self._run("ip", "link", "set", self.peer_if, "netns", self.ns)
        ns = ["ip", "netns", "exec", self.ns]
        self._run(*ns, "sysctl", "-qw", "net.ipv4.conf.%s.route_localnet=1" % self.peer_if)
        for cmd in (["link", "set", "lo", "up"],
                    ["addr", "add", self.LINK_LOCAL + "/32", "dev", self.peer_if],
                    ["addr", "add", self.PUBLIC + "/32", "dev", self.peer_if],
                    ["link", "set", self.peer_if, "up"],
                    # the node's pods are loopback addresses: routed out, not local
                    ["route", "add", self.gateway + "/32", "dev", self.peer_if, "table", "local"],
                    ["route", "add", self.subnet, "via", self.gateway, "dev",
                     self.peer_if, "table", "local"]):
            self._run(*ns, "ip", *cmd)
        for knob in ("route_localnet", "forwarding"):
            with open("/proc/sys/net/ipv4/conf/%s/%s" % (self.host_if, knob), "w") as f:
                f.write("1")
        self._run("ip", "addr", "add", self.gateway + "/32", "dev", self.host_if)
        self._run("ip", "link", "set", self.host_if, "up")
        for a in (self.LINK_LOCAL, self.PUBLIC):
            self._run("ip", "route", "add", a + "/32", "dev", self.host_if, "src", self.gateway)
        server = ("import socket, threading\n"
                  "def serve(addr):\n"
                  "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                  "    s.bind((addr, %d)); s.listen(64)\n"
                  "    while True:\n"
                  "        c, _ = s.accept(); c.sendall(b'outside ' + addr.encode() + b'\\n'); c.close()\n"
                  "for a in %r:\n"
                  "    threading.Thread(target=serve, args=(a,)).start()\n"
                  % (self.PORT, [self.LINK_LOCAL, self.PUBLIC]))
        self.proc = subprocess.Popen(ns + [sys.executable, "-c", server],
                                     stdin=subprocess.DEVNULL, start_new_session=True)

        def listening():
            assert self.proc.poll() is None, "the outside listener exited"
            r = subprocess.run(ns + ["ss", "-Htln"], stdout=subprocess.PIPE, text=True)
            return r.stdout.count(":%d " % self.PORT) == 2
        wait_for(listening, 10, what="listeners in " + self.ns)

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        subprocess.run(["ip", "link", "del", self.host_if], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", self.ns], stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def outside(stack):
    o = Outside(stack.cluster.node).start()
    yield o
    o.stop()


def reach(stack, pod, host, port, send="", timeout=3):
    """What a TCP client inside `pod` gets from host:port: the answer
    (after sending `send`), or None when no connection came about within
    `timeout` seconds (a policy's drop: the SYN gets no answer)."""
    script = ('exec 3<>/dev/tcp/%s/%d || exit 7; echo connected; printf "%%b" "$1" >&3; '
              'timeout 2 cat <&3; true' % (host, port))
    r = stack.exec(pod, "timeout", str(timeout), "bash", "-c", script, "reach", send,
                   check=False)
    if not r.stdout.startswith("connected"):
        return None
    return r.stdout[len("connected\n"):]


def test_builder_egress_closed_but_for_dns_https_and_the_test_cache(stack, outside, node_cache):
    """With the shipped policy enforced (kube-network-policies on the real
    node), from inside a builder pod: HTTPS to an address outside the
    except ranges and the test cache (the test stack's addition) are
    reached; a listener on a link-local address (port 443 too: only the
    except list stops it), the API server and another builder's sshd are
    not. Positive control: with the builders' policies deleted, the same
    pod reaches all of them; applied again, they are closed again."""
    def ready_pool_builders():
        # Unclaimed (warm-pool) builders: nothing deletes them while no
        # session comes, unlike a served builder after its idle timeout.
        pool = {"nix-builder-" + b["metadata"]["name"] for b in stack.nixbuilders()
                if not b["spec"].get("identity")}
        return [p for p in builder_pods(stack) if p["metadata"]["name"] in pool
                and (p["status"].get("containerStatuses") or [{}])[0].get("ready")]
    wait_for(lambda: len(ready_pool_builders()) >= 2, 120, what="two ready pool builders")
    a, b = ready_pool_builders()[:2]
    pod, other_ip = a["metadata"]["name"], b["status"]["podIP"]
    api = (stack.api_host, stack.api_port)
    cache_get = "GET /nix-cache-info HTTP/1.0\r\n\r\n"

    def cache_answers():
        # The cache's HTTP server answers (with a 404 while nothing is in it).
        got = reach(stack, pod, node_cache.address, node_cache.port, send=cache_get)
        return got is not None and "Server: SimpleHTTP" in got

    closed = {"link-local %s:443" % outside.LINK_LOCAL: (outside.LINK_LOCAL, outside.PORT),
              "the API server %s:%d" % api: api,
              "builder %s's sshd" % b["metadata"]["name"]: (other_ip, 22)}

    def check_enforced():
        # Reached: the cache (the addition) and HTTPS outside.
        wait_for(cache_answers, 30, what="the test cache from " + pod)
        wait_for(lambda: reach(stack, pod, outside.PUBLIC, outside.PORT)
                 == "outside %s\n" % outside.PUBLIC, 30, what="HTTPS outside from " + pod)
        # Not reached, each closed by the policy.
        for what, (host, port) in closed.items():
            assert reach(stack, pod, host, port) is None, "%s reached from %s" % (what, pod)

    check_enforced()

    policies = ("nrbc-builder", stack.TEST_CACHE_POLICY)
    stack.cluster.kubectl("-n", NAMESPACE, "delete", "networkpolicy", *policies)
    try:
        # The positive control: the same destinations, the same pod, no policy.
        wait_for(lambda: reach(stack, pod, outside.LINK_LOCAL, outside.PORT)
                 == "outside %s\n" % outside.LINK_LOCAL, 30,
                 what="link-local listener from %s without the policy" % pod)
        wait_for(lambda: reach(stack, pod, *api) is not None, 30,
                 what="the API server from %s without the policy" % pod)
        wait_for(lambda: (reach(stack, pod, other_ip, 22) or "").startswith("SSH-2.0-"), 30,
                 what="another builder's sshd from %s without the policy" % pod)
        assert cache_answers()
    finally:
        stack.apply_manifests()
    st, body = stack.cluster.api(
        "GET", "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies" % NAMESPACE)
    assert set(policies) <= {p["metadata"]["name"] for p in body["items"]}, body
    # Closed again once the enforcer has seen the policies come back.
    wait_for(lambda: reach(stack, pod, outside.LINK_LOCAL, outside.PORT, timeout=2) is None,
             30, what="the link-local listener closed again")
    check_enforced()


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
