"""The two places a benchmark can run nrbc, started the same way:

  test kubelet  controller and proxy as host processes (stack.Stack), builder
                pods as host processes (test/kubelet/kubelet.py)
  real node     the shipped Deployments and builder pods as containers on a
                real kubelet + containerd (real_stack.RealStack)

Both are installed from manifests/ with the same builder idle timeout; a
warm pool size other than the shipped one is set on the controller's
arguments before it starts."""

import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "test", "integration"))

import conftest  # noqa: E402
from real_stack import RealStack  # noqa: E402
from stack import NAMESPACE, Stack  # noqa: E402


def _pool_arg(args, size):
    return ["--warm-pool-size=%d" % size if a.startswith("--warm-pool-size=") else a
            for a in args]


class _RealStack(RealStack):
    # Class attributes: RealStack.__init__ already calls controller_args().
    warm_pool_size = None
    sandbox = True

    def controller_args(self):
        args = super().controller_args()
        if not self.sandbox:
            args = args + ["--builder-sandbox=false"]
        return args if self.warm_pool_size is None else _pool_arg(args, self.warm_pool_size)


class Substrate:
    def __init__(self, real_node, nrbc, work, builder_idle_timeout, warm_pool_size=None,
                 sandbox=True, proxy_args=()):
        """sandbox: on the real node, builders sandbox builds (as shipped);
        the test kubelet's never do. proxy_args: added to the proxy's
        arguments (real node only)."""
        self.real_node = real_node
        self.name = "real node" if real_node else "test kubelet"
        if real_node and not sandbox:
            self.name += ", no sandbox"
        self.cluster = self.kubelet = self.stack = None
        bindir = os.environ.get("NRBC_CLUSTER_BIN") or conftest.cluster_mod.build_binaries()
        conftest.HostNix().prepare()      # the Nix client's settings, either way
        if real_node:
            self.cluster = conftest.cluster_mod.Cluster(bindir, real_node=True)
            # Short: containerd's socket path must fit a unix socket address.
            self.cluster.start(tempfile.mkdtemp(prefix="nrbc-rn-", dir="/tmp"))
            conftest.load_images(self.cluster)
            api_port = int(self.cluster.server.rsplit(":", 1)[1])
            _RealStack.warm_pool_size = warm_pool_size
            _RealStack.sandbox = sandbox
            _RealStack.proxy_extra_args = tuple(proxy_args)
            self.stack = _RealStack(self.cluster, work, self.cluster.node.gateway, api_port,
                                    builder_idle_timeout=builder_idle_timeout)
            self.stack.install().start()
        else:
            self.cluster = conftest.cluster_mod.Cluster(bindir)
            self.cluster.start(os.path.join(work, "cluster"))
            self.kubelet = conftest.KubeletProc(self.cluster).start()
            self.stack = Stack(self.cluster, self.kubelet, nrbc, work,
                               builder_idle_timeout=builder_idle_timeout).install()
            if warm_pool_size is not None:
                (c,) = self.stack.deployment("nrbc-controller")["spec"]["template"][
                    "spec"]["containers"]
                c["args"] = _pool_arg(c["args"], warm_pool_size)
            self.stack.start()

    def proxy_log(self):
        if not self.real_node:
            return self.stack.proxy.log()
        # Two proxy replicas: the log of the one the clients connect to
        # (`logs deployment/…` would pick either).
        (pod,) = [p for p in self.stack.pods("nrbc-proxy")
                  if p["status"].get("podIP") == self.stack.proxy_address]
        return self.cluster.kubectl("-n", NAMESPACE, "logs", pod["metadata"]["name"],
                                    "--tail=-1").stdout

    def builder_pod(self, name):
        """A builder pod made by hand, Running, that no controller manages:
        (its IP, the ssh options and the builders line for Nix to reach it
        directly with the builders' key). On the test kubelet it is
        conftest's builder pod; on the real node a copy of the spec of a
        pod the controller made (same image, securityContext, resources,
        probes), so direct and nrbc build in the same kind of container."""
        s = self.stack
        if self.real_node:
            conftest.wait_for(lambda: any(conftest.pod_ready(p) for p in s.pods("nrbc-builder")),
                              180, what="a Ready builder pod to copy")
            model = next(p for p in s.pods("nrbc-builder") if conftest.pod_ready(p))
            # The copy mounts the model's own host key (each builder has one).
            host_key = model["metadata"]["annotations"]["nix.io/host-key"]
            spec = dict(model["spec"])
            spec.pop("nodeName", None)
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": name, "namespace": NAMESPACE,
                                "labels": {"app": name}},   # not a builder to nrbc
                   "spec": spec}
        else:
            pod = conftest.builder_pod(name, NAMESPACE, secret="nix-builder-ssh-keys",
                                       configmap="nix-config")
            host_key = open(s.keys["host-key"] + ".pub").read().strip()
        self.cluster.apply(json.dumps(pod))
        pod = conftest.wait_pod(self.cluster, NAMESPACE, name, conftest.pod_ready, 180)
        ip = pod["status"]["podIP"]
        kh = os.path.join(s.dir, name + "_known_hosts")
        with open(kh, "w") as f:
            f.write("%s %s\n" % (ip, host_key))
        return (ip, conftest.NixClient.sshopts(22, s.keys["builder-key"], kh),
                conftest.NixClient.builders(ip, scheme="ssh-ng", max_jobs=4))

    def stop(self):
        try:
            if self.stack:
                self.stack.stop()
        finally:
            if self.kubelet:
                self.kubelet.stop()
            if self.cluster:
                self.cluster.stop()
                if self.real_node and self.cluster.workdir:
                    shutil.rmtree(self.cluster.workdir, ignore_errors=True)
