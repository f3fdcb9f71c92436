"""What the Nix build benchmarks share: the maxJobs `nrbc client-config`
writes for the default class, and a watch of which builders served a
build."""

import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "test", "integration"))

from stack import NAMESPACE  # noqa: E402


def written_max_jobs(cluster):
    """(maxJobs, slots) of the default class's builders line, as
    client-config computes them from the nrbc-client ConfigMap."""
    st, cm = cluster.api("GET", "/api/v1/namespaces/%s/configmaps/nrbc-client" % NAMESPACE)
    assert st == 200, cm
    slots = int(cm["data"]["builder-slots"])
    return slots * int(cm["data"].get("builders-per-key", "1")), slots


class BuilderWatch(threading.Thread):
    """The NixBuilders that served requests while a build ran."""

    def __init__(self, stack):
        super().__init__()
        self.stack, self.seen, self.stop = stack, set(), threading.Event()

    def run(self):
        while not self.stop.is_set():
            for r in self.stack.requests():
                b = (r.get("status") or {}).get("builder")
                if b:
                    self.seen.add(b)
            time.sleep(0.2)
