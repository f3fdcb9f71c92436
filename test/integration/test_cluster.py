"""The local test cluster itself: a real kube-apiserver with the CRD, RBAC,
TokenRequest and garbage collection -- what the nrbc tests build on."""

import json
import os
import re
import subprocess
import time

from conftest import REPO, wait_for

NBR = "/apis/nix.io/v1alpha1/namespaces/%s/nixbuildrequests"


def nbr(name, spec):
    return {"apiVersion": "nix.io/v1alpha1", "kind": "NixBuildRequest",
            "metadata": {"name": name}, "spec": spec}


def pinned_version():
    """The Kubernetes release test/cluster/build.sh builds."""
    text = open(os.path.join(REPO, "test", "cluster", "build.sh")).read()
    return re.search(r"^K8S_VERSION=(v[0-9.]+)$", text, re.M).group(1)


def test_versions(cluster):
    want = pinned_version()
    st, v = cluster.api("GET", "/version")
    assert st == 200 and v["gitVersion"] == want, v
    out = cluster.kubectl("version", "-o", "json").stdout
    assert json.loads(out)["clientVersion"]["gitVersion"] == want


def test_crd_established(cluster):
    st, crd = cluster.api(
        "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/nixbuildrequests.nix.io")
    assert st == 200
    conds = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conds.get("Established") == "True", conds


def test_nbr_validation(cluster, namespace):
    path = NBR % namespace
    st, body = cluster.api("POST", path, nbr("no-session", {"image": "x"}))
    assert st == 422, body
    assert "sessionId" in json.dumps(body)

    st, body = cluster.api("POST", path, nbr("bad-timeout",
                                             {"sessionId": "s1", "timeoutSeconds": "10"}))
    assert st == 422, body
    assert "timeoutSeconds" in json.dumps(body)

    st, body = cluster.api("POST", path, nbr("good", {
        "sessionId": "s2", "timeoutSeconds": 600, "image": "nixos/nix:2.8.0",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}))
    assert st == 201, body
    assert body["spec"]["sessionId"] == "s2"

    # Status is a subresource: writes to the main resource ignore it.
    body["status"] = {"phase": "Running"}
    st, upd = cluster.api("PUT", path + "/good", body)
    assert st == 200, upd
    assert not upd.get("status"), upd
    upd["status"] = {"phase": "Pending", "podName": "builder-x"}
    st, upd = cluster.api("PUT", path + "/good/status", upd)
    assert st == 200 and upd["status"]["phase"] == "Pending", upd

    out = cluster.kubectl("get", "nbr", "-n", namespace).stdout
    header = out.splitlines()[0].split()
    for col in ("NAME", "PHASE", "POD", "AGE"):
        assert col in header, out
    row = [line.split() for line in out.splitlines()[1:] if line.startswith("good")]
    assert row and row[0][1:3] == ["Pending", "builder-x"], out


def test_garbage_collection_of_owned_pod(cluster, namespace):
    st, owner = cluster.api("POST", NBR % namespace, nbr("owner", {"sessionId": "gc"}))
    assert st == 201, owner
    # No builder label: the test kubelet leaves this pod alone (never bound).
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "owned", "ownerReferences": [{
               "apiVersion": "nix.io/v1alpha1", "kind": "NixBuildRequest",
               "name": "owner", "uid": owner["metadata"]["uid"],
               "controller": True, "blockOwnerDeletion": True}]},
           "spec": {"containers": [{"name": "c", "image": "none"}]}}
    st, body = cluster.api("POST", "/api/v1/namespaces/%s/pods" % namespace, pod)
    assert st == 201, body

    st, _ = cluster.api("DELETE", NBR % namespace + "/owner")
    assert st == 200
    t0 = time.monotonic()
    wait_for(lambda: cluster.api("GET", "/api/v1/namespaces/%s/pods/owned" % namespace)[0]
             == 404, 30, what="garbage collection of the owned pod")
    print("pod garbage-collected %.2f s after its owner was deleted" % (time.monotonic() - t0))


def test_token_request_and_rbac(cluster, namespace, tmp_path):
    st, _ = cluster.api("POST", "/api/v1/namespaces/%s/serviceaccounts" % namespace,
                        {"apiVersion": "v1", "kind": "ServiceAccount",
                         "metadata": {"name": "robot"}})
    assert st == 201
    kc = cluster.sa_kubeconfig("robot", namespace, str(tmp_path / "robot.kubeconfig"))
    kubectl = os.path.join(cluster.bindir, "kubectl")

    def can_i(verb, res):
        p = subprocess.run([kubectl, "--kubeconfig", kc, "auth", "can-i", verb, res,
                            "-n", namespace], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
        return p.stdout.strip()

    p = subprocess.run([kubectl, "--kubeconfig", kc, "get", "pods"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.returncode != 0 and "Forbidden" in p.stderr, p.stderr
    assert can_i("list", "pods") == "no"

    cluster.apply(json.dumps({
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": "pod-reader", "namespace": namespace},
             "rules": [{"apiGroups": [""], "resources": ["pods"],
                        "verbs": ["get", "list", "watch"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": "robot-reads-pods", "namespace": namespace},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                         "name": "pod-reader"},
             "subjects": [{"kind": "ServiceAccount", "name": "robot",
                           "namespace": namespace}]}]}))
    wait_for(lambda: can_i("list", "pods") == "yes", 10, what="RBAC to allow listing pods")
    assert can_i("create", "pods") == "no"
    # The context's namespace is the service account's.
    p = subprocess.run([kubectl, "--kubeconfig", kc, "get", "pods"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.returncode == 0, p.stderr

    # TokenRequest tokens for a missing service account are refused.
    st, _ = cluster.api("POST", "/api/v1/namespaces/%s/serviceaccounts/nobody/token" % namespace,
                        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                         "spec": {"expirationSeconds": 600}})
    assert st == 404


def test_namespace_deletion_completes(cluster):
    st, _ = cluster.api("POST", "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}})
    assert st == 201
    cluster.apply(json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": "c", "namespace": "doomed"},
                              "data": {"k": "v"}}))
    st, _ = cluster.api("DELETE", "/api/v1/namespaces/doomed")
    assert st == 200
    wait_for(lambda: cluster.api("GET", "/api/v1/namespaces/doomed")[0] == 404, 60,
             what="namespace controller to finish deleting the namespace")
