"""What the Nix build benchmarks share: a timed build, the proxy's log
of pod waits, the maxJobs `nrbc client-config` writes for the default
class, and a watch of which builders served a build."""

import os
import re
import sys
import threading
import time
import uuid

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


def timed_build(client, expr, builders, sshopts, **args):
    """Seconds a nix-build of expr (with a fresh salt and args) took."""
    t0 = time.monotonic()
    client.build(expr, builders=builders, sshopts=sshopts,
                 args=dict(args, salt=uuid.uuid4().hex))
    return time.monotonic() - t0


def waits_ms(log_text):
    """Each session's wait for its builder, from the proxy's log."""
    return [int(m) for m in re.findall(r"ready after (\d+) ms", log_text)]
