"""A signed Nix binary cache on the loopback test network, and the builder
nix.conf the tests give pods.

The shipped nix.conf (manifests/nix-config.yaml) substitutes from
https://cache.nixos.org. Tests never reach the internet: every test stack
rewrites the ConfigMap's `substituters` (and `trusted-public-keys`) to an
empty list or to a BinaryCache served here on a 127.x address.

BinaryCache: `nix copy --to file://DIR?secret-key=...` of store paths (so
they are signed with a test key made by `nix-store
--generate-binary-cache-key`), served over HTTP by Python's http.server in
a process of its own on 127.77.N.1 or another address given (stop() and start() again make it
unreachable and back); every request it serves is logged, so a test can see
which NARs were fetched.
"""

import collections
import os
import re
import socket
import subprocess
import sys

from conftest import free_port, wait_for

NIXOS_CACHE = "https://cache.nixos.org"
NIXOS_CACHE_KEY = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
CACHE_ADDRESS = "127.77.%d.1" % (1 + os.getpid() % 250)


def set_nix_conf(text, settings):
    """nix.conf `text` with each key of `settings` set to its value: the
    first line of a key replaced, later ones dropped, missing ones added."""
    out, done = [], set()
    for line in text.splitlines():
        m = re.match(r"\s*([A-Za-z0-9-]+)\s*=", line)
        if m and m.group(1) in settings:
            k = m.group(1)
            if k not in done:
                out.append(("%s = %s" % (k, settings[k])).rstrip())
                done.add(k)
            continue
        out.append(line)
    out += [("%s = %s" % (k, v)).rstrip() for k, v in settings.items() if k not in done]
    return "\n".join(out) + "\n"


def nix_conf_settings(text):
    """{key: value} of a nix.conf text (last one wins, as in Nix)."""
    got = {}
    for line in text.splitlines():
        m = re.match(r"\s*([A-Za-z0-9-]+)\s*=\s*(.*?)\s*$", line)
        if m:
            got[m.group(1)] = m.group(2)
    return got


def builders_nix_conf(text, cache=None):
    """The builders' nix.conf of the tests: the shipped one with its
    substituters replaced by `cache` (a BinaryCache) or by none at all, so
    no builder ever tries the public cache."""
    text = "".join(line + "\n" for line in text.splitlines()
                   if not re.match(r"\s*extra-(substituters|trusted-public-keys)\s*=", line))
    conf = set_nix_conf(text, {
        "substituters": cache.url if cache else "",
        "trusted-public-keys": cache.public_key if cache else "",
    })
    assert "cache.nixos.org" not in conf, conf
    return conf


# What the builders' nix.conf needs of a cache.
CacheRef = collections.namedtuple("CacheRef", "url public_key")


class BinaryCache:
    def __init__(self, workdir, name="nrbc-test-cache-1", address=CACHE_ADDRESS):
        """address: where it listens (a real node's pods reach only the
        node's gateway, not 127.77.N.1)."""
        self.dir = os.path.join(str(workdir), "binary-cache")
        self.nar_dir = os.path.join(self.dir, "files")
        os.makedirs(self.nar_dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.secret_key = os.path.join(self.dir, "secret-key")
        pub = os.path.join(self.dir, "public-key")
        if not os.path.exists(self.secret_key):
            subprocess.run(["nix-store", "--generate-binary-cache-key", name,
                            self.secret_key, pub], check=True)
        self.public_key = open(pub).read().strip()
        self.log_path = os.path.join(self.dir, "http.log")
        self.address = address
        self.port = None
        self.proc = None

    @property
    def url(self):
        return "http://%s:%d" % (self.address, self.port)

    def add(self, store, paths):
        """Copies `paths` with their closures from the (chroot) store
        directory `store` into the cache, signed with its key."""
        subprocess.run(["nix", "copy", "--store", store, "--to",
                        "file://%s?secret-key=%s&compression=zstd" % (self.nar_dir,
                                                                       self.secret_key)]
                       + list(paths), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)

    def start(self):
        if self.port is None:
            self.port = free_port(self.address)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", self.address,
             "--directory", self.nar_dir, str(self.port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()

        def answers():
            assert self.proc.poll() is None, open(self.log_path).read()
            try:
                socket.create_connection((self.address, self.port), 1).close()
                return True
            except OSError:
                return False
        wait_for(answers, 10, what="binary cache HTTP server on %s" % self.url)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def unreachable(self):
        """The same cache (URL host and key) on a port nothing listens on:
        connections are refused, as when the cache is down."""
        return CacheRef("http://%s:%d" % (self.address, free_port(self.address)),
                        self.public_key)

    def served(self, what="/nar/"):
        """Request lines served with status 200 whose path starts with `what`."""
        try:
            text = open(self.log_path, errors="replace").read()
        except OSError:
            return []
        return re.findall(r'"GET (%s\S*) HTTP/1\.[01]" 200' % re.escape(what), text)
