"""Usage per identity (NixUsage), end to end on the shipped stack: two keys
build different amounts through the proxy; the controller counts each
key's sessions and builder time into its NixUsage and its builders'
status.usage; the numbers survive a controller restart; `nrbc usage`
prints them (with the shipped nrbc-usage Role) and maps a key file to its
identity."""

import base64
import hashlib
import json
import os
import subprocess
import time

import pytest

from conftest import NixClient, salt, wait_for
from stack import NAMESPACE, Stack

USAGES = "/apis/nix.io/v1alpha1/namespaces/%s/nixusages" % NAMESPACE


def identity_of(pub_path):
    """What the proxy writes: 128 bits of the SHA-256 of the key blob, hex."""
    blob = base64.b64decode(open(pub_path).read().split()[1])
    return hashlib.sha256(blob).hexdigest()[:32]


@pytest.fixture(scope="module")
def stack(cluster, kubelet, nrbc_bin, tmp_path_factory):
    s = Stack(cluster, kubelet, nrbc_bin, tmp_path_factory.mktemp("stack-usage"),
              builder_idle_timeout="8s", controller_args=["--usage-interval=2s"],
              key_options={"user-key-2": "nrbc-max-builders=1"})
    s.install()
    # Usage of earlier modules' identities (the same keys are made anew, but
    # a leftover object would mix in): start from none.
    st, body = cluster.api("DELETE", USAGES)
    assert st == 200, body
    s.start()
    yield s
    s.stop()


def usages(stack):
    st, body = stack.cluster.api("GET", USAGES)
    assert st == 200, body
    return {u["metadata"]["name"]: u for u in body["items"]}


def usage_reader_kubeconfig(stack, path):
    """A ServiceAccount bound to the shipped Role nrbc-usage, as an admin
    binds a person to it."""
    c = stack.cluster
    c.kubectl("-n", NAMESPACE, "create", "serviceaccount", "usage-reader", check=False)
    c.kubectl("-n", NAMESPACE, "create", "rolebinding", "usage-reader", "--role=nrbc-usage",
              "--serviceaccount=%s:usage-reader" % NAMESPACE, check=False)
    return c.sa_kubeconfig("usage-reader", NAMESPACE, path)


def nrbc_usage(stack, kubeconfig, *args):
    return subprocess.run([stack.nrbc_bin, "usage", "--kubeconfig", kubeconfig,
                           "--namespace", NAMESPACE, *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=60)


def test_two_keys_usage_counted_kept_and_printed(stack, tmp_path):
    a_id = identity_of(stack.keys["user-key"] + ".pub")
    b_id = identity_of(stack.keys["user-key-2"] + ".pub")
    clients = [NixClient(tmp_path / "a"), NixClient(tmp_path / "b")]
    for c in clients:
        os.makedirs(c.dir, exist_ok=True)
    # Key A: a graph of 8 derivations; key B: one derivation.
    clients[0].build("graph.nix", builders=stack.builders("ssh-ng"), sshopts=stack.sshopts(0),
                     args={"salt": salt(), "n": 8})
    clients[1].build("simple.nix", builders=stack.builders("ssh-ng"), sshopts=stack.sshopts(1),
                     args={"salt": salt()})
    ids = {r["spec"]["identity"] for r in stack.requests()} | {a_id, b_id}
    assert ids >= {a_id, b_id}

    def counted():
        u = usages(stack)
        return (a_id in u and b_id in u and
                u[a_id].get("status", {}).get("sessionsServed", 0) >= 8 and
                u[b_id].get("status", {}).get("sessionsServed", 0) >= 1 and u)
    u = wait_for(counted, 30, what="both identities' sessions in their NixUsage")
    a, b = u[a_id]["status"], u[b_id]["status"]
    print("A:", json.dumps(a), "\nB:", json.dumps(b))
    assert u[a_id]["spec"]["identity"] == a_id
    assert a["sessionsServed"] > b["sessionsServed"], (a, b)
    assert a["sessionsFailed"] == 0 and b["sessionsFailed"] == 0, (a, b)
    assert a["builders"] >= 1 and b["builders"] >= 1, (a, b)
    # Bytes through the proxy, each way: more for the bigger build, and
    # what the proxy counted in all (its own metric) is what was recorded.
    assert a["bytesUp"] > b["bytesUp"] > 0, (a, b)
    assert a["bytesDown"] > b["bytesDown"] > 0, (a, b)
    # Builders' sessions to their siblings (substitution between a key's
    # builders, no request of their own) are in the proxy's total only: here
    # they find nothing to fetch, a few hundred bytes each.
    pm = stack.proxy_metrics()
    siblings = stack.proxy.log().count("bridged to its sibling")
    for d, f in (("up", "bytesUp"), ("down", "bytesDown")):
        total = pm['nrbc_proxy_bytes_total{direction="%s"}' % d]
        recorded = sum(x.get("status", {}).get(f, 0) for x in usages(stack).values())
        print("bytes %s: proxy %d, recorded %d, %d sibling sessions" % (d, total, recorded,
                                                                        siblings))
        assert recorded <= total <= recorded + 1000 * siblings, (d, recorded, total, siblings)
    # Prometheus, by identity (every replica, from the API).
    def metrics_caught_up():
        m = stack.controller_metrics()
        return (m.get('nrbc_usage_sessions_total{identity="%s",outcome="served"}' % a_id) ==
                a["sessionsServed"] and
                m.get('nrbc_usage_bytes_total{identity="%s",direction="up"}' % b_id) ==
                b["bytesUp"] and m)
    m = wait_for(metrics_caught_up, 10, what="nrbc_usage_* to show the NixUsages")
    assert m['nrbc_usage_identities{labelled="true"}'] >= 2, m
    assert m['nrbc_usage_identities{labelled="false"}'] == 0, m
    # The key's builders show what they served.
    served = {}
    for nbd in stack.nixbuilders():
        ident = nbd["spec"].get("identity")
        if ident in (a_id, b_id):
            served[ident] = served.get(ident, 0) + \
                nbd.get("status", {}).get("usage", {}).get("sessionsServed", 0)
    assert served.get(a_id, 0) == a["sessionsServed"], (served, a)
    assert served.get(b_id, 0) == b["sessionsServed"], (served, b)

    # Builder time runs while builders live (--usage-interval=2s).
    first = a["builderSeconds"]
    wait_for(lambda: usages(stack)[a_id]["status"]["builderSeconds"] >= first + 2, 15,
             what="A's builder time to move on")

    # A controller restart loses nothing: the counts are in the API.
    before = usages(stack)[a_id]["status"]
    assert stack.controller.stop() == 0
    stack.controller.start()
    wait_for(stack.controller.ready, 30, what="controller /readyz after the restart")
    clients[0].build("simple.nix", builders=stack.builders("ssh-ng"),
                     sshopts=stack.sshopts(0), args={"salt": salt()})
    after = wait_for(lambda: (lambda s: s["sessionsServed"] > before["sessionsServed"] and s)(
        usages(stack)[a_id]["status"]), 30, what="A's next session counted after the restart")
    assert after["sessionsServed"] == before["sessionsServed"] + 1, (before, after)
    assert after["builderSeconds"] >= before["builderSeconds"], (before, after)

    # Idle builders go (8 s): their time is retired, counted once, and stays.
    def retired():
        s = usages(stack)[a_id]["status"]
        return s["builders"] == 0 and not s.get("activeBuilders") and s
    done = wait_for(retired, 60, what="A's builders retired in its NixUsage")
    assert done["builderSeconds"] == done["retiredBuilderSeconds"], done
    # Each builder of A lived at least its idle timeout.
    assert done["builderSeconds"] >= 8, done
    time.sleep(3)
    assert usages(stack)[a_id]["status"]["builderSeconds"] == done["builderSeconds"]

    # `nrbc usage` with the shipped Role: a row per identity, A first (more
    # builder time); --key maps the key file to its identity and row.
    kc = usage_reader_kubeconfig(stack, str(tmp_path / "reader.kubeconfig"))
    r = nrbc_usage(stack, kc)
    assert r.returncode == 0, r.stderr
    print(r.stdout)
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["IDENTITY", "SERVED", "FAILED", "BUILDERS"], lines
    rows = {l.split()[0]: l.split() for l in lines[1:]}
    assert int(rows[a_id][1]) == done["sessionsServed"], rows
    assert int(rows[b_id][1]) == usages(stack)[b_id]["status"]["sessionsServed"], rows
    r = nrbc_usage(stack, kc, "--key", stack.keys["user-key-2"])
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == "key %s is identity %s" % (stack.keys["user-key-2"], b_id), out
    assert len(out) == 3 and out[2].split()[0] == b_id, out
    # Without the Role: a clear refusal, exit 1.
    plain = stack.cluster.sa_kubeconfig("nrbc-proxy", NAMESPACE, str(tmp_path / "p.kubeconfig"))
    r = nrbc_usage(stack, plain)
    assert r.returncode == 1 and "403" in r.stderr and "nrbc-usage" in r.stderr, r.stderr
    stack.wait_clean()


def test_two_replicas_count_once_across_a_failover(stack, tmp_path):
    """The shipped controller runs two replicas: only the leader counts,
    and a failover neither loses nor repeats a session."""
    from conftest import free_port
    from stack import Role
    c_id = identity_of(stack.keys["user-key-3"] + ".pub")
    first = stack.controller
    port = free_port()
    overrides = [o for o in first.overrides if not o.startswith("--health-port=")]
    second = Role(stack, stack.deployment("nrbc-controller"),
                  overrides + ["--health-port=%d" % port])
    second.health_port = port
    second.log_path = os.path.join(stack.dir, "nrbc-controller-2.log")
    second.start()
    try:
        wait_for(second.ready, 30, what="the second replica's /readyz")

        def leader():
            ms = [(r, r.metrics().get("nrbc_controller_leader")) for r in (first, second)]
            lead = [r for r, v in ms if v == 1]
            return len(lead) == 1 and lead[0]
        lead = wait_for(leader, 30, what="one leader of two replicas")
        client = NixClient(tmp_path / "c")
        os.makedirs(client.dir, exist_ok=True)
        client.build("graph.nix", builders=stack.builders("ssh-ng"), sshopts=stack.sshopts(2),
                     args={"salt": salt(), "n": 3})

        def served(n):
            s = usages(stack).get(c_id, {}).get("status", {})
            return s.get("sessionsServed") == n and s
        wait_for(lambda: served(4), 30, what="4 sessions of key 3 counted")
        # The leader goes (SIGTERM: it gives the Lease up); the other leads.
        assert lead.stop() == 0
        other = second if lead is first else first
        wait_for(lambda: other.metrics().get("nrbc_controller_leader") == 1, 30,
                 what="the other replica to lead")
        client.build("simple.nix", builders=stack.builders("ssh-ng"), sshopts=stack.sshopts(2),
                     args={"salt": salt()})
        wait_for(lambda: served(5), 30, what="the 5th session counted by the new leader")
        # Nothing counted twice (the standby saw every session end too).
        time.sleep(4)
        s = usages(stack)[c_id]["status"]
        assert s["sessionsServed"] == 5 and s["sessionsFailed"] == 0, s
        # Both replicas show the same numbers in /metrics.
        m = other.metrics()
        assert m['nrbc_usage_sessions_total{identity="%s",outcome="served"}' % c_id] == 5, m
        if lead is first:
            first.start()
            wait_for(first.ready, 30, what="the first replica back")
    finally:
        second.stop()
        if first.proc.poll() is not None:
            first.start()
            wait_for(first.ready, 30, what="the first replica back")


def quota_refuses_then_serves(stack, tmp_path, user, source):
    """The key's 4 sessions on its one builder go on; a fifth, which would
    need a second builder, is refused with one line naming the quota's
    source; once a session ends the next is served (a real build)."""
    ident = identity_of(stack.keys[stack.USERS[user]] + ".pub")
    before = usages(stack).get(ident, {}).get("status", {})
    ssh = ["ssh"] + stack.sshopts(user).split() + ["nixbld@" + stack.proxy_address]
    held = []
    try:
        for _ in range(4):
            held.append(subprocess.Popen(ssh + ["nix-store", "--serve", "--write"],
                                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE))
        wait_for(lambda: sum(1 for r in stack.requests() if r["spec"]["identity"] == ident and
                             (r.get("status") or {}).get("phase") == "Running") == 4, 30,
                 what="4 sessions of the key running")
        seen = [r for r in stack.requests() if r["spec"]["identity"] == ident]
        r = subprocess.run(ssh + ["nix-store", "--serve", "--write"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        print("refused:", r.stderr.strip())
        assert r.returncode == 1, (r.returncode, r.stderr)
        lines = [l for l in r.stderr.splitlines() if "quota" in l]
        assert len(lines) == 1, r.stderr
        assert "at most 1 builder at once" in lines[0], lines
        assert source in lines[0] and "until one of its sessions ends" in lines[0], lines
        # The held sessions were not touched.
        assert all(p.poll() is None for p in held)
        held[0].stdin.close()
        held[0].wait(30)
        client = NixClient(tmp_path / ("q%d" % user))
        os.makedirs(client.dir, exist_ok=True)
        client.build("simple.nix", builders=stack.builders("ssh-ng", max_jobs=1),
                     sshopts=stack.sshopts(user), args={"salt": salt()})
    finally:
        for p in held:
            if p.poll() is None:
                p.stdin.close()
                p.wait(30)
    after = wait_for(lambda: (lambda s: s.get("sessionsFailed", 0) > before.get(
        "sessionsFailed", 0) and s)(usages(stack)[ident].get("status", {})), 30,
        what="the refused session counted as failed")
    assert after["sessionsServed"] > before.get("sessionsServed", 0), (before, after)
    return seen


def test_builder_quota_refuses_with_one_line_then_serves_again(stack, tmp_path):
    """An identity's quota of builders at once (its NixUsage's
    spec.maxBuilders, the admin's override of --quota-max-builders): the
    sessions its builder holds go on, the one that would need another
    builder is refused with one line saying which quota and until when,
    and once a session ends the next is served."""
    a_id = identity_of(stack.keys["user-key"] + ".pub")
    path = USAGES + "/" + a_id
    st, body = stack.cluster.api("GET", path)
    if st == 404:
        st, body = stack.cluster.api("POST", USAGES, {
            "apiVersion": "nix.io/v1alpha1", "kind": "NixUsage",
            "metadata": {"name": a_id}, "spec": {"identity": a_id}})
        assert st == 201, body
    st, body = stack.cluster.api("PATCH", path, json.dumps({"spec": {"maxBuilders": 1}}).encode(),
                                 headers={"Content-Type": "application/merge-patch+json"})
    assert st == 200, body
    try:
        seen = quota_refuses_then_serves(stack, tmp_path, 0, "spec.maxBuilders")
        # This key has no option of its own: its requests carry none.
        assert seen and all("maxBuilders" not in r["spec"] for r in seen), seen
    finally:
        st, body = stack.cluster.api("PATCH", path, json.dumps(
            {"spec": {"maxBuilders": None}}).encode(),
            headers={"Content-Type": "application/merge-patch+json"})
        assert st == 200, body
    stack.wait_clean()


def test_builder_quota_from_the_keys_authorized_keys_option(stack, tmp_path):
    """The same quota set per key where its other limits are: the
    authorized_keys option nrbc-max-builders=1, which the proxy writes into
    each request (spec.maxBuilders) for the controller."""
    seen = quota_refuses_then_serves(stack, tmp_path, 1,
                                     "authorized_keys option nrbc-max-builders")
    assert seen and all(r["spec"].get("maxBuilders") == 1 for r in seen), seen
    stack.wait_clean()
