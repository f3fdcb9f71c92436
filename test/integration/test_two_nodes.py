"""Builder classes on two real nodes (conftest.two_node_cluster): node 1 as
the real node of test_real_stack.py, node 2 a separate pool, labelled
nrbc.test/pool=big and tainted nrbc.test/pool=big:NoSchedule (each node its
own containerd, kubelet and NetworkPolicy enforcer; one API server and
scheduler; test/cluster/node.py, "More nodes"). nrbc runs as it ships
(real_stack.RealStack: the controller and proxy Deployments land on node 1,
the only one they tolerate), with the controller's --unschedulable-timeout
cut from 2m to 5s for this module.

So the routing the classes ask for is done by the real kube-scheduler and
kubelets: a `big` class whose nodeSelector and toleration put its builders
on node 2, with the class's resources; an `arm` class (aarch64-linux)
whose builders go to node 2 as the arm64 pool; the default class's builders
stay on node 1 (they do not tolerate the taint); a class whose nodeSelector no
node matches ends its session with a line naming Unschedulable. Needs root.
"""

import ipaddress
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ARCH, ARCH_LABEL, POOL, POOL_LABEL, salt, wait_for
from real_stack import BUILDER_IMAGE, RealStack
from stack import NAMESPACE, StackWatcher

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="real nodes need root")

BIG_RESOURCES = {"requests": {"cpu": "200m", "memory": "128Mi"},
                 "limits": {"memory": "1Gi"}}
BIG_TOLERATION = {"key": POOL_LABEL, "operator": "Equal", "value": POOL,
                  "effect": "NoSchedule"}
CLASSES = {
    "big": {"supportedFeatures": ["big-parallel"], "mandatoryFeatures": ["big-parallel"],
            "slots": 2, "nodeSelector": {POOL_LABEL: POOL},
            "tolerations": [BIG_TOLERATION], "resources": BIG_RESOURCES},
    # classes.nix's aarch64-linux derivation (extra-platforms on x86_64:
    # the routing is what is tested), on the node labelled as the arm64 pool.
    "arm": {"systems": ["aarch64-linux"], "nodeSelector": {ARCH_LABEL: ARCH},
            "tolerations": [BIG_TOLERATION]},
    "nowhere": {"nodeSelector": {POOL_LABEL: "none"}},
}
UNSCHEDULABLE_TIMEOUT = "5s"


class TwoNodeStack(RealStack):
    """RealStack with the controller giving up on unschedulable builders
    after 5 s rather than the shipped 2 m."""

    def controller_args(self):
        args = super().controller_args()
        out = ["--unschedulable-timeout=" + UNSCHEDULABLE_TIMEOUT
               if a.startswith("--unschedulable-timeout=") else a for a in args]
        assert out != args, "manifests changed: no --unschedulable-timeout"
        return out


@pytest.fixture(scope="module")
def stack(two_node_cluster, tmp_path_factory):
    c = two_node_cluster
    api_port = int(c.server.rsplit(":", 1)[1])
    s = TwoNodeStack(c, tmp_path_factory.mktemp("two-nodes"), c.node.gateway, api_port)
    s.install()
    for name, spec in CLASSES.items():
        c.apply(json.dumps({"apiVersion": "nix.io/v1alpha1", "kind": "NixBuilderClass",
                            "metadata": {"name": name, "namespace": NAMESPACE},
                            "spec": spec}))
    s.start()
    yield s
    s.stop()


# ---- the cluster itself ------------------------------------------------------------

def _pod(c, name, node_selector=None, tolerations=None):
    spec = {"containers": [{"name": "main", "image": c.node.image,
                            "imagePullPolicy": "Never",
                            "command": ["/tool", "serve", "8080"],
                            "readinessProbe": {"tcpSocket": {"port": 8080},
                                               "periodSeconds": 1}}],
            "terminationGracePeriodSeconds": 1}
    if node_selector:
        spec["nodeSelector"] = node_selector
    if tolerations:
        spec["tolerations"] = tolerations
    st, p = c.api("POST", "/api/v1/namespaces/default/pods",
                  {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                   "spec": spec})
    assert st == 201, p

    def ready():
        st, p = c.api("GET", "/api/v1/namespaces/default/pods/" + name)
        conds = p.get("status", {}).get("conditions", []) if st == 200 else []
        return p if any(x["type"] == "Ready" and x["status"] == "True" for x in conds) else None
    return wait_for(ready, 90, what="pod %s Ready" % name)


def test_second_node_is_a_pool_of_its_own(two_node_cluster):
    c = two_node_cluster
    n1, n2 = c.nodes
    assert n1.subnet != n2.subnet and n1.sock != n2.sock and n1.dir != n2.dir
    st, node = c.api("GET", "/api/v1/nodes/" + n2.name)
    assert st == 200, node
    assert node["metadata"]["labels"].get(POOL_LABEL) == POOL
    assert {"key": POOL_LABEL, "value": POOL, "effect": "NoSchedule"} in node["spec"]["taints"]
    addrs = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addrs["InternalIP"] == n2.gateway
    st, node1 = c.api("GET", "/api/v1/nodes/" + n1.name)
    assert POOL_LABEL not in node1["metadata"]["labels"]
    assert not [t for t in node1["spec"].get("taints") or [] if t["key"] == POOL_LABEL]

    try:
        p1 = _pod(c, "on-node-1")
        p2 = _pod(c, "on-node-2", {POOL_LABEL: POOL}, [BIG_TOLERATION])
        assert p1["spec"]["nodeName"] == n1.name
        assert p2["spec"]["nodeName"] == n2.name
        ip1, ip2 = p1["status"]["podIP"], p2["status"]["podIP"]
        assert ipaddress.ip_address(ip2) in ipaddress.ip_network(n2.subnet), ip2
        # Node 2's containerd runs it, not node 1's.
        ids = subprocess.run(["ctr", "--address", n2.sock, "-n", "k8s.io", "containers",
                              "ls", "-q"], stdout=subprocess.PIPE, text=True,
                             check=True).stdout.split()
        (cid,) = [s["containerID"] for s in p2["status"]["containerStatuses"]]
        assert cid.split("://", 1)[1] in ids
        # The API server reaches node 2's kubelet (exec, logs) ...
        host, port = c.server[len("https://"):].rsplit(":", 1)
        out = c.kubectl("exec", "on-node-2", "--", "/tool", "send", host, port,
                        r"GET /version HTTP/1.0\r\n\r\n").stdout
        # ... and node 2's pod reaches the API server on node 1's gateway
        # (plain HTTP to its TLS port: Go's TLS server answers).
        assert "Client sent an HTTP request to an HTTPS server" in out, out
        c.kubectl("logs", "on-node-2")
        # Pods of the two nodes reach each other, source addresses kept.
        out = c.kubectl("exec", "on-node-2", "--", "/tool", "send", ip1, "8080").stdout
        assert out == "hello from on-node-1 %s\n" % ip2, out
        out = c.kubectl("exec", "on-node-1", "--", "/tool", "send", ip2, "8080").stdout
        assert out == "hello from on-node-2 %s\n" % ip1, out
    finally:
        c.kubectl("delete", "pod", "on-node-1", "on-node-2", "--wait=false", check=False)


# ---- builder classes ---------------------------------------------------------------

def ran(pod):
    """The pod's container was started by its node's containerd."""
    statuses = pod["status"].get("containerStatuses") or []
    return bool(statuses) and all(s.get("containerID", "").startswith("containerd://")
                                  for s in statuses)


def test_big_builders_run_on_the_big_pool(stack, nix_client):
    c = stack.cluster
    n1, n2 = c.nodes
    builders = " ; ".join([
        stack.builders("ssh-ng"),
        stack.builders("ssh-ng", user="big", features="big-parallel",
                       mandatory="big-parallel"),
        stack.builders("ssh-ng", user="arm", system="aarch64-linux")])
    s = salt()
    with StackWatcher(stack, period=0.3) as w:
        out = nix_client.build("classes.nix", builders=builders, sshopts=stack.sshopts(),
                               args={"salt": s}, timeout=240)
        # The pods' last states (Running, with container IDs) are in.
        time.sleep(1)
    print("classes.nix on two nodes: %.1f s" % out.seconds, file=sys.stderr)
    assert nix_client.read(out.out).decode().split() == [
        "plain-" + s, "big-" + s, "arm-" + s]
    pods = w.by_class()
    assert {"", "big", "arm"} <= set(pods), {k: [p["metadata"]["name"] for p in v]
                                             for k, v in pods.items()}
    for p in pods["big"]:
        assert p["spec"]["nodeName"] == n2.name, (p["metadata"]["name"], p["spec"])
        assert p["status"].get("hostIP") == n2.gateway, p["status"]
        assert ipaddress.ip_address(p["status"]["podIP"]) in ipaddress.ip_network(n2.subnet)
        assert ran(p), p["status"]
        (ct,) = p["spec"]["containers"]
        assert ct["image"] == BUILDER_IMAGE
        assert ct["resources"]["requests"] == BIG_RESOURCES["requests"], ct["resources"]
        assert ct["resources"]["limits"]["memory"] == "1Gi", ct["resources"]
        assert BIG_TOLERATION in p["spec"]["tolerations"], p["spec"]["tolerations"]
        assert p["spec"]["nodeSelector"] == {POOL_LABEL: POOL}
    for p in pods["arm"]:
        assert p["spec"]["nodeName"] == n2.name, (p["metadata"]["name"], p["spec"])
        assert p["spec"]["nodeSelector"] == {ARCH_LABEL: ARCH}
        assert ran(p), p["status"]
    for p in pods[""]:
        assert p["spec"]["nodeName"] == n1.name, p["metadata"]["name"]
        assert ran(p), p["status"]
        assert not [t for t in p["spec"].get("tolerations") or []
                    if t.get("key") == POOL_LABEL]
    stack.wait_clean()


def test_class_no_node_matches_ends_with_unschedulable(stack):
    argv = (["ssh"] + stack.sshopts().split() +
            ["nowhere@%s" % stack.proxy_address, "nix-store", "--serve", "--write"])
    t0 = time.monotonic()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=90)
    seconds = time.monotonic() - t0
    assert r.returncode != 0, r
    lines = [line for line in r.stderr.splitlines() if "Unschedulable" in line]
    assert lines, r.stderr
    print("nowhere: ssh ended after %.1f s: %s" % (seconds, lines[-1]), file=sys.stderr)
    # The scheduler's reason, from both nodes: neither matches the
    # selector (and node 2's taint is not tolerated either).
    assert "0/2 nodes are available" in lines[-1], lines
    # Well before the shipped 2 m: the module's 5 s timeout ended it.
    assert seconds < 60, seconds
    stack.wait_clean()
