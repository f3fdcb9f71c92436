"""Builder classes on the test kubelet: the SSH user name picks a
NixBuilderClass, whose builders take its pod shape (resources, tolerations,
nodeSelector), its systems and features; one nix-build uses three classes
at once; an unknown class, a class no node can take and a class the key may
not use each end with one clear line; a class's bound on builders per key
holds. (The same routing done by a real scheduler and two real nodes:
test_two_nodes.py.)"""

import json
import os
import subprocess
import threading
import time

import pytest

from cluster import wait_for
from conftest import salt
from stack import NAMESPACE, Stack, StackWatcher

CLASSES = {
    "big": {"supportedFeatures": ["big-parallel"], "mandatoryFeatures": ["big-parallel"],
            "speedFactor": 2, "slots": 2, "maxBuildersPerIdentity": 2,
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                          "limits": {"memory": "2Gi"}},
            "tolerations": [{"key": "nrbc.test/big", "operator": "Exists",
                             "effect": "NoSchedule"}]},
    "arm": {"systems": ["aarch64-linux"], "nodeSelector": {"kubernetes.io/os": "linux"}},
    "nowhere": {"nodeSelector": {"nrbc.test/pool": "none"}},
}


@pytest.fixture(scope="module")
def stack(cluster, kubelet, nrbc_bin, tmp_path_factory):
    s = Stack(cluster, kubelet, nrbc_bin, tmp_path_factory.mktemp("classes"),
              controller_args=["--unschedulable-timeout=3s"],
              key_options={"user-key-3": 'nrbc-classes="nixbld,arm"'})
    s.install()
    for name, spec in CLASSES.items():
        cluster.apply(json.dumps({"apiVersion": "nix.io/v1alpha1", "kind": "NixBuilderClass",
                                  "metadata": {"name": name, "namespace": NAMESPACE},
                                  "spec": spec}))
    s.start()
    yield s
    s.stop()
    for name in CLASSES:
        cluster.kubectl("-n", NAMESPACE, "delete", "nixbuilderclass", name, check=False)


def ssh(stack, user, *cmd, key=0, timeout=60, stdin=subprocess.DEVNULL):
    argv = ["ssh"] + stack.sshopts(key).split() + ["%s@%s" % (user, stack.proxy_address)]
    return subprocess.run(argv + list(cmd), stdin=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


def all_builders(stack):
    return ("%s ; %s ; %s" % (
        stack.builders("ssh-ng"),
        stack.builders("ssh-ng", user="big", max_jobs=4, features="big-parallel",
                       mandatory="big-parallel"),
        stack.builders("ssh-ng", user="arm", max_jobs=4, system="aarch64-linux")))


def env_of(pod):
    (c,) = pod["spec"]["containers"]
    return {e["name"]: e.get("value") for e in c.get("env") or []}


def test_one_build_uses_three_classes(stack, nix_client):
    s = salt()
    with StackWatcher(stack) as w:
        out = nix_client.build("classes.nix", builders=all_builders(stack),
                               sshopts=stack.sshopts(), args={"salt": s})
    assert nix_client.read(out.out).decode().split() == [
        "plain-" + s, "big-" + s, "arm-" + s]
    assert {"", "big", "arm"} <= w.classes, w.classes
    by_env = {}
    for p in w.pods.values():
        by_env.setdefault(env_of(p).get("NRBC_BUILDER_FEATURES") or
                          env_of(p).get("NRBC_BUILDER_SYSTEMS") or "default", []).append(p)
    assert {"big-parallel", "aarch64-linux", "default"} <= set(by_env), list(by_env)
    big = by_env["big-parallel"][0]
    (c,) = big["spec"]["containers"]
    assert c["resources"]["requests"] == {"cpu": "100m", "memory": "64Mi"}, c["resources"]
    assert c["resources"]["limits"]["memory"] == "2Gi"
    assert any(t.get("key") == "nrbc.test/big" for t in big["spec"].get("tolerations") or [])
    arm = by_env["aarch64-linux"][0]
    assert arm["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    default = by_env["default"][0]
    # (The API server's admission adds the not-ready/unreachable ones.)
    assert not any(t.get("key") == "nrbc.test/big"
                   for t in default["spec"].get("tolerations") or [])
    # The builders carry their class, and the class hash tells them apart.
    classes = {b["spec"].get("builderClass", ""): b["spec"]["class"]
               for b in stack.nixbuilders() if b["spec"].get("identity")}
    assert len(set(classes.values())) == len(classes), classes
    stack.wait_clean()


def test_unknown_class_is_refused_with_one_line(stack):
    r = ssh(stack, "nosuch", "nix-store", "--serve", "--write")
    assert r.returncode != 0
    assert 'no builder class "nosuch"' in r.stderr, r.stderr
    assert "kubectl -n %s get nixbuilderclasses" % NAMESPACE in r.stderr, r.stderr
    stack.wait_clean()


def test_key_not_allowed_a_class_is_refused(stack, nix_client):
    r = ssh(stack, "big", "nix-store", "--serve", "--write", key=2)
    assert r.returncode == 1, r
    assert 'this key may not use builder class "big"' in r.stderr, r.stderr
    assert "it may use: nixbld,arm" in r.stderr, r.stderr
    # No request was made for it.
    assert not [q for q in stack.requests() if q["spec"].get("builderClass") == "big"]
    # The class it may use serves it.
    s = salt()
    out = nix_client.build("classes.nix", builders=stack.builders(
        "ssh-ng", user="arm", system="aarch64-linux"), sshopts=stack.sshopts(2),
        args={"salt": s, "only": "arm"})
    assert nix_client.read(out.out).decode().strip() == "arm-" + s
    stack.wait_clean()


def test_class_no_node_can_take_fails_with_the_reason(stack):
    r = ssh(stack, "nowhere", "nix-store", "--serve", "--write", timeout=120)
    assert r.returncode != 0
    assert "Unschedulable" in r.stderr, r.stderr
    assert "nrbc.test/pool" in r.stderr or "node" in r.stderr, r.stderr
    stack.wait_clean()


def test_a_class_bounds_the_builders_one_key_holds(stack):
    # big: 2 slots, at most 2 builders per key: 6 sessions at once get 4
    # slots on 2 builders, and 2 wait for a slot rather than a third builder.
    procs = []
    argv = ["ssh"] + stack.sshopts().split() + ["big@%s" % stack.proxy_address,
                                                 "nix-store", "--serve", "--write"]
    try:
        for _ in range(6):
            procs.append(subprocess.Popen(argv, stdin=subprocess.PIPE,
                                          stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE))

        def phases():
            return sorted((q.get("status") or {}).get("phase", "") for q in stack.requests()
                          if q["spec"].get("builderClass") == "big")
        wait_for(lambda: phases().count("Running") == 4 and len(phases()) == 6, 60,
                 what="4 of 6 big sessions Running")
        time.sleep(2)    # and it stays so: no third builder on its way
        bigs = [b for b in stack.nixbuilders() if b["spec"].get("builderClass") == "big"]
        assert len(bigs) == 2, [b["metadata"]["name"] for b in bigs]
        assert all(b["spec"]["slots"] == 2 for b in bigs)
        assert phases().count("Running") == 4, phases()
        # The sessions end (which ones hold the slots is the order their
        # connections reached the proxy in, not procs'): a waiting session
        # whose client has sent EOF still waits for its slot, so all six
        # exiting, none told of a failure (progress lines are fine), is each
        # waiting one served as a slot freed; and no third builder was made
        # meanwhile.
        most, stop = [len(bigs)], threading.Event()

        def watch():
            while not stop.is_set():
                most[0] = max(most[0], len([b for b in stack.nixbuilders()
                                            if b["spec"].get("builderClass") == "big"]))
                time.sleep(0.05)
        t = threading.Thread(target=watch)
        t.start()
        try:
            for p in procs:
                p.stdin.close()
            for p in procs:
                p.wait(timeout=60)
        finally:
            stop.set()
            t.join()
        for p in procs:
            err = p.stderr.read().decode(errors="replace")
            told = [l for l in err.splitlines() if l.startswith("nrbc:") and
                    any(w in l.lower() for w in ("fail", "refus", "cannot", "quota"))]
            assert not told, err
        assert most[0] == 2, most
    finally:
        for p in procs:
            if p.stdin and not p.stdin.closed:
                p.stdin.close()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    stack.wait_clean()
