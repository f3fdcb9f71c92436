"""Reusable builders (NixBuilder): `nrbc controller` binds NixBuildRequests
that carry a client identity (as the proxy writes them) to builders of that
identity, against the real kube-apiserver and the test kubelet, with the
controller's own ServiceAccount and the shipped Role."""

import json
import subprocess
import threading
import time


from conftest import wait_for
from controller_fixtures import (REMOTE_PORT, builder_pods, controllers, create_nbr, get_nbr,
                                 phase_is, set_nbr_status, setup, wait_nbr)

ID_A = "aaaa0000aaaa0000aaaa0000aaaa0000"
ID_B = "bbbb1111bbbb1111bbbb1111bbbb1111"
ID_C = "cccc2222cccc2222cccc2222cccc2222"
NBD_PATH = "/apis/nix.io/v1alpha1/namespaces/%s/nixbuilders"
NBR_PATH = "/apis/nix.io/v1alpha1/namespaces/%s/nixbuildrequests"


def builders(cluster, ns):
    st, body = cluster.api("GET", NBD_PATH % ns)
    assert st == 200, body
    return {b["metadata"]["name"]: b for b in body["items"]}


def running(cluster, ns, name, timeout=30):
    obj = wait_nbr(cluster, ns, name, phase_is("Running", "Failed"), timeout)
    assert obj["status"]["phase"] == "Running", obj["status"]
    return obj


def finish(cluster, ns, name):
    """What the proxy does when a session ends: Completed, then delete."""
    set_nbr_status(cluster, ns, name, phase="Completed", message="done")
    st, body = cluster.api("DELETE", (NBR_PATH % ns) + "/" + name)
    assert st in (200, 404), body


def sessions(cluster, ns, name):
    b = builders(cluster, ns).get(name)
    return None if b is None else (b.get("status") or {}).get("sessions")


def ssh(keys, ip, *cmd, timeout=30, host_key=None):
    return subprocess.run(keys.ssh_argv(ip, REMOTE_PORT, host_key=host_key) + list(cmd),
                          stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


def test_one_identity_reuses_its_builder_and_scales_out(setup, controllers):
    cluster, ns, keys = setup["cluster"], setup["ns"], setup["keys"]
    c = controllers().start("--builder-slots", "2", "--builder-idle-timeout", "3s")

    first = running(cluster, ns, create_nbr(cluster, ns, "a1", identity=ID_A)
                    ["metadata"]["name"])["status"]
    b0 = first["builder"]
    assert first["podName"] == "nix-builder-" + b0, first
    assert b0.startswith("nb-" + ID_A[:16]), b0
    r = ssh(keys, first["podIP"], "echo", "reused-ok", host_key=first["builderHostKey"])
    assert r.returncode == 0 and r.stdout.strip() == "reused-ok", r.stderr

    # The second session of the same identity: the same builder and pod,
    # Running at once (the pod is Ready already).
    t0 = time.monotonic()
    create_nbr(cluster, ns, "a2", identity=ID_A)
    second = running(cluster, ns, "a2")["status"]
    took = time.monotonic() - t0
    print("second session of identity A Running after %.3f s" % took)
    assert second["builder"] == b0 and second["podName"] == first["podName"], second
    assert second["podIP"] == first["podIP"]
    wait_for(lambda: sessions(cluster, ns, b0) == 2, 10, what="builder shows 2 sessions")

    # A third at once: both slots taken, so a second builder of A.
    create_nbr(cluster, ns, "a3", identity=ID_A)
    third = running(cluster, ns, "a3")["status"]
    assert third["builder"] != b0 and third["builder"].startswith("nb-" + ID_A[:16]), third
    # Another identity never lands on A's builders.
    create_nbr(cluster, ns, "b1", identity=ID_B)
    other = running(cluster, ns, "b1")["status"]
    assert other["builder"] not in (b0, third["builder"]), other
    assert other["podName"] not in (first["podName"], third["podName"])

    nbd = builders(cluster, ns)
    assert set(nbd) == {b0, third["builder"], other["builder"]}, sorted(nbd)
    assert nbd[b0]["spec"]["identity"] == ID_A and nbd[b0]["spec"]["slots"] == 2
    assert nbd[other["builder"]]["spec"]["identity"] == ID_B
    # The key never appears; the identity is a hash.
    assert keys.public_text.split()[1] not in str(nbd)
    # Pods are controlled by their builder, not by any request.
    for p in builder_pods(cluster, ns):
        (ref,) = p["metadata"]["ownerReferences"]
        assert ref["kind"] == "NixBuilder" and ref["controller"] is True, ref
    m = c.metrics()
    assert m['nrbc_controller_binds_total{builder="existing"}'] == 1, m
    assert m['nrbc_controller_binds_total{builder="new"}'] == 3, m

    # Sessions end: the builders go idle, then away, and their pods with them.
    for n in ("a1", "a2"):
        finish(cluster, ns, n)
    wait_for(lambda: (builders(cluster, ns).get(b0) or {}).get("status", {}).get("idleSince"),
             10, what="idleSince on the idle builder")
    # Still serving: a1 and a2 gone, a3's builder keeps its one session.
    assert sessions(cluster, ns, third["builder"]) == 1
    for n in ("a3", "b1"):
        finish(cluster, ns, n)
    wait_for(lambda: not builders(cluster, ns), 30, what="idle builders deleted")
    wait_for(lambda: not [p for p in builder_pods(cluster, ns)
                          if not p["metadata"].get("deletionTimestamp")], 60,
             what="builder pods garbage-collected")
    assert c.metrics()["nrbc_controller_builders_deleted_total"] == 3


def test_a_burst_of_one_identity_makes_just_enough_builders(setup, controllers):
    cluster, ns = setup["cluster"], setup["ns"]
    controllers().start("--builder-slots", "4")
    names = ["burst-%d" % i for i in range(10)]
    threads = [threading.Thread(target=create_nbr, args=(cluster, ns, n),
                                kwargs={"identity": ID_A}) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    served = {}
    for n in names:
        st = running(cluster, ns, n, timeout=60)["status"]
        served.setdefault(st["builder"], []).append(n)
    # ceil(10 / 4): never a builder more than the slots need, none overfull.
    assert len(served) == 3, served
    assert all(len(v) <= 4 for v in served.values()), served
    assert len(builders(cluster, ns)) == 3


def test_pool_builder_claimed_replaced_and_shrunk(setup, controllers):
    cluster, ns = setup["cluster"], setup["ns"]
    c = controllers().start("--warm-pool-size", "2", "--builder-idle-timeout", "1h")

    def unclaimed():
        return {n: b for n, b in builders(cluster, ns).items()
                if not b["spec"].get("identity")}

    def ready(b):
        return (b.get("status") or {}).get("phase") == "Running"
    wait_for(lambda: len(unclaimed()) == 2 and all(ready(b) for b in unclaimed().values()),
             30, what="two Ready pool builders")
    pool = set(unclaimed())
    assert all(n.startswith("nb-pool-") for n in pool), pool
    time.sleep(1)
    assert set(builders(cluster, ns)) == pool, "the pool grew without a claim"

    t0 = time.monotonic()
    create_nbr(cluster, ns, "warm-1", identity=ID_C)
    st = running(cluster, ns, "warm-1", timeout=15)["status"]
    took = time.monotonic() - t0
    print("pool builder %s Running %.3f s after the request" % (st["builder"], took))
    assert st["builder"] in pool, st
    assert builders(cluster, ns)[st["builder"]]["spec"]["identity"] == ID_C
    # A replacement: two unclaimed again, one of them new.
    wait_for(lambda: len(unclaimed()) == 2, 30, what="a replacement pool builder")
    assert st["builder"] not in unclaimed()
    assert len(set(unclaimed()) - pool) == 1
    # The claimed builder now serves C's next session too.
    create_nbr(cluster, ns, "warm-2", identity=ID_C)
    assert running(cluster, ns, "warm-2")["status"]["builder"] == st["builder"]
    m = c.metrics()
    assert m["nrbc_controller_pool_claims_total"] == 1, m

    # Lowering the pool (here to 0) removes the unclaimed ones, not C's.
    c.stop()
    c2 = controllers("controller-2").start("--warm-pool-size", "0")
    wait_for(lambda: not unclaimed(), 30, what="surplus pool builders deleted")
    assert st["builder"] in builders(cluster, ns)
    assert get_nbr(cluster, ns, "warm-1")["status"]["phase"] == "Running"
    assert c2.metrics()["nrbc_controller_builder_sessions"] == 2


def test_a_class_keeps_a_warm_pool_of_its_own(setup, controllers):
    """A NixBuilderClass's warmPoolSize: that many unclaimed builders of the
    class, Ready, beside the default class's --warm-pool-size; a request
    of the class claims one (and the pool makes another); a change to the
    class replaces its unclaimed builders; warmPoolSize 0 removes them."""
    cluster, ns = setup["cluster"], setup["ns"]
    cls_path = "/apis/nix.io/v1alpha1/namespaces/%s/nixbuilderclasses" % ns

    def put_class(spec):
        cluster.apply(json.dumps({"apiVersion": "nix.io/v1alpha1", "kind": "NixBuilderClass",
                                  "metadata": {"name": "warm", "namespace": ns},
                                  "spec": spec}))

    def unclaimed(cls):
        return {n: b for n, b in builders(cluster, ns).items()
                if not b["spec"].get("identity") and b["spec"].get("builderClass", "") == cls}

    def ready(b):
        return (b.get("status") or {}).get("phase") == "Running"
    put_class({"warmPoolSize": 2, "slots": 2, "systems": ["x86_64-linux"]})
    try:
        c = controllers().start("--warm-pool-size", "1", "--builder-idle-timeout", "1h")
        wait_for(lambda: len(unclaimed("warm")) == 2 and len(unclaimed("")) == 1 and
                 all(ready(b) for b in list(unclaimed("warm").values()) +
                     list(unclaimed("").values())),
                 30, what="2 Ready pool builders of class warm, 1 of the default class")
        pool = set(unclaimed("warm"))
        assert all(b["spec"]["slots"] == 2 for b in unclaimed("warm").values())
        time.sleep(1)
        assert len(builders(cluster, ns)) == 3, "the pool grew without a claim"

        create_nbr(cluster, ns, "warm-1", identity=ID_C, builderClass="warm")
        st = running(cluster, ns, "warm-1", timeout=15)["status"]
        assert st["builder"] in pool, st
        assert builders(cluster, ns)[st["builder"]]["spec"]["identity"] == ID_C
        wait_for(lambda: len(unclaimed("warm")) == 2 and st["builder"] not in unclaimed("warm"),
                 30, what="a replacement pool builder of class warm")
        assert c.metrics()["nrbc_controller_pool_claims_total"] == 1
        assert len(unclaimed("")) == 1, "the default class's pool was touched"

        # The class changes: its unclaimed builders are of the old kind.
        old = set(unclaimed("warm"))
        put_class({"warmPoolSize": 1, "slots": 3, "systems": ["x86_64-linux"],
                   "resources": {"requests": {"memory": "32Mi"}}})
        wait_for(lambda: len(unclaimed("warm")) == 1 and not (set(unclaimed("warm")) & old),
                 30, what="the class's pool remade after the class changed")
        (b,) = unclaimed("warm").values()
        assert b["spec"]["slots"] == 3 and b["spec"]["resources"]["requests"]["memory"] == "32Mi"

        # warmPoolSize 0: none left unclaimed; the claimed one stays.
        put_class({"warmPoolSize": 0, "slots": 3, "systems": ["x86_64-linux"],
                   "resources": {"requests": {"memory": "32Mi"}}})
        wait_for(lambda: not unclaimed("warm"), 30, what="the class's pool emptied")
        assert st["builder"] in builders(cluster, ns)
        assert get_nbr(cluster, ns, "warm-1")["status"]["phase"] == "Running"
        assert len(unclaimed("")) == 1
    finally:
        cluster.api("DELETE", cls_path + "/warm")


def test_builder_pod_deleted_fails_its_requests(setup, controllers):
    cluster, ns = setup["cluster"], setup["ns"]
    controllers().start("--builder-idle-timeout", "1h")
    create_nbr(cluster, ns, "victim", identity=ID_A)
    st = running(cluster, ns, "victim")["status"]
    old_uid = builders(cluster, ns)[st["builder"]]["metadata"]["uid"]
    code, body = cluster.api("DELETE", "/api/v1/namespaces/%s/pods/%s" % (ns, st["podName"]))
    assert code == 200, body
    obj = wait_nbr(cluster, ns, "victim", phase_is("Failed"), 30)
    assert obj["status"]["reason"] == "PodDeleted", obj["status"]
    # The request ends; the builder whose pod died goes, and the next
    # session gets a fresh one.
    finish(cluster, ns, "victim")
    wait_for(lambda: st["builder"] not in builders(cluster, ns), 30,
             what="failed builder deleted")
    create_nbr(cluster, ns, "after", identity=ID_A)
    after = running(cluster, ns, "after")["status"]
    # The same deterministic name may come back; it is a new builder.
    assert builders(cluster, ns)[after["builder"]]["metadata"]["uid"] != old_uid


def test_restart_recovers_bindings(setup, controllers):
    cluster, ns = setup["cluster"], setup["ns"]
    c = controllers().start("--builder-slots", "3", "--builder-idle-timeout", "1h")
    for n in ("k1", "k2"):
        create_nbr(cluster, ns, n, identity=ID_A)
    b = {running(cluster, ns, n)["status"]["builder"] for n in ("k1", "k2")}
    assert len(b) == 1, b
    (b,) = b
    c.kill()
    c.proc.wait(10)
    create_nbr(cluster, ns, "k3", identity=ID_A)
    c2 = controllers("controller-2").start("--builder-slots", "3",
                                           "--builder-idle-timeout", "1h")
    assert running(cluster, ns, "k3")["status"]["builder"] == b
    # The table was rebuilt from the requests: all three slots are taken,
    # so a fourth session scales out instead of overfilling.
    wait_for(lambda: sessions(cluster, ns, b) == 3, 10, what="3 sessions after restart")
    create_nbr(cluster, ns, "k4", identity=ID_A)
    assert running(cluster, ns, "k4")["status"]["builder"] != b
    assert len(builders(cluster, ns)) == 2
    assert c2.metrics()["nrbc_controller_builder_sessions"] == 4


def test_invalid_identity_fails(setup, controllers):
    cluster, ns = setup["cluster"], setup["ns"]
    controllers().start()
    # The CRD admits only lower-case hex; the controller checks again.
    st, body = cluster.api("POST", NBR_PATH % ns, {
        "apiVersion": "nix.io/v1alpha1", "kind": "NixBuildRequest",
        "metadata": {"name": "bad"}, "spec": {"sessionId": "x", "identity": "Not-Hex"}})
    assert st == 422, body
    assert not builders(cluster, ns)


def test_restart_does_not_bind_to_another_identitys_builder(setup, controllers):
    """status.builder is only a hint after a restart: a request whose status
    names a builder of another identity is not bound to it (issue 21)."""
    cluster, ns = setup["cluster"], setup["ns"]
    c = controllers().start("--builder-slots", "3", "--builder-idle-timeout", "1h")
    create_nbr(cluster, ns, "own", identity=ID_A)
    a_builder = running(cluster, ns, "own")["status"]["builder"]
    c.kill()
    c.proc.wait(10)
    # B's request names A's builder (by hand, or a confused writer).
    create_nbr(cluster, ns, "intruder", identity=ID_B)
    set_nbr_status(cluster, ns, "intruder", builder=a_builder, phase="Pending")
    c2 = controllers("controller-2").start("--builder-slots", "3",
                                           "--builder-idle-timeout", "1h")
    obj = wait_nbr(cluster, ns, "intruder", phase_is("Failed", "Running"), 30)
    assert obj["status"]["phase"] == "Failed", obj["status"]
    assert "not of this request's identity" in obj["status"]["message"], obj["status"]
    assert obj["status"].get("podName") in (None, ""), obj["status"]
    assert "not of this request's identity" in c2.log()
    # A's builder serves A's session alone.
    wait_for(lambda: sessions(cluster, ns, a_builder) == 1, 10, what="A's session counted")
    time.sleep(1)
    assert sessions(cluster, ns, a_builder) == 1
    assert c2.metrics()["nrbc_controller_builder_sessions"] == 1
    assert get_nbr(cluster, ns, "own")["status"]["phase"] == "Running"


def test_claimed_identity_cannot_change(setup):
    """The CRD: an unclaimed builder is claimed once; after that the API
    server refuses any other identity, an empty one, or none."""
    cluster, ns = setup["cluster"], setup["ns"]
    merge = {"Content-Type": "application/merge-patch+json"}
    st, body = cluster.api("POST", NBD_PATH % ns, {
        "apiVersion": "nix.io/v1alpha1", "kind": "NixBuilder",
        "metadata": {"name": "nb-pool-test"},
        "spec": {"identity": "", "class": "c0", "slots": 1}})
    assert st == 201, body
    path = (NBD_PATH % ns) + "/nb-pool-test"
    st, body = cluster.api("PATCH", path, {"spec": {"identity": ID_A}}, headers=merge)
    assert st == 200, body
    assert body["spec"]["identity"] == ID_A
    for change in ({"identity": ID_B}, {"identity": ""}, {"identity": None}):
        st, body = cluster.api("PATCH", path, {"spec": change}, headers=merge)
        assert st == 422, (change, st, body)
        assert "spec.identity cannot change once set" in str(body), body
    # The same identity again, and other fields, still go through.
    st, body = cluster.api("PATCH", path, {"spec": {"identity": ID_A, "slots": 2}},
                           headers=merge)
    assert st == 200, body
    st, body = cluster.api("GET", path)
    assert body["spec"]["identity"] == ID_A and body["spec"]["slots"] == 2


def secret_of(cluster, ns, name):
    st, body = cluster.api("GET", "/api/v1/namespaces/%s/secrets/%s" % (ns, name))
    return body if st == 200 else None


def test_each_builder_has_its_own_host_key_and_never_the_proxys(setup, controllers):
    """A client is root on its builder (a trusted Nix user): whatever key
    its pod holds must be worth nothing elsewhere. Each NixBuilder gets a
    host key of its own; the shared Secret's host-key (the proxy's) is
    mounted nowhere."""
    cluster, ns, keys = setup["cluster"], setup["ns"], setup["keys"]
    controllers().start()
    a = running(cluster, ns, create_nbr(cluster, ns, "hk-a", identity=ID_A)
                ["metadata"]["name"])["status"]
    b = running(cluster, ns, create_nbr(cluster, ns, "hk-b", identity=ID_B)
                ["metadata"]["name"])["status"]
    assert a["builder"] != b["builder"]
    ka, kb = a["builderHostKey"], b["builderHostKey"]
    assert ka.startswith("ecdsa-sha2-nistp256 ") and kb.startswith("ecdsa-sha2-nistp256 ")
    assert ka != kb
    shared = keys.host_public_text.split()[1]
    assert shared not in ka and shared not in kb
    nbds = builders(cluster, ns)
    assert nbds[a["builder"]]["status"]["hostKey"] == ka
    assert nbds[b["builder"]]["status"]["hostKey"] == kb

    for st, key in ((a, ka), (b, kb)):
        (pod,) = [p for p in builder_pods(cluster, ns)
                  if p["metadata"]["name"] == st["podName"]]
        assert pod["metadata"]["annotations"]["nix.io/host-key"] == key
        # No volume takes host-key from the shared Secret.
        vols = pod["spec"]["volumes"]
        sources = []
        for v in vols:
            if "secret" in v:
                sources.append((v["secret"]["secretName"], v["secret"].get("items")))
            for s in (v.get("projected") or {}).get("sources") or []:
                if "secret" in s:
                    sources.append((s["secret"]["name"], s["secret"].get("items")))
        own = st["podName"] + "-host-key"
        for name, items in sources:
            ks = {i["key"] for i in items or []}
            if name == own:
                assert ks == {"host-key"}, items
            else:
                assert items and "host-key" not in ks and "private" not in ks, (name, items)
        assert own in {n for n, _ in sources}, sources
        # Its Secret goes with its builder.
        sec = secret_of(cluster, ns, own)
        assert sec, own
        (ref,) = sec["metadata"]["ownerReferences"]
        assert ref["kind"] == "NixBuilder" and ref["name"] == st["builder"], ref
        # The pod serves exactly that key: strict ssh with it works, with
        # the proxy's shared key it does not.
        r = ssh(keys, st["podIP"], "echo", "own-key-ok", host_key=key)
        assert r.returncode == 0 and r.stdout.strip() == "own-key-ok", r.stderr
        r = ssh(keys, st["podIP"], "true")
        assert r.returncode != 0 and "Host key verification failed" in r.stderr, r.stderr

    # Deleting the builder takes its Secret with it (garbage collection).
    st_, body = cluster.api("DELETE", (NBD_PATH % ns) + "/" + a["builder"],
                            {"propagationPolicy": "Foreground"})
    assert st_ in (200, 202), body
    wait_for(lambda: secret_of(cluster, ns, a["podName"] + "-host-key") is None, 60,
             what="the builder's host key Secret collected with it")
