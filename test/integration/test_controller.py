"""`nrbc controller` against the real kube-apiserver, the test kubelet and
real sshd, running with a token of its own ServiceAccount bound to the
shipped Role (manifests/controller/role.yaml)."""

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import wait_for
from controller_fixtures import (CONFIGMAP, IMAGE, REMOTE_PORT, SECRET, builder_pods,
                                 controllers, create_nbr, events_for, get_nbr, phase_is,
                                 set_nbr_status, setup, wait_event, wait_nbr)


@pytest.fixture
def controller(controllers):
    return controllers()


def cond(obj, ctype):
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return c
    return None


def ssh(keys, ip, *cmd, timeout=30):
    return subprocess.run(keys.ssh_argv(ip, REMOTE_PORT) + list(cmd), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


# ---- the happy path ---------------------------------------------------------------

def test_request_gets_one_running_pod(setup, controller):
    cluster, ns, keys = setup["cluster"], setup["ns"], setup["keys"]
    controller.start("--default-cpu-request", "100m", "--default-memory-limit", "2Gi")
    # The proxy puts an ownerReference (its pod) on requests: status
    # writes must keep it, and labels and annotations, intact.
    st, owner = cluster.api("POST", "/api/v1/namespaces/%s/configmaps" % ns,
                            {"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": "owner"}})
    assert st == 201, owner
    owner_uid = owner["metadata"]["uid"]
    created = create_nbr(cluster, ns, "build-1", timeoutSeconds=600,
                         nodeSelector={"kubernetes.io/arch": "amd64"},
                         resources={"requests": {"memory": "64Mi"}},
                         metadata={"labels": {"team": "nix"},
                                   "annotations": {"note": "kept"},
                                   "ownerReferences": [{
                                       "apiVersion": "v1", "kind": "ConfigMap",
                                       "name": "owner", "uid": owner_uid}]})
    obj = wait_nbr(cluster, ns, "build-1", phase_is("Running", "Failed"), 30)
    st = obj["status"]
    assert st["phase"] == "Running", st
    assert st["podName"] == "nix-builder-build-1"
    assert st["reason"] == "BuilderReady"
    assert st["startTime"]
    assert st["observedGeneration"] == created["metadata"]["generation"]
    assert cond(obj, "Ready")["status"] == "True"
    assert cond(obj, "BuilderScheduled")["status"] == "True"
    assert obj["metadata"]["labels"] == {"team": "nix"}
    assert obj["metadata"]["annotations"] == {"note": "kept"}
    assert obj["metadata"]["ownerReferences"][0]["uid"] == owner_uid
    assert obj["spec"] == created["spec"]

    pods = builder_pods(cluster, ns)
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    pod = pods[0]
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"] == "nix-builder-build-1"
    assert st["podIP"] == pod["status"]["podIP"]
    assert meta["labels"] == {"app.kubernetes.io/name": "nrbc-builder",
                              "app.kubernetes.io/managed-by": "nrbc-controller",
                              "nix.io/build-request": "build-1"}
    (ref,) = meta["ownerReferences"]
    assert ref == {"apiVersion": "nix.io/v1alpha1", "kind": "NixBuildRequest",
                   "name": "build-1", "uid": created["metadata"]["uid"],
                   "controller": True, "blockOwnerDeletion": True}
    (c,) = spec["containers"]
    assert c["image"] == IMAGE
    assert c["ports"][0]["containerPort"] == REMOTE_PORT
    assert {"name": "NRBC_BUILDER_PORT", "value": str(REMOTE_PORT)} in c["env"]
    assert c["readinessProbe"]["tcpSocket"]["port"] == REMOTE_PORT
    # The spec's memory request wins; cpu comes from the flag default; the
    # memory limit default stays out because the spec names memory.
    assert c["resources"] == {"requests": {"memory": "64Mi", "cpu": "100m"}}
    assert spec["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
    assert spec["activeDeadlineSeconds"] == 600
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    vols = {v["name"]: v for v in spec["volumes"]}
    # The shared Secret gives the public key only; the host key is the pod's
    # own (the shared one is the proxy's), in a Secret the request controls.
    srcs = [s["secret"] for s in vols["ssh-keys"]["projected"]["sources"]]
    assert [(s["name"], [i["key"] for i in s["items"]]) for s in srcs] == [
        (SECRET, ["public"]), ("nix-builder-build-1-host-key", ["host-key"])], srcs
    st_code, hk = cluster.api("GET", "/api/v1/namespaces/%s/secrets/nix-builder-build-1-host-key"
                              % ns)
    assert st_code == 200, hk
    assert [(r["kind"], r["uid"]) for r in hk["metadata"]["ownerReferences"]] == [
        ("NixBuildRequest", created["metadata"]["uid"])]
    assert st["builderHostKey"].startswith("ecdsa-sha2-nistp256 ")
    assert st["builderHostKey"] == meta["annotations"]["nix.io/host-key"]
    assert vols["nix-config"]["configMap"]["name"] == CONFIGMAP
    # The shared private key never reaches the builder's files.
    root = os.path.join(setup["kubelet"].pod_dir(meta["uid"]), "root")
    assert not os.path.exists(os.path.join(root, "etc/nrbc/ssh/private"))
    assert open(os.path.join(root, "etc/nrbc/ssh/public")).read() == keys.public_text

    # The builder is usable with the shared key, and presents the host key
    # in the request's status, not the proxy's.
    r = subprocess.run(keys.ssh_argv(st["podIP"], REMOTE_PORT, host_key=st["builderHostKey"])
                       + ["echo", "builder-ok"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "builder-ok"
    r = ssh(keys, st["podIP"], "echo", "builder-ok")
    assert r.returncode == 255 and "Host key verification failed" in r.stderr, r.stderr

    reasons = [e["reason"] for e in events_for(cluster, ns, "build-1")]
    assert "PodCreated" in reasons and "BuilderReady" in reasons, reasons
    m = controller.metrics()
    assert m["nrbc_controller_pods_created_total"] == 1
    assert m['nrbc_controller_phase_transitions_total{phase="Running"}'] == 1
    assert m["nrbc_controller_leader"] == 1
    # The caches hold the request and its pod as text: a few hundred bytes
    # each, not the whole objects (a pod as the API sends it is ~5 KB).
    assert m["nrbc_controller_requests_cached"] >= 1 and m["nrbc_controller_pods_cached"] >= 1
    assert 200 <= m["nrbc_controller_cache_bytes"] <= 2048 * (
        m["nrbc_controller_requests_cached"] + m["nrbc_controller_pods_cached"]), m


def test_health_endpoints_and_idempotence(setup, controller):
    """/healthz and /readyz answer; once Running, nothing more is written
    (the reconcile of an unchanged request is a no-op)."""
    cluster, ns = setup["cluster"], setup["ns"]
    controller.start()
    assert controller.get("/healthz")[0] == 200
    assert controller.get("/readyz")[0] == 200
    create_nbr(cluster, ns, "steady")
    wait_nbr(cluster, ns, "steady", phase_is("Running"), 30)
    time.sleep(1.0)
    before = controller.metrics()
    rv = get_nbr(cluster, ns, "steady")["metadata"]["resourceVersion"]
    time.sleep(3.0)
    after = controller.metrics()
    assert get_nbr(cluster, ns, "steady")["metadata"]["resourceVersion"] == rv
    assert after["nrbc_controller_status_writes_total"] == \
        before["nrbc_controller_status_writes_total"]
    assert after["nrbc_controller_pods_created_total"] == 1
    assert len(builder_pods(cluster, ns)) == 1


# ---- failures -----------------------------------------------------------------------

def assert_failed(cluster, ns, name, reason, timeout=30, pod_gone=True):
    obj = wait_nbr(cluster, ns, name, phase_is("Failed", "Completed"), timeout)
    st = obj["status"]
    assert st["phase"] == "Failed", st
    assert st["reason"] == reason, st
    assert st["message"], st
    assert st["completionTime"], st
    assert cond(obj, "Ready")["status"] == "False"
    assert cond(obj, "Ready")["reason"] == reason
    ev = wait_event(cluster, ns, name, reason, "Warning")
    assert ev["involvedObject"]["kind"] == "NixBuildRequest"
    assert ev["involvedObject"]["uid"] == obj["metadata"]["uid"]
    if pod_gone:
        # Failed is terminal: the controller deletes the builder pod.
        wait_for(lambda: not builder_pods(cluster, ns, name), 20,
                 what="pod of failed %s deleted" % name)
    return obj


def test_unschedulable_fails_after_timeout(setup, controller):
    cluster, ns = setup["cluster"], setup["ns"]
    controller.start("--unschedulable-timeout", "4s")
    create_nbr(cluster, ns, "nowhere", nodeSelector={"pool": "does-not-exist"})
    # Before the timeout: still Creating, and the user is told why.
    obj = wait_nbr(cluster, ns, "nowhere",
                   lambda o: (o.get("status") or {}).get("reason") == "Unschedulable", 20)
    assert obj["status"]["phase"] == "Creating"
    assert obj["status"]["message"].startswith("Unschedulable: "), obj["status"]
    assert cond(obj, "BuilderScheduled")["status"] == "False"
    t0 = time.monotonic()
    obj = assert_failed(cluster, ns, "nowhere", "Unschedulable")
    assert "selector" in obj["status"]["message"]
    assert time.monotonic() - t0 < 10


def test_image_pull_failure(setup, controller):
    cluster, ns = setup["cluster"], setup["ns"]
    controller.start()
    create_nbr(cluster, ns, "badimage", image="registry.invalid/does-not-exist:1")
    obj = assert_failed(cluster, ns, "badimage", "ImagePullFailed")
    assert "ErrImagePull" in obj["status"]["message"] or \
        "ImagePullBackOff" in obj["status"]["message"]


def test_missing_secret_is_config_error(setup, controller):
    cluster, ns = setup["cluster"], setup["ns"]
    st, body = cluster.api("DELETE", "/api/v1/namespaces/%s/secrets/%s" % (ns, SECRET))
    assert st == 200, body
    controller.start()
    create_nbr(cluster, ns, "nosecret")
    obj = assert_failed(cluster, ns, "nosecret", "ConfigError")
    assert "CreateContainerConfigError" in obj["status"]["message"]


def wait_running(cluster, ns, name, timeout=30):
    obj = wait_nbr(cluster, ns, name, phase_is("Running", "Failed"), timeout)
    assert obj["status"]["phase"] == "Running", obj["status"]
    return obj


def test_pod_failure(setup, controller):
    cluster, ns, kubelet = setup["cluster"], setup["ns"], setup["kubelet"]
    controller.start()
    create_nbr(cluster, ns, "crash")
    wait_running(cluster, ns, "crash")
    (pod,) = builder_pods(cluster, ns, "crash")
    pid = kubelet.pod_pid(pod["metadata"]["uid"])
    assert pid is not None
    os.kill(pid[0], signal.SIGKILL)
    obj = assert_failed(cluster, ns, "crash", "PodFailed")
    assert "137" in obj["status"]["message"] or "failed" in obj["status"]["message"]


def test_pod_deleted_while_running(setup, controller):
    cluster, ns = setup["cluster"], setup["ns"]
    controller.start()
    create_nbr(cluster, ns, "victim")
    wait_running(cluster, ns, "victim")
    st, body = cluster.api("DELETE", "/api/v1/namespaces/%s/pods/nix-builder-victim" % ns)
    assert st == 200, body
    assert_failed(cluster, ns, "victim", "PodDeleted")
    # Never replaced: a deleted builder ends its request.
    time.sleep(1)
    assert builder_pods(cluster, ns, "victim") == []


def test_deadline_exceeded(setup, controller):
    cluster, ns = setup["cluster"], setup["ns"]
    controller.start()
    create_nbr(cluster, ns, "slow", timeoutSeconds=3)
    wait_running(cluster, ns, "slow")
    obj = assert_failed(cluster, ns, "slow", "DeadlineExceeded", timeout=20)
    assert "timeoutSeconds" in obj["status"]["message"]


def test_invalid_spec_fails(setup, controller):
    """A quantity the pod API refuses: Failed InvalidSpec, no retry storm."""
    cluster, ns = setup["cluster"], setup["ns"]
    controller.start()
    create_nbr(cluster, ns, "badres", resources={"requests": {"cpu": "lots"}})
    obj = wait_nbr(cluster, ns, "badres", phase_is("Failed"), 20)
    assert obj["status"]["reason"] == "InvalidSpec", obj["status"]
    assert builder_pods(cluster, ns) == []


# ---- lifecycle ------------------------------------------------------------------------

def test_deleting_request_deletes_pod(setup, controller):
    cluster, ns = setup["cluster"], setup["ns"]
    controller.start()
    create_nbr(cluster, ns, "gone")
    wait_running(cluster, ns, "gone")
    st, body = cluster.api("DELETE", "/apis/nix.io/v1alpha1/namespaces/%s/nixbuildrequests/gone"
                           % ns)
    assert st == 200, body
    t0 = time.monotonic()
    wait_for(lambda: not builder_pods(cluster, ns), 15, what="builder pod deleted")
    print("pod gone %.2f s after its request" % (time.monotonic() - t0))


def test_completed_request_pod_deleted(setup, controller):
    cluster, ns = setup["cluster"], setup["ns"]
    controller.start()
    create_nbr(cluster, ns, "done")
    wait_running(cluster, ns, "done")
    set_nbr_status(cluster, ns, "done", phase="Completed", message="session ended")
    wait_for(lambda: not builder_pods(cluster, ns), 15, what="builder pod deleted")
    wait_event(cluster, ns, "done", "BuilderDeleted", "Normal")
    # Completed is final: the controller leaves the status alone.
    time.sleep(1)
    st = get_nbr(cluster, ns, "done")["status"]
    assert st["phase"] == "Completed" and st["message"] == "session ended", st


# ---- requests without an identity ---------------------------------------------

def test_request_without_identity_gets_its_own_pod_even_with_a_pool(setup, controller):
    # The pool serves identities (what the proxy writes); a request made by
    # hand without one gets a pod of its own, named after it, as before.
    cluster, ns = setup["cluster"], setup["ns"]
    controller.start("--warm-pool-size", "1")
    create_nbr(cluster, ns, "cold")
    obj = wait_running(cluster, ns, "cold")
    assert obj["status"]["podName"] == "nix-builder-cold"
    assert "builder" not in obj["status"], obj["status"]
    assert controller.metrics().get("nrbc_controller_pool_claims_total", 0) == 0


def test_kill_9_and_restart_no_duplicates(setup, controllers):
    """kill -9 in the middle of a stream of requests, restart: every request
    ends up with exactly one pod and Running; none is stuck."""
    import threading
    cluster, ns = setup["cluster"], setup["ns"]
    first = controllers("first").start()
    names = ["burst-%02d" % i for i in range(30)]

    def feed():
        for n in names:
            create_nbr(cluster, ns, n)
            time.sleep(0.02)
    t = threading.Thread(target=feed)
    t.start()
    wait_for(lambda: len(builder_pods(cluster, ns)) >= 6, 20, interval=0.005,
             what="first pods")
    first.kill(signal.SIGKILL)
    first.proc.wait(5)
    made_before = len(builder_pods(cluster, ns))
    t.join()
    second = controllers("second").start()
    for n in names:
        wait_running(cluster, ns, n, 60)
    pods = builder_pods(cluster, ns)
    owners = sorted(p["metadata"]["ownerReferences"][0]["name"] for p in pods)
    assert owners == names, owners
    for n in names:
        assert get_nbr(cluster, ns, n)["status"]["podName"] == "nix-builder-" + n
    print("%d of %d pods made before kill -9; second controller made %d" % (
        made_before, len(names), second.metrics()["nrbc_controller_pods_created_total"]))
    assert made_before < len(names)


# ---- leader election --------------------------------------------------------------------

def lease(cluster, ns):
    st, body = cluster.api("GET", "/apis/coordination.k8s.io/v1/namespaces/%s/leases/"
                           "nrbc-controller" % ns)
    return body if st == 200 else None


def leader_of(replicas):
    leaders = [c for c in replicas if not c.died() and
               c.metrics().get("nrbc_controller_leader") == 1]
    return leaders


def test_leader_election_and_handover(setup, controllers):
    cluster, ns = setup["cluster"], setup["ns"]
    a = controllers("a").start("--leader-elect")
    b = controllers("b").start("--leader-elect")
    wait_for(lambda: len(leader_of([a, b])) == 1, 20, what="one leader")
    (leader,) = leader_of([a, b])
    follower = b if leader is a else a
    holder = lease(cluster, ns)["spec"]["holderIdentity"]
    assert holder

    create_nbr(cluster, ns, "first")
    wait_running(cluster, ns, "first")
    assert leader.metrics()["nrbc_controller_pods_created_total"] == 1
    assert follower.metrics()["nrbc_controller_pods_created_total"] == 0
    assert follower.get("/readyz")[0] == 200  # caches synced on followers too

    # kill -9: the follower takes over once the lease expires (15 s).
    leader.kill(signal.SIGKILL)
    t0 = time.monotonic()
    create_nbr(cluster, ns, "second")
    wait_running(cluster, ns, "second", 40)
    took = time.monotonic() - t0
    print("handover after kill -9: %.1f s" % took)
    assert took < 15 + 2 * 2 + 3, took
    assert follower.metrics()["nrbc_controller_leader"] == 1
    assert follower.metrics()["nrbc_controller_pods_created_total"] == 1
    new_holder = lease(cluster, ns)["spec"]
    assert new_holder["holderIdentity"] != holder
    assert new_holder["leaseTransitions"] >= 1
    assert len(builder_pods(cluster, ns)) == 2


def test_sigterm_releases_lease(setup, controllers):
    cluster, ns = setup["cluster"], setup["ns"]
    a = controllers("a").start("--leader-elect")
    wait_for(lambda: leader_of([a]), 20, what="a leads")
    b = controllers("b").start("--leader-elect")
    time.sleep(0.5)
    assert leader_of([a, b]) == [a]
    t0 = time.monotonic()
    assert a.stop() == 0, a.log()
    # Released, not expired: b takes over within about one retry period.
    wait_for(lambda: leader_of([b]), 10, what="b leads")
    took = time.monotonic() - t0
    print("handover after SIGTERM: %.1f s" % took)
    assert took < 5, took
    assert "released" in a.log()
    create_nbr(cluster, ns, "after")
    wait_running(cluster, ns, "after")


def test_lost_lease_stops_acting(setup, controller):
    """Someone else takes the lease under the leader (split brain): it
    stops acting at once and makes no more pods; it stays up as a candidate
    (test_outage.py: it leads again once the lease is released)."""
    cluster, ns = setup["cluster"], setup["ns"]
    controller.start("--leader-elect")
    wait_for(lambda: leader_of([controller]), 20, what="leading")
    le = lease(cluster, ns)
    le["spec"]["holderIdentity"] = "intruder"
    le["spec"]["leaseDurationSeconds"] = 3600
    st, body = cluster.api("PUT", "/apis/coordination.k8s.io/v1/namespaces/%s/leases/"
                           "nrbc-controller" % ns, le)
    assert st == 200, body
    t0 = time.monotonic()
    wait_for(lambda: controller.metrics()["nrbc_controller_leader"] == 0, 15,
             what="the leader to stand by")
    took = time.monotonic() - t0
    print("stopped acting %.1f s after losing the lease" % took)
    assert not controller.died(), controller.log()
    assert "leadership lost" in controller.log()
    assert took < 2 * 2 + 2
    create_nbr(cluster, ns, "orphan")
    time.sleep(1)
    assert builder_pods(cluster, ns) == []
    assert lease(cluster, ns)["spec"]["holderIdentity"] == "intruder"


def test_sigterm_exits_zero(setup, controller):
    controller.start()
    assert controller.stop(timeout=10) == 0, controller.log()


# ---- RBAC -----------------------------------------------------------------------------

def can_i(cluster, ns, verb, resource, *extra, namespace=None):
    r = cluster.kubectl("auth", "can-i", verb, resource, "-n", namespace or ns,
                        "--as", "system:serviceaccount:%s:nrbc-controller" % ns, *extra,
                        check=False)
    return r.stdout.strip() == "yes"


def test_rbac_is_enough_and_no_more(setup, controller):
    cluster, ns = setup["cluster"], setup["ns"]
    # Enough: every other test here runs the controller on this Role.
    yes = [("create", "pods"), ("delete", "pods"), ("watch", "pods"), ("patch", "pods"),
           ("list", "nixbuildrequests.nix.io"), ("watch", "nixbuildrequests.nix.io"),
           ("update", "nixbuildrequests.nix.io", "--subresource", "status"),
           ("create", "nixbuilders.nix.io"), ("delete", "nixbuilders.nix.io"),
           ("patch", "nixbuilders.nix.io"), ("watch", "nixbuilders.nix.io"),
           ("update", "nixbuilders.nix.io", "--subresource", "status"),
           ("create", "secrets"), ("delete", "secrets"),
           ("create", "events"), ("create", "leases.coordination.k8s.io"),
           ("update", "leases.coordination.k8s.io/nrbc-controller")]
    no = [("get", "secrets"), ("list", "secrets"), ("watch", "secrets"),
          ("update", "secrets"), ("patch", "secrets"), ("get", "configmaps"),
          ("update", "pods"), ("create", "pods", "--subresource", "exec"),
          ("create", "pods", "--subresource", "eviction"),
          ("update", "nixbuilders.nix.io"),
          ("create", "nixbuildrequests.nix.io"), ("update", "nixbuildrequests.nix.io"),
          ("delete", "nixbuildrequests.nix.io"), ("list", "events"),
          ("update", "leases.coordination.k8s.io/someone-else"),
          ("delete", "leases.coordination.k8s.io/nrbc-controller")]
    for v in yes:
        assert can_i(cluster, ns, *v), "controller cannot %s" % (v,)
    for v in no:
        assert not can_i(cluster, ns, *v), "controller may %s" % (v,)
    # Nothing outside its namespace, nothing cluster-scoped.
    for v in [("create", "pods"), ("delete", "pods"), ("list", "pods"),
              ("list", "nixbuildrequests.nix.io")]:
        assert not can_i(cluster, ns, *v, namespace="default"), "may %s in default" % (v,)
    assert not can_i(cluster, ns, "list", "nodes")
    assert not can_i(cluster, ns, "list", "namespaces")

    # And with the very token the controller uses.
    controller.start()
    import ssl
    import urllib.request
    token = open(controller.kubeconfig).read().split("token:")[1].split()[0].strip("\"'")
    ctx = ssl.create_default_context(cafile=cluster.ca_file)
    for path, want in [("/api/v1/namespaces/%s/secrets" % ns, 403),
                       ("/api/v1/namespaces/%s/secrets/%s" % (ns, SECRET), 403),
                       ("/api/v1/namespaces/default/pods", 403),
                       ("/api/v1/namespaces/%s/pods" % ns, 200)]:
        req = urllib.request.Request(cluster.server + path,
                                     headers={"Authorization": "Bearer " + token})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
                got = r.status
        except urllib.error.HTTPError as e:
            got = e.code
        assert got == want, (path, got)
