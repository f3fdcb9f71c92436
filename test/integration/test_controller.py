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
from controller_fixtures import (CONFIGMAP, IMAGE, REMOTE_PORT, SECRET, Controller, builder_pods,
                                 create_nbr, events_for, get_nbr, install_config,
                                 install_rbac, phase_is, set_nbr_status, wait_event,
                                 wait_nbr)


@pytest.fixture
def setup(cluster, kubelet, namespace, ssh_keys):
    install_rbac(cluster, namespace)
    install_config(cluster, namespace, ssh_keys)
    return {"cluster": cluster, "ns": namespace, "keys": ssh_keys, "kubelet": kubelet}


@pytest.fixture
def controllers(nrbc_bin, cluster, namespace, tmp_path):
    made = []

    def make(name="controller"):
        c = Controller(nrbc_bin, cluster, namespace, tmp_path, name)
        made.append(c)
        return c
    yield make
    for c in made:
        c.stop()
        if os.environ.get("NRBC_SHOW_CONTROLLER_LOG") == "1":
            print("---- %s log ----\n%s" % (c.name, c.log()))


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
    created = create_nbr(cluster, ns, "build-1", timeoutSeconds=600,
                         nodeSelector={"kubernetes.io/arch": "amd64"},
                         resources={"requests": {"memory": "64Mi"}})
    obj = wait_nbr(cluster, ns, "build-1", phase_is("Running", "Failed"), 30)
    st = obj["status"]
    assert st["phase"] == "Running", st
    assert st["podName"] == "nix-builder-build-1"
    assert st["reason"] == "BuilderReady"
    assert st["startTime"]
    assert st["observedGeneration"] == created["metadata"]["generation"]
    assert cond(obj, "Ready")["status"] == "True"
    assert cond(obj, "BuilderScheduled")["status"] == "True"

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
    assert vols["ssh-keys"]["secret"]["secretName"] == SECRET
    assert [i["key"] for i in vols["ssh-keys"]["secret"]["items"]] == ["public", "host-key"]
    assert vols["nix-config"]["configMap"]["name"] == CONFIGMAP
    # The shared private key never reaches the builder's files.
    root = os.path.join(setup["kubelet"].pod_dir(meta["uid"]), "root")
    assert not os.path.exists(os.path.join(root, "etc/nrbc/ssh/private"))
    assert open(os.path.join(root, "etc/nrbc/ssh/public")).read() == keys.public_text

    # The builder is usable with the shared key, and its host key verifies.
    r = ssh(keys, st["podIP"], "echo", "builder-ok")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "builder-ok"

    reasons = [e["reason"] for e in events_for(cluster, ns, "build-1")]
    assert "PodCreated" in reasons and "BuilderReady" in reasons, reasons
    m = controller.metrics()
    assert m["nrbc_controller_pods_created_total"] == 1
    assert m['nrbc_controller_phase_transitions_total{phase="Running"}'] == 1
    assert m["nrbc_controller_leader"] == 1
