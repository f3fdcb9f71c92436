"""nrbc as it ships, on a real node: the images built from the repository's
Containerfiles, `kubectl apply -k` of an overlay whose base is manifests/,
and the controller (two replicas, leader election) and the proxy running as
their real Deployments in containers that a real kubelet starts through
containerd. Builder pods are real containers too.

What the overlay changes, and why (everything else is as shipped):
  - images: the local builds (localhost/nrbc:dev, localhost/nrbc-builder:dev);
    no registry is reachable here;
  - KUBERNETES_SERVICE_HOST/PORT: there is no kube-proxy, so the
    `kubernetes` Service's ClusterIP leads nowhere; the pods are given the
    address where the API server listens for them instead;
  - --default-cpu-request: the shipped 1 CPU per builder would fit two
    builders on this 2-core node;
  - --builder-idle-timeout: seconds, so a test sees builders go;
  - --default-memory-limit: 1Gi rather than 8Gi, so a build that takes
    memory without end meets the limit in seconds, not after eating the
    machine's.
The builders' seccomp profile goes in as shipped (manifests/seccomp, the
README's first install step), with the local image and a hostPath into
this node's kubelet directory (its --root-dir is private).
The LoadBalancer Service gets what a cloud's load balancer would give it: an
external address (here the proxy pod's own, reachable from this machine)
and the port the proxy listens on (no load balancer maps 22 to it).
The builders' nix.conf gets no substituters, as in every test (no internet),
or, given a cache, the test binary cache (binary_cache.BinaryCache on the
node's address) as its only substituter.

THE TEST STACK'S ADDITION TO THE SHIPPED EGRESS POLICY: with a cache, the
overlay also carries the NetworkPolicy `nrbc-builder-test-cache` (below,
_test_cache_policy), which lets builders reach that one cache, address and
port (plain HTTP on a free port). The shipped `nrbc-builder` policy allows
DNS and HTTPS outside the private, loopback and link-local ranges only; the
cache is on the node's loopback address, in its except list. The addition
is the pattern docs/operations.md ("Builder egress") gives an admin for an
internal cache: a policy of one's own next to the shipped one, never a
hole in it.
"""

import json
import os

from binary_cache import builders_nix_conf
from conftest import REPO, wait_for
from stack import NAMESPACE, Stack

IMAGE = "localhost/nrbc:dev"
BUILDER_IMAGE = "localhost/nrbc-builder:dev"
PROXY_PORT = 2222           # the proxy Deployment's --port


class RealStack(Stack):
    # Appended to the proxy Deployment's shipped arguments (a benchmark's
    # --allow-any-command); a class attribute, read while the overlay is made.
    proxy_extra_args = ()

    def __init__(self, cluster, workdir, api_host, api_port, builder_idle_timeout="10s",
                 cpu_request="100m", cache=None):
        super().__init__(cluster, None, None, workdir, builder_idle_timeout=builder_idle_timeout,
                         cache=cache)
        self.api_host = api_host
        self.api_port = api_port
        self.cpu_request = cpu_request
        self.proxy_port = PROXY_PORT
        self.kustomize_dir = self._write_overlay()

    def _shipped(self, kind, name):
        if not hasattr(self, "_shipped_items"):
            r = self.cluster.kubectl("apply", "-k", os.path.join(REPO, "manifests"),
                                     "--dry-run=client", "-o", "json")
            self._shipped_items = json.loads(r.stdout)["items"]
        for obj in self._shipped_items:
            if obj["kind"] == kind and obj["metadata"]["name"] == name:
                return obj
        raise AssertionError("no %s %s in manifests" % (kind, name))

    def _shipped_args(self, deployment):
        (c,) = self._shipped("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
        return list(c["args"])

    def controller_args(self):
        # No cluster DNS here for the shipped "nrbc-proxy:22": scale-out
        # builders substituting from each other is tested on the test
        # kubelet (test_siblings.py).
        changed = {"--builder-image": BUILDER_IMAGE,
                   "--default-cpu-request": self.cpu_request,
                   "--builder-idle-timeout": self.builder_idle_timeout,
                   "--default-memory-limit": "1Gi",
                   "--builder-sibling-proxy": ""}
        out, seen = [], set()
        for a in self._shipped_args("nrbc-controller"):
            name = a.split("=", 1)[0]
            if name in changed:
                a = "%s=%s" % (name, changed[name])
                seen.add(name)
            out.append(a)
        assert seen == set(changed), "manifests changed: %s not in the args" % (
            set(changed) - seen)
        return out

    def _write_overlay(self):
        d = os.path.join(self.dir, "overlay")
        os.makedirs(d, exist_ok=True)
        env = [{"name": "KUBERNETES_SERVICE_HOST", "value": self.api_host},
               {"name": "KUBERNETES_SERVICE_PORT", "value": str(self.api_port)}]
        patches = []
        for name, container in (("nrbc-controller", "controller"), ("nrbc-proxy", "proxy")):
            spec = {"name": container, "env": env}
            if name == "nrbc-controller":
                spec["args"] = self.controller_args()
            elif self.proxy_extra_args:
                spec["args"] = self._shipped_args(name) + list(self.proxy_extra_args)
            patches.append({"target": {"kind": "Deployment", "name": name},
                            "patch": json.dumps({
                                "apiVersion": "apps/v1", "kind": "Deployment",
                                "metadata": {"name": name},
                                "spec": {"template": {"spec": {"containers": [spec]}}}})})
        cm = self._shipped("ConfigMap", "nix-config")
        patches.append({"target": {"kind": "ConfigMap", "name": "nix-config"},
                        "patch": json.dumps({
                            "apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "nix-config"},
                            "data": {"nix.conf": builders_nix_conf(cm["data"]["nix.conf"],
                                                                   self.cache)}})})
        resources = [os.path.relpath(os.path.join(REPO, "manifests"), d)]
        if self.cache is not None:
            with open(os.path.join(d, "test-cache-networkpolicy.json"), "w") as f:
                f.write(json.dumps(self._test_cache_policy(), indent=2) + "\n")
            resources.append("test-cache-networkpolicy.json")
        return _write_kustomization(d, resources, patches)

    def _write_seccomp_overlay(self):
        """manifests/seccomp with the local image, writing into this node's
        kubelet (its --root-dir is private, not /var/lib/kubelet)."""
        d = os.path.join(self.dir, "overlay-seccomp")
        os.makedirs(d, exist_ok=True)
        hostpath = os.path.join(self.cluster.node.dir, "kubelet", "seccomp")
        patch = {"apiVersion": "apps/v1", "kind": "DaemonSet",
                 "metadata": {"name": "nrbc-seccomp-profiles"},
                 "spec": {"template": {"spec": {"volumes": [
                     {"name": "seccomp", "hostPath": {"path": hostpath,
                                                      "type": "DirectoryOrCreate"}}]}}}}
        return _write_kustomization(
            d, [os.path.relpath(os.path.join(REPO, "manifests", "seccomp"), d)],
            [{"target": {"kind": "DaemonSet", "name": "nrbc-seccomp-profiles"},
              "patch": json.dumps(patch)}])

    def install_seccomp_profiles(self, timeout=120):
        """`kubectl apply -k manifests/seccomp`, as the README has the
        operator do, and wait until every node has the profile."""
        self.cluster.kubectl("apply", "-k", self._write_seccomp_overlay())
        self.cluster.kubectl("-n", "kube-system", "rollout", "status",
                             "daemonset/nrbc-seccomp-profiles", "--timeout=%ds" % timeout,
                             timeout=timeout + 10)

    TEST_CACHE_POLICY = "nrbc-builder-test-cache"

    def _test_cache_policy(self):
        """The test stack's addition (see the module comment): builders may
        also reach the test binary cache, its address and port only."""
        return {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": self.TEST_CACHE_POLICY, "namespace": NAMESPACE,
                         "labels": {"app.kubernetes.io/part-of": "nrbc"}},
            "spec": {
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "nrbc-builder"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": self.cache.address + "/32"}}],
                            "ports": [{"protocol": "TCP", "port": self.cache.port}]}]}}

    def install(self):
        """The operator's order: the builders' seccomp profile on the nodes,
        the namespace and the Secret, so the Deployments' first pods find
        their keys, then `kubectl apply -k`."""
        self.install_seccomp_profiles()
        self.make_keys()
        self.cluster.apply(json.dumps({"apiVersion": "v1", "kind": "Namespace",
                                       "metadata": {"name": NAMESPACE}}))
        self.create_secrets()
        self.apply_manifests()
        return self

    # -- running: the Deployments, not local processes
    def start(self, timeout=240):
        for d in ("nrbc-controller", "nrbc-proxy"):
            self.cluster.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/" + d,
                                 "--timeout=%ds" % timeout, timeout=timeout + 10)
        self.proxy_address = self.pods("nrbc-proxy")[0]["status"]["podIP"]
        self.publish_service()
        return self

    def stop(self):
        self.cluster.kubectl("-n", NAMESPACE, "delete", "deployment", "nrbc-proxy",
                             "nrbc-controller", "--wait=true", "--timeout=120s",
                             check=False, timeout=130)
        self.delete_builders()

    def pods(self, app):
        st, body = self.cluster.api(
            "GET", "/api/v1/namespaces/%s/pods?labelSelector=app.kubernetes.io%%2Fname%%3D%s"
            % (NAMESPACE, app))
        assert st == 200, body
        return [p for p in body["items"] if not p["metadata"].get("deletionTimestamp")]

    def exec(self, pod, *argv, check=True):
        return self.cluster.kubectl("-n", NAMESPACE, "exec", pod, "--", *argv, check=check)

    def lease_holder(self):
        st, body = self.cluster.api(
            "GET", "/apis/coordination.k8s.io/v1/namespaces/%s/leases/nrbc-controller"
            % NAMESPACE)
        return body["spec"].get("holderIdentity") if st == 200 else None

    def wait_leader(self, timeout=60, not_=None):
        names = {}

        def leader():
            holder = self.lease_holder()
            if not holder or holder == not_:
                return False
            for p in self.pods("nrbc-controller"):
                if holder.startswith(p["metadata"]["name"]):
                    names["pod"] = p["metadata"]["name"]
                    names["holder"] = holder
                    return True
            return False
        wait_for(leader, timeout, what="a controller pod holding the lease")
        return names["pod"], names["holder"]


def _write_kustomization(d, resources, patches):
    """d/kustomization.yaml: resources and patches, with the local nrbc
    image in place of the shipped one (no registry is reachable). Returns d."""
    name, tag = IMAGE.rsplit(":", 1)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
        "images": [{"name": "ghcr.io/nrbc/nrbc", "newName": name, "newTag": tag}],
        "patches": patches,
    }
    with open(os.path.join(d, "kustomization.yaml"), "w") as f:
        # JSON is YAML: no YAML library needed.
        f.write(json.dumps(kustomization, indent=2) + "\n")
    return d


def containerd_ids(pod):
    """The runtime's container IDs of a pod (what only a real kubelet fills)."""
    return [c.get("containerID", "") for c in pod["status"].get("containerStatuses") or []]
