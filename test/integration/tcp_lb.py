"""A TCP load balancer in front of a Service, as a cloud's (or kube-proxy)
would be: each new connection goes to one of the Service's ready endpoints
(round robin); connections already made stay with their endpoint until
either side closes. So a rolling update behind it looks to clients as it
would on a cluster: new connections reach the pods that are ready, a
terminating pod keeps the connections it has.

The endpoints are computed as the EndpointSlice controller does (pods the
Service's selector matches that are Ready and not terminating) from the
pods themselves: the test node's pods have loopback addresses, which the
API server refuses in EndpointSlices, so the controller cannot publish
them here."""

import itertools
import select
import socket
import threading
import time


class TcpLoadBalancer:
    def __init__(self, cluster, namespace, service, port_name=None, address="127.0.0.1"):
        self.cluster = cluster
        self.namespace = namespace
        self.service = service
        self.port_name = port_name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, 0))
        self.sock.listen(128)
        self.address, self.port = self.sock.getsockname()
        self.backends = []          # [(ip, port)] ready now
        self.served = {}            # (ip, port) -> connections sent there
        self._rr = itertools.count()
        self._stop = threading.Event()
        self._threads = []

    def __enter__(self):
        self.refresh()
        for target in (self._follow, self._accept):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.sock.close()
        for t in self._threads:
            t.join(5)

    def refresh(self):
        st, svc = self.cluster.api("GET", "/api/v1/namespaces/%s/services/%s" % (
            self.namespace, self.service))
        if st != 200:
            return
        spec = svc["spec"]
        selector = ",".join("%s%%3D%s" % (k.replace("/", "%2F"), v)
                            for k, v in sorted(spec["selector"].items()))
        st, body = self.cluster.api("GET", "/api/v1/namespaces/%s/pods?labelSelector=%s" % (
            self.namespace, selector))
        if st != 200:
            return
        (sport,) = [p for p in spec["ports"]
                    if self.port_name is None or p.get("name") == self.port_name]
        ready = []
        for pod in body["items"]:
            st = pod.get("status") or {}
            cond = {c["type"]: c["status"] for c in st.get("conditions") or []}
            if pod["metadata"].get("deletionTimestamp") or cond.get("Ready") != "True" \
                    or not st.get("podIP"):
                continue
            port = sport.get("targetPort", sport["port"])
            if not isinstance(port, int):
                named = [cp["containerPort"] for c in pod["spec"]["containers"]
                         for cp in c.get("ports") or [] if cp.get("name") == port]
                if not named:
                    continue
                port = named[0]
            ready.append((st["podIP"], port))
        self.backends = sorted(ready)

    def _follow(self):
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:   # an API hiccup: keep the last list
                pass
            self._stop.wait(0.5)

    def _accept(self):
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            backends = list(self.backends)
            if not backends:
                client.close()      # no ready endpoint: refused, as an LB does
                continue
            target = backends[next(self._rr) % len(backends)]
            self.served[target] = self.served.get(target, 0) + 1
            threading.Thread(target=self._pipe, args=(client, target), daemon=True).start()

    @staticmethod
    def _pipe(client, target):
        try:
            upstream = socket.create_connection(target, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        socks = [client, upstream]
        peer = {client: upstream, upstream: client}
        open_ = set(socks)
        try:
            while open_:
                readable, _, _ = select.select(list(open_), [], [], 1.0)
                for s in readable:
                    data = s.recv(65536)
                    if data:
                        peer[s].sendall(data)
                    else:
                        # Half-close: pass the EOF on, keep the other way.
                        open_.discard(s)
                        try:
                            peer[s].shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()
