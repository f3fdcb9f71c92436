"""The test cluster's optional real node (test/cluster/node.py): containerd,
runc, a kubelet and kube-scheduler from the pinned Kubernetes module, pods
networked by test/cluster/cni/nrbc-loopback on 127.203.0.0/24.

One module-scoped cluster; the last test stops it and checks that nothing is
left behind. Needs root (containerd, network namespaces, mounts).
"""

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, cluster_mod, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a real node needs root")

NS = "default"


@pytest.fixture(scope="module")
def rc(tmp_path_factory):
    bindir = os.environ.get("NRBC_CLUSTER_BIN") or cluster_mod.build_binaries()
    c = cluster_mod.Cluster(bindir, real_node=True)
    try:
        c.start(str(tmp_path_factory.mktemp("realnode")))
        print("real node: cluster with node Ready in %.1f s, node alone %.1f s"
              % (c.start_seconds, c.node.ready_seconds), file=sys.stderr)
        yield c
    finally:
        c.stop()


def pod(name, command, labels=None, probe=True):
    spec = {"containers": [{
        "name": "main", "image": None, "imagePullPolicy": "Never", "command": command}],
        "terminationGracePeriodSeconds": 1}
    if probe:
        spec["containers"][0]["readinessProbe"] = {
            "tcpSocket": {"port": 8080}, "periodSeconds": 1}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def run_pod(rc, name, command=("/tool", "serve", "8080"), probe=True):
    """Creates the pod and waits until it is Ready (the kubelet's TCP probe
    reached it); returns (pod, seconds from create to Ready)."""
    body = pod(name, list(command), probe=probe)
    body["spec"]["containers"][0]["image"] = rc.node.image
    t0 = time.monotonic()
    st, p = rc.api("POST", "/api/v1/namespaces/%s/pods" % NS, body)
    assert st == 201, p

    def ready():
        st, p = rc.api("GET", "/api/v1/namespaces/%s/pods/%s" % (NS, name))
        conds = p.get("status", {}).get("conditions", []) if st == 200 else []
        ok = any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
        return p if ok else None
    p = wait_for(ready, timeout=60, what="pod %s Ready" % name)
    return p, time.monotonic() - t0


def tcp_get(host, port, timeout=5):
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        out = b""
        while True:
            b = s.recv(4096)
            if not b:
                return out.decode()
            out += b


def ctr(rc, *args):
    p = subprocess.run(["ctr", "--address", rc.node.sock, "-n", "k8s.io", *args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout


def pod_containers(rc, uid):
    """{container id: kind ("sandbox" or "container")} of pod uid in containerd."""
    out = {}
    for cid in ctr(rc, "containers", "ls", "-q").split():
        try:
            labels = json.loads(ctr(rc, "containers", "info", cid))["Labels"]
        except AssertionError:
            continue                 # removed since the listing (e.g. by the kubelet)
        if labels.get("io.kubernetes.pod.uid") == uid:
            out[cid] = labels.get("io.cri-containerd.kind")
    return out


def pod_tasks(rc, uid):
    """{container id: pid} of the running tasks of pod uid (sandbox included)."""
    tasks = {}
    for line in ctr(rc, "tasks", "ls").splitlines()[1:]:
        tid, pid, status = line.split()
        if status == "RUNNING":
            tasks[tid] = int(pid)
    return {cid: tasks[cid] for cid in pod_containers(rc, uid) if cid in tasks}


def link_exists(name):
    return subprocess.run(["ip", "link", "show", name], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


# ---- tests -------------------------------------------------------------------------

def test_node_ready_on_loopback(rc):
    st, node = rc.api("GET", "/api/v1/nodes/" + rc.node.name)
    assert st == 200
    conds = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conds["Ready"] == "True", conds
    addrs = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addrs["InternalIP"] == rc.node.gateway
    assert ipaddress.ip_address(addrs["InternalIP"]).is_loopback
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == rc.node.kubelet_port
    # no not-ready taint left: pods can be scheduled
    assert not [t for t in node["spec"].get("taints", []) if "not-ready" in t["key"]]


def test_pod_gets_loopback_ip_reachable_from_host(rc):
    p, seconds = run_pod(rc, "web")
    print("real node: pod web Ready %.1f s after create" % seconds, file=sys.stderr)
    ip = p["status"]["podIP"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(rc.node.subnet)
    assert ip != rc.node.gateway
    assert p["spec"]["nodeName"] == rc.node.name
    # The host reaches the pod; the pod sees the gateway as the peer.
    assert tcp_get(ip, 8080) == "hello from web %s\n" % rc.node.gateway


def test_pod_to_pod(rc):
    p2, _ = run_pod(rc, "web2")
    _, p1 = rc.api("GET", "/api/v1/namespaces/%s/pods/web" % NS)
    ip1, ip2 = p1["status"]["podIP"], p2["status"]["podIP"]
    assert ip1 != ip2
    out = rc.kubectl("exec", "web", "--", "/tool", "send", ip2, "8080").stdout
    # Routed through the host with the source address kept.
    assert out == "hello from web2 %s\n" % ip1


def test_pod_reaches_api_server(rc):
    host, port = rc.server[len("https://"):].rsplit(":", 1)
    assert host == rc.node.gateway
    out = rc.kubectl("exec", "web", "--", "/tool", "send", host, port,
                     r"GET /version HTTP/1.0\r\n\r\n").stdout
    # Plain HTTP to the TLS port: this answer comes from Go's TLS server.
    assert out.startswith("HTTP/1.0 400 Bad Request")
    assert "Client sent an HTTP request to an HTTPS server" in out
    # and host-side clients still work on that address
    assert rc.kubectl("version", "-o", "json").returncode == 0


def test_network_policy_is_enforced(rc):
    """kube-network-policies judges the node's pods' connections: a policy
    that admits nothing to the namespace's pods stops web -> web2 (reached
    in test_pod_to_pod), and deleting it opens the way again."""
    _, p2 = rc.api("GET", "/api/v1/namespaces/%s/pods/web2" % NS)
    ip2 = p2["status"]["podIP"]

    def reached(timeout):
        try:
            return rc.kubectl("exec", "web", "--", "/tool", "send", ip2, "8080",
                              check=False, timeout=timeout).stdout.startswith("hello from web2")
        except subprocess.TimeoutExpired:
            return False   # the SYN got no answer: dropped
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "deny-ingress", "namespace": NS},
              "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    st, body = rc.api("POST", "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies" % NS,
                      policy)
    assert st == 201, body
    try:
        wait_for(lambda: not reached(5), 30, what="web2 closed by the policy")
        # and for good: a second try is dropped too
        assert not reached(5)
    finally:
        rc.api("DELETE", "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies/deny-ingress"
               % NS)
    wait_for(lambda: reached(10), 30, what="web2 reached again without the policy")


def test_logs_and_exec(rc):
    _, p = rc.api("GET", "/api/v1/namespaces/%s/pods/web" % NS)
    tcp_get(p["status"]["podIP"], 8080)          # one more "connection from" line
    logs = rc.kubectl("logs", "web").stdout
    assert logs.startswith("serving on port 8080\n")
    assert "connection from %s\n" % rc.node.gateway in logs
    assert rc.kubectl("exec", "web", "--", "/tool", "echo", "hi", "there").stdout == "hi there\n"
    bad = rc.kubectl("exec", "web", "--", "/tool", "nonsense", check=False)
    assert bad.returncode == 2, (bad.stdout, bad.stderr)


def test_deployment_runs(rc):
    rc.apply("""apiVersion: apps/v1
kind: Deployment
metadata: {name: dep, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: dep}}
  template:
    metadata: {labels: {app: dep}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: main, image: %s, imagePullPolicy: Never, command: [/tool, serve, "8080"]}
""" % rc.node.image)

    def running():
        st, l = rc.api("GET", "/api/v1/namespaces/%s/pods?labelSelector=app%%3Ddep" % NS)
        ips = [p["status"].get("podIP") for p in l["items"]
               if p["status"].get("phase") == "Running"]
        return ips if len(ips) == 2 else None
    for ip in wait_for(running, timeout=60, what="2 deployment pods Running"):
        assert tcp_get(ip, 8080).startswith("hello from dep-")
    rc.kubectl("delete", "deployment", "dep", "--wait=true")


def test_delete_pod_removes_container_veth_and_ip(rc):
    _, p = rc.api("GET", "/api/v1/namespaces/%s/pods/web2" % NS)
    ip, uid = p["status"]["podIP"], p["metadata"]["uid"]
    state = os.path.join(rc.node.dir, "cni", "state", "ips", ip)
    with open(state) as f:
        veth = json.load(f)["veth"]
    assert link_exists(veth)
    tasks = pod_tasks(rc, uid)
    assert len(tasks) == 2, tasks            # sandbox + container
    assert sorted(pod_containers(rc, uid).values()) == ["container", "sandbox"]
    for pid in tasks.values():
        os.kill(pid, 0)

    rc.kubectl("delete", "pod", "web2", "--wait=true")

    def gone():
        return not pod_tasks(rc, uid) and not os.path.exists(state) and not link_exists(veth)
    wait_for(gone, timeout=30, what="web2's tasks, IP and veth gone")

    # The records go in the kubelet's container garbage collection, which
    # runs once a minute (the app container's at once, most of the time).
    def records_gone():
        return list(pod_containers(rc, uid).values()) in ([], ["sandbox"])
    wait_for(records_gone, timeout=90, what="web2's app container record gone")
    for pid in tasks.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    routes = subprocess.run(["ip", "route", "show", "table", "local"], check=True,
                            stdout=subprocess.PIPE, text=True).stdout
    assert ip + " " not in routes
    with pytest.raises(OSError):
        tcp_get(ip, 8080, timeout=2)


def test_stop_leaves_nothing(rc):
    """Runs last: stops the cluster with a pod still running."""
    node = rc.node
    _, p = rc.api("GET", "/api/v1/namespaces/%s/pods/web" % NS)
    ip = p["status"]["podIP"]
    veths = []
    for f in os.listdir(os.path.join(node.dir, "cni", "state", "ips")):
        with open(os.path.join(node.dir, "cni", "state", "ips", f)) as fh:
            veths.append(json.load(fh)["veth"])
    assert veths and all(link_exists(v) for v in veths)
    t0 = time.monotonic()
    rc.stop()
    print("real node: stop took %.1f s" % (time.monotonic() - t0), file=sys.stderr)
    assert not [v for v in veths if link_exists(v)]
    with open("/proc/self/mountinfo") as f:
        assert [l for l in f if rc.workdir in l] == []
    left = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open("/proc/%s/cmdline" % e, "rb") as f:
                    if rc.workdir.encode() in f.read():
                        left.append(e)
                if os.readlink("/proc/%s/root" % e).startswith(rc.workdir):
                    left.append(e)
            except OSError:
                pass
    assert left == []
    with pytest.raises(OSError):
        tcp_get(ip, 8080, timeout=2)
    # The enforcer's steering went with it.
    rules = subprocess.run(["iptables-legacy", "-w", "-S"], stdout=subprocess.PIPE,
                           text=True).stdout
    assert node.netpol_chain not in rules, rules
