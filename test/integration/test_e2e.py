"""End to end, as a user meets nrbc: `kubectl apply -k manifests`, the
controller and proxy running as the manifests say, and a real Nix client
building through the proxy. Afterwards nothing is left in the cluster."""

import pytest

from conftest import salt
from stack import Stack


@pytest.fixture(scope="module")
def stack(cluster, kubelet, nrbc_bin, tmp_path_factory):
    s = Stack(cluster, kubelet, nrbc_bin, tmp_path_factory.mktemp("stack"))
    s.install().start()
    yield s
    s.stop()


@pytest.mark.parametrize("scheme", ["ssh", "ssh-ng"])
def test_nix_build_through_nrbc(stack, nix_client, scheme):
    args = {"salt": salt()}
    remote = nix_client.build("simple.nix", builders=stack.builders(scheme),
                              sshopts=stack.sshopts(), args=args)
    local = nix_client.build_local("simple.nix", args=args)
    assert remote.out == local.out
    assert nix_client.has(remote.out)
    assert nix_client.read(remote.out) == nix_client.read(local.out, store=local.store)
    stack.wait_clean()
