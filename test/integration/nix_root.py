"""A Nix client from another Debian release: the root that
test/images/nix-client-root.sh made (Debian 13: Nix 2.26, OpenSSH 10),
run as a user would run an installed Nix, in a mount namespace of its own
with chroot. The root is the shared cache and stays read-only; the test's
directory is bound at /work (client store, keys, home), the test's Nix files
at /exprs (read-only), /proc and /dev are bound, /tmp is a tmpfs, and the
network is the host's (the proxy is on a loopback or pod address).

    client = ChrootNix(root, tmp_path)
    b = client.build("graph.nix", builders=..., sshopts=client.sshopts(...))
    b.out, client.read(b.out)   # as conftest.NixClient
"""

import os
import shutil
import subprocess
import time

from conftest import NIX_DIR, REPO, NixBuild

ROOT_SCRIPT = os.path.join(REPO, "test", "images", "nix-client-root.sh")

# Runs "$@" chrooted into $1 with $2 at /work and $3 at /exprs; only inside
# this process's own mount namespace (unshare --propagation private), so
# nothing is mounted on the host and nothing is left when it exits.
_ENTER = r"""
set -eu
r=$1 w=$2 e=$3
shift 3
mount --bind "$r" "$r"
mount -o remount,bind,ro "$r"
mount -t proc proc "$r/proc"
mount --rbind /dev "$r/dev"
mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
mount --bind "$w" "$r/work"
mount --bind "$e" "$r/exprs"
mount -o remount,bind,ro "$r/exprs"
exec chroot "$r" "$@"
"""


def root_path():
    """The cached root (test/setup makes it); fails if missing or stale."""
    r = subprocess.run([ROOT_SCRIPT, "--check"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    assert r.returncode == 0, "Nix client root missing or stale: run test/setup\n" + r.stderr
    return r.stdout.strip().splitlines()[-1]


class ChrootNix:
    """conftest.NixClient's build/read for the Nix in `root`, on a client
    store at <dir>/client-store (/work/client-store inside)."""

    def __init__(self, root, d):
        self.root = root
        self.dir = str(d)
        self.store = os.path.join(self.dir, "client-store")
        os.makedirs(os.path.join(self.dir, "home"), exist_ok=True)

    # -- paths as the client sees them
    def inside(self, host_path):
        """The chroot's name of a file under self.dir."""
        rel = os.path.relpath(host_path, self.dir)
        assert not rel.startswith(".."), host_path
        return "/work/" + rel

    def import_file(self, path, name=None):
        """Copies a host file (a key, known_hosts) into /work; returns its
        name inside."""
        dst = os.path.join(self.dir, name or os.path.basename(path))
        shutil.copyfile(path, dst)
        os.chmod(dst, 0o600)
        return self.inside(dst)

    def sshopts(self, port, key, known_hosts):
        return ("-F /dev/null -p %d -i %s -o IdentitiesOnly=yes -o BatchMode=yes "
                "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o ConnectTimeout=20"
                % (port, self.import_file(key, "id_client"),
                   self.import_file(known_hosts, "known_hosts")))

    def run(self, argv, sshopts=None, timeout=600):
        env = {"PATH": "/usr/bin:/bin", "HOME": "/work/home", "USER": "root",
               "LANG": "C.UTF-8",
               # A root's store outside /nix builds nothing here (max-jobs
               # 0); no build users, no substituters, no registry look-ups.
               "NIX_CONFIG": "experimental-features = nix-command\n"
                             "build-users-group =\nsubstituters =\n"}
        if sshopts is not None:
            env["NIX_SSHOPTS"] = sshopts
        full = ["unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", _ENTER, "sh", self.root, self.dir, NIX_DIR,
                "/usr/bin/env", "-i"] + ["%s=%s" % kv for kv in env.items()] + list(argv)
        return subprocess.run(full, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=timeout)

    def version(self):
        r = self.run(["nix-build", "--version"])
        assert r.returncode == 0, r.stderr
        return r.stdout.split()[-1]

    def build(self, expr, builders, sshopts, args=None, check=True, timeout=600):
        """nix-build /exprs/<expr> on the client store, every derivation on
        `builders` (max-jobs 0)."""
        argv = ["nix-build", "/exprs/" + expr, "--no-out-link",
                "--store", "/work/client-store", "--max-jobs", "0",
                "--option", "builders-use-substitutes", "false", "--builders", builders]
        argv += _args(args)
        t0 = time.monotonic()
        p = self.run(argv, sshopts=sshopts, timeout=timeout)
        b = NixBuild(p, self.store, time.monotonic() - t0)
        if check:
            assert p.returncode == 0, "nix-build (chroot) failed (%d):\n%s" % (
                p.returncode, p.stderr)
        return b

    def read(self, path):
        return open(os.path.join(self.store, path.lstrip("/")), "rb").read()

    def closure(self, path):
        r = self.run(["nix-store", "--store", "/work/client-store", "-qR", path])
        assert r.returncode == 0, r.stderr
        return r.stdout.split()


def _args(args):
    out = []
    for k, v in (args or {}).items():
        out += ["--arg", k, str(v)] if isinstance(v, int) else ["--argstr", k, str(v)]
    return out
