"""Egress (issue 5): the per-sandbox proxy on 127.0.0.1:3128 inside the sandbox's netns, domain
policy from spec.network (also changed at runtime), address rules nothing overrides, the
request log, and the DNS resolver. Upstreams are local HTTP servers on 127.0.0.1 only, reached
through COVE_EGRESS_TEST_HOSTS on a server of this module's own.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import own_server, unique
from registry import registry_mirrors
from server import CoveServer, leftovers

SEEN: list[dict] = []  # requests the upstream received


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        self._answer()

    def do_POST(self) -> None:  # noqa: N802
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode(errors="replace"),
        }
        SEEN.append(seen)
        if self.path.startswith("/big"):
            data = b"x" * int(self.path.split("=")[-1])
        else:
            data = json.dumps({"upstream": "ok", **seen}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NAMES = ("allowed.test", "api.allowed.test", "deep.api.allowed.test", "bad.allowed.test")
NAMES += ("other.test",)


@pytest.fixture(scope="module")
def egress(upstream: int) -> Iterator[CoveServer]:
    mapping = [f"{n}=127.0.0.1:{upstream}" for n in NAMES]
    mapping.append(f"down.test=127.0.0.1:{_closed_port()}")
    with own_server(
        COVE_EGRESS_TEST_HOSTS=",".join(mapping), COVE_EGRESS_ALLOW_NETS=registry_mirrors()
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def eapi(egress: CoveServer):  # type: ignore[no-untyped-def]
    with egress.client("ws-a") as client:
        yield client


def create(api, network=None):  # type: ignore[no-untyped-def]
    name = unique("eg")
    spec: dict = {"runtime": {"memory": 256}}
    if network is not None:
        spec["network"] = network
    r = api.post("/v0/sandboxes", json={"metadata": {"name": name}, "spec": spec})
    assert r.status_code == 200, r.text
    return name, r.json()["metadata"]["url"]


def run(api, url, command):  # type: ignore[no-untyped-def]
    r = api.post(url + "/process", json={"command": command, "waitForCompletion": True})
    assert r.status_code == 200, r.text
    return r.json()


def status_of(api, url, target, *flags):  # type: ignore[no-untyped-def]
    """HTTP status curl got for target through the sandbox's proxy (000: no response)."""
    cmd = f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 --noproxy '' {' '.join(flags)}"
    cmd += f" '{target}'"
    return run(api, url, cmd)["stdout"]


def logs(api, name, **params):  # type: ignore[no-untyped-def]
    r = api.get(f"/v0/sandboxes/{name}/egress/logs", params=params)
    assert r.status_code == 200, r.text
    return r.json()


# -- set-up every sandbox gets ------------------------------------------------------------


def test_sandbox_env_resolv_conf_and_listeners(api):  # type: ignore[no-untyped-def]
    name, url = create(api)
    out = run(api, url, "env | sort; cat /etc/resolv.conf; cat /proc/net/tcp /proc/net/udp")
    text = out["stdout"]
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        assert f"{var}=http://127.0.0.1:3128\n" in text
    assert "NO_PROXY=localhost,127.0.0.1" in text
    assert "nameserver 127.0.0.1\n" in text
    assert "0100007F:0C38 00000000:0000 0A" in text  # 127.0.0.1:3128 LISTEN
    assert "0100007F:0035" in text  # 127.0.0.1:53 (udp)
    api.delete(f"/v0/sandboxes/{name}")


def test_program_ignoring_the_proxy_has_no_way_out(api):  # type: ignore[no-untyped-def]
    name, url = create(api)
    raw = (
        'python3 -c "import socket\ns=socket.socket()\ns.settimeout(3)\n'
        "try: s.connect(('1.1.1.1', 80)); print('connected')\n"
        "except OSError as e: print('errno', e.errno)\""
    )
    assert run(api, url, raw)["stdout"].strip() == "errno 101"  # ENETUNREACH: no route
    out = run(api, url, "curl -s --noproxy '*' --max-time 5 http://1.1.1.1/; echo rc=$?")
    assert out["stdout"].strip().endswith("rc=7")  # couldn't connect
    assert logs(api, name)["logs"] == []  # and nothing went through the proxy
    api.delete(f"/v0/sandboxes/{name}")


# -- address rules: refused whatever the policy -----------------------------------------


def test_private_loopback_link_local_and_host_addresses_refused(api, server):  # type: ignore[no-untyped-def]
    name, url = create(api)
    host_ip = _host_ip()
    targets = [
        f"http://127.0.0.1:{server.port}/health",  # cove itself on loopback
        f"http://localhost:{server.port}/health",  # a name resolving to loopback (rebinding)
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://[::ffff:127.0.0.1]/",
        f"http://{host_ip}:{server.port}/health",
    ]
    for target in targets:
        assert status_of(api, url, target) == "403", target
        assert status_of(api, url, target, "--proxytunnel") == "000", target  # CONNECT refused
    entries = logs(api, name, limit=1000)["logs"]
    assert len(entries) == 2 * len(targets)
    assert all(e["blocked"] and e["status"] == 403 for e in entries)
    assert "loopback" in entries[2]["blocked"]  # localhost: refused on its resolved address
    assert "host" in entries[-1]["blocked"] or "private" in entries[-1]["blocked"]
    api.delete(f"/v0/sandboxes/{name}")


def _host_ip() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the source address
        return s.getsockname()[0]


def test_unmapped_names_cannot_reach_loopback_even_with_test_hosts(eapi, egress):  # type: ignore[no-untyped-def]
    name, url = create(eapi)
    assert status_of(eapi, url, f"http://localhost:{egress.port}/health") == "403"
    assert status_of(eapi, url, f"http://127.0.0.1:{egress.port}/health") == "403"
    eapi.delete(f"/v0/sandboxes/{name}")


# -- forwarding, tunnels, log -----------------------------------------------------------


def test_plain_http_is_forwarded_and_logged(eapi):  # type: ignore[no-untyped-def]
    name, url = create(eapi)
    SEEN.clear()
    out = run(eapi, url, "curl -s --max-time 10 -H 'X-Mine: 1' http://allowed.test/hello?q=1")
    body = json.loads(out["stdout"])
    assert body["upstream"] == "ok" and body["path"] == "/hello?q=1"
    headers = SEEN[-1]["headers"]
    assert headers["host"] == "allowed.test" and headers["x-mine"] == "1"
    assert "proxy-connection" not in headers and len(headers["x-blaxel-request-id"]) == 32
    post = "curl -s --max-time 10 -d 'payload=42' http://allowed.test/form"
    assert json.loads(run(eapi, url, post)["stdout"])["body"] == "payload=42"
    report = logs(eapi, name)
    first, second = report["logs"]
    assert (first["method"], first["host"], first["port"], first["status"]) == (
        "GET",
        "allowed.test",
        80,
        200,
    )
    assert first["blocked"] is None and first["bytesIn"] > 0 and first["bytesOut"] > 0
    assert second["method"] == "POST" and second["status"] == 200
    assert report["requests"] == 2 and report["blocked"] == 0
    assert report["bytesIn"] == first["bytesIn"] + second["bytesIn"]
    assert report["bytesOut"] == first["bytesOut"] + second["bytesOut"]
    eapi.delete(f"/v0/sandboxes/{name}")


def test_connect_tunnel_and_byte_counters(eapi):  # type: ignore[no-untyped-def]
    name, url = create(eapi)
    out = run(eapi, url, "curl -s --max-time 20 -p http://allowed.test:443/big?n=1000000 | wc -c")
    assert out["stdout"].strip() == "1000000"
    entry = logs(eapi, name)["logs"][-1]
    assert (entry["method"], entry["host"], entry["port"], entry["status"]) == (
        "CONNECT",
        "allowed.test",
        443,
        "tunnel",
    )
    assert entry["bytesIn"] > 1000000 and entry["durationMs"] is not None
    eapi.delete(f"/v0/sandboxes/{name}")


def test_python_urllib_uses_the_proxy(eapi):  # type: ignore[no-untyped-def]
    name, url = create(eapi)
    code = "import urllib.request as u; print(u.urlopen('http://api.allowed.test/x').status)"
    assert run(eapi, url, f'python3 -c "{code}"')["stdout"] == "200\n"
    eapi.delete(f"/v0/sandboxes/{name}")


def test_unreachable_upstream_is_502_and_bad_requests_400(eapi):  # type: ignore[no-untyped-def]
    name, url = create(eapi)
    assert status_of(eapi, url, "http://down.test/") == "502"
    raw = (
        "python3 -c \"import socket\ns=socket.create_connection(('127.0.0.1',3128))\n"
        "s.sendall(b'GARBAGE\\r\\n\\r\\n')\nprint(s.recv(100).split(b' ')[1].decode())\""
    )
    assert run(eapi, url, raw)["stdout"] == "400\n"
    origin = raw.replace("GARBAGE", "GET / HTTP/1.1")
    assert run(eapi, url, origin)["stdout"] == "400\n"
    assert logs(eapi, name)["logs"][0]["status"] == 502
    eapi.delete(f"/v0/sandboxes/{name}")


# -- policy ---------------------------------------------------------------------------------


def test_allowed_and_forbidden_domains_with_wildcards(eapi):  # type: ignore[no-untyped-def]
    network = {
        "allowedDomains": ["allowed.test", "*.allowed.test"],
        "forbiddenDomains": ["bad.allowed.test"],
    }
    name, url = create(eapi, network)
    expected = {
        "allowed.test": "200",
        "api.allowed.test": "200",
        "deep.api.allowed.test": "200",
        "bad.allowed.test": "403",  # forbidden wins over the allowed wildcard
        "other.test": "403",  # not in allowedDomains
    }
    for host, code in expected.items():
        assert status_of(eapi, url, f"http://{host}/") == code, host
        tunnel = status_of(eapi, url, f"http://{host}/", "--proxytunnel")
        assert tunnel == (code if code == "200" else "000"), host
    blocked = [e for e in logs(eapi, name)["logs"] if e["blocked"]]
    assert len(blocked) == 4
    assert "forbiddenDomains" in blocked[0]["blocked"]
    assert "allowedDomains" in blocked[2]["blocked"]
    eapi.delete(f"/v0/sandboxes/{name}")


def test_wildcard_does_not_match_the_bare_domain(eapi):  # type: ignore[no-untyped-def]
    name, url = create(eapi, {"allowedDomains": ["*.allowed.test"]})
    assert status_of(eapi, url, "http://api.allowed.test/") == "200"
    assert status_of(eapi, url, "http://allowed.test/") == "403"
    eapi.delete(f"/v0/sandboxes/{name}")


def test_policy_changes_at_runtime_through_put(eapi):  # type: ignore[no-untyped-def]
    name, url = create(eapi, {"forbiddenDomains": ["other.test"]})
    assert status_of(eapi, url, "http://other.test/") == "403"
    record = eapi.get(f"/v0/sandboxes/{name}").json()
    record["spec"].pop("network")  # the SDK's update_network(None): omitted = cleared
    assert eapi.put(f"/v0/sandboxes/{name}", json=record).status_code == 200
    assert status_of(eapi, url, "http://other.test/") == "200"
    record["spec"]["network"] = {"proxy": {"allowedDomains": ["allowed.test"]}}
    r = eapi.put(f"/v0/sandboxes/{name}", json=record)
    assert r.status_code == 200 and r.json()["spec"]["network"]["proxy"]["allowedDomains"]
    assert status_of(eapi, url, "http://other.test/") == "403"
    assert status_of(eapi, url, "http://allowed.test/") == "200"
    eapi.delete(f"/v0/sandboxes/{name}")


def test_routing_secrets_are_never_returned(api):  # type: ignore[no-untyped-def]
    network = {
        "proxy": {
            "routing": [
                {
                    "destinations": ["api.example.com"],
                    "headers": {"Authorization": "Bearer {{SECRET:k}}"},
                    "secrets": {"k": "sk_live_top_secret"},
                }
            ]
        }
    }
    name, _ = create(api, network)
    for body in (api.get(f"/v0/sandboxes/{name}").text, api.get("/v0/sandboxes").text):
        assert "sk_live_top_secret" not in body
    rule = api.get(f"/v0/sandboxes/{name}").json()["spec"]["network"]["proxy"]["routing"][0]
    assert "secrets" not in rule and rule["destinations"] == ["api.example.com"]
    api.delete(f"/v0/sandboxes/{name}")


@pytest.mark.parametrize(
    "network",
    [
        "everything",
        {"allowedDomains": "example.com"},
        {"allowedDomains": [1]},
        {"forbiddenDomains": ["http://example.com/"]},
        {"allowedDomains": ["exa mple.com"]},
        {"proxy": []},
        {"proxy": {"bypass": "x"}},
        {"proxy": {"routing": [{"headers": []}]}},
    ],
)
def test_bad_network_shapes_are_400(api, network):  # type: ignore[no-untyped-def]
    body = {"metadata": {"name": unique("eg")}, "spec": {"network": network}}
    r = api.post("/v0/sandboxes", json=body)
    assert r.status_code == 400 and "spec.network" in r.json()["message"], r.text
    name, _ = create(api)
    record = api.get(f"/v0/sandboxes/{name}").json()
    record["spec"]["network"] = network
    r = api.put(f"/v0/sandboxes/{name}", json=record)
    assert r.status_code == 400 and "spec.network" in r.json()["message"], r.text
    api.delete(f"/v0/sandboxes/{name}")


def test_egress_logs_route_errors(api):  # type: ignore[no-untyped-def]
    assert api.get("/v0/sandboxes/nope-nope/egress/logs").status_code == 404
    name, _ = create(api)
    assert api.get(f"/v0/sandboxes/{name}/egress/logs?limit=x").status_code == 400
    assert api.get(f"/v0/sandboxes/{name}/egress/logs?limit=0").json()["logs"] == []
    api.delete(f"/v0/sandboxes/{name}")


# -- DNS ------------------------------------------------------------------------------------


def test_dns_answers_only_allowed_names(eapi):  # type: ignore[no-untyped-def]
    name, url = create(eapi, {"forbiddenDomains": ["other.test"]})
    lookup = (
        'python3 -c "import socket,sys\nfor n in sys.argv[1:]:\n'
        "  try: print(n, socket.getaddrinfo(n, 80, socket.AF_INET)[0][4][0])\n"
        "  except socket.gaierror as e: print(n, 'nxdomain')\" "
    )
    out = run(eapi, url, lookup + "allowed.test other.test")["stdout"].splitlines()
    assert out == ["allowed.test 192.0.2.1", "other.test nxdomain"]  # policy.TEST_HOST_…
    eapi.delete(f"/v0/sandboxes/{name}")


# -- the backend in-process: every path releases its sockets and tasks -----------------------


@pytest.fixture
def netns_pid() -> Iterator[int]:
    """A process in a fresh lo-only network namespace (like a sandbox's)."""
    import os
    import subprocess
    import time

    proc = subprocess.Popen(["unshare", "-n", "sh", "-c", "ip link set lo up && exec sleep 300"])
    deadline = time.monotonic() + 10
    while not os.readlink(f"/proc/{proc.pid}/exe").endswith("sleep"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert os.stat(f"/proc/{proc.pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
    yield proc.pid
    proc.kill()
    proc.wait()


def test_attach_detach_and_failures_leak_nothing(netns_pid, upstream):  # type: ignore[no-untyped-def]
    import asyncio
    import os

    from cove.domain.network import OPEN
    from cove.egress.base import EgressError
    from cove.egress.local import LocalEgress
    from cove.runtime.netns import socket_in_netns

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def through_proxy(request: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = await asyncio.to_thread(socket_in_netns, netns_pid)
        sock.connect(("127.0.0.1", 3128))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(request)
        return reader, writer

    async def main() -> None:
        egress = LocalEgress({"up.test": ("127.0.0.1", upstream)})
        before = fds()
        for _ in range(3):
            await egress.attach("k", netns_pid, OPEN)
            reader, writer = await through_proxy(b"CONNECT 10.0.0.1:80 HTTP/1.1\r\n\r\n")
            assert (await reader.readline()).startswith(b"HTTP/1.1 403")
            writer.close()
            await writer.wait_closed()
            # a tunnel left open is closed by detach
            reader, writer = await through_proxy(b"CONNECT up.test:443 HTTP/1.1\r\n\r\n")
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            await egress.detach("k")
            assert await asyncio.wait_for(reader.read(), 5) in (b"\r\n", b"")
            writer.close()
            await writer.wait_closed()
        await asyncio.sleep(0.1)  # the proxy side's transports close on the next iterations
        assert fds() == before
        report = egress.report("k", 10)
        assert report is None  # gone with the detach
        blocker = await asyncio.to_thread(socket_in_netns, netns_pid)
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAITs
        blocker.bind(("127.0.0.1", 3128))
        blocker.listen()
        with pytest.raises(EgressError):
            await egress.attach("k", netns_pid, OPEN)
        blocker.close()
        assert fds() == before
        with pytest.raises(EgressError, match="host's network namespace"):
            await egress.attach("k", os.getpid(), OPEN)  # never serve (or reroute) the host
        assert fds() == before
        await egress.close()

    asyncio.run(main())


# -- package managers through the proxy (the only test that leaves this host: the registry) ----


def test_npm_install_through_the_proxy(eapi):  # type: ignore[no-untyped-def]
    name, url = create(eapi, {"allowedDomains": ["registry.npmjs.org"]})
    # The tunnel is end to end: the sandbox verifies the registry with its trust bundle (the
    # host's CAs + cove's, tests/registry.py), the proxy never sees inside TLS.
    cmd = (
        "cd /tmp && npm init -y >/dev/null && "
        "npm install --no-audit --no-fund --no-update-notifier is-number@7.0.0 2>&1 && "
        "node -p \"require('/tmp/node_modules/is-number/package.json').version\""
    )
    out = run(eapi, url, cmd)
    assert out["exitCode"] == 0 and out["stdout"].endswith("\n7.0.0\n"), out
    entries = logs(eapi, name)["logs"]
    assert entries and all(e["host"] == "registry.npmjs.org" for e in entries)
    assert all(e["status"] == "tunnel" and e["blocked"] is None for e in entries), json.dumps(
        entries
    )
    eapi.delete(f"/v0/sandboxes/{name}")


def test_pip_install_through_the_proxy(eapi):  # type: ignore[no-untyped-def]
    name, url = create(eapi, {"allowedDomains": ["pypi.org", "files.pythonhosted.org"]})
    cmd = (
        "set -e; cd /tmp; python3 -m pip install -q --no-cache-dir --root-user-action=ignore "
        "--target /tmp/pkgs six==1.16.0; "
        "PYTHONPATH=/tmp/pkgs python3 -c 'import six; print(six.__version__)'"
    )
    out = run(eapi, url, cmd)
    assert out["exitCode"] == 0 and out["stdout"].endswith("1.16.0\n"), out
    entries = logs(eapi, name, limit=1000)["logs"]
    assert {e["host"] for e in entries} == {"pypi.org", "files.pythonhosted.org"}
    assert all(e["blocked"] is None for e in entries), json.dumps(entries)
    eapi.delete(f"/v0/sandboxes/{name}")


# -- pure parts: domain matching, DNS messages -------------------------------------------------


def test_domain_matching_rules() -> None:
    from cove.domain.network import NetworkPolicy, parse_network

    policy = parse_network(
        {
            "allowedDomains": ["Example.COM.", "*.example.org"],
            "forbiddenDomains": ["bad.example.org"],
            "proxy": {"allowedDomains": ["api.stripe.com"], "forbiddenDomains": ["*.evil.com"]},
        }
    )
    assert policy.allowed == ("example.com", "*.example.org", "api.stripe.com")
    assert policy.refusal("EXAMPLE.com.") is None
    assert policy.refusal("a.b.example.org") is None
    assert policy.refusal("example.org") is not None  # a wildcard needs a label in front
    assert policy.refusal("bad.example.org") is not None  # forbidden wins
    assert policy.refusal("api.stripe.com") is None
    assert policy.refusal("notexample.com") is not None
    assert NetworkPolicy(None, ("*.evil.com",)).refusal("x.evil.com") is not None
    assert NetworkPolicy(None, ("*.evil.com",)).refusal("anything.else") is None
    assert parse_network({"allowedDomains": []}).refusal("a.com") is not None  # empty: none
    assert parse_network({"forbiddenDomains": ["*"]}).refusal("a.com") is not None
    assert parse_network(None).refusal("a.com") is None


def test_dns_replies() -> None:
    import asyncio
    import struct

    from cove.domain.network import NetworkPolicy
    from cove.egress.dns import NOERROR, NXDOMAIN, DnsServer, Query
    from cove.egress.policy import Resolver

    def query(name: str, qtype: int) -> Query:
        labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
        head = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0)
        return Query(head + labels + b"\0" + struct.pack("!HH", qtype, 1))

    def parse(reply: bytes) -> tuple[int, int, bytes]:
        ident, flags, _, answers = struct.unpack("!HHHH", reply[:8])
        assert ident == 7 and flags & 0x8000
        return flags & 0xF, answers, reply[-4:]

    server = DnsServer(
        Resolver({"ok.test": ("127.0.0.1", 1)}), lambda: NetworkPolicy(None, ("no.test",))
    )

    async def main() -> None:
        rcode, answers, rdata = parse(await server.reply(query("ok.test", 1)))
        assert (rcode, answers, rdata) == (NOERROR, 1, bytes([192, 0, 2, 1]))
        assert parse(await server.reply(query("ok.test", 28)))[:2] == (NOERROR, 0)
        assert parse(await server.reply(query("ok.test", 15)))[:2] == (NOERROR, 0)  # MX
        assert parse(await server.reply(query("no.test", 1)))[:2] == (NXDOMAIN, 0)
        assert parse(await server.reply(query("no.test", 15)))[:2] == (NXDOMAIN, 0)

    asyncio.run(main())
    for bad in (b"", b"\0" * 11, struct.pack("!HHHHHH", 1, 0, 2, 0, 0, 0), b"\0" * 12 + b"\x40"):
        with pytest.raises(ValueError):
            Query(bad)


def test_proxy_comes_back_after_kill_9_and_restart(fresh_server):  # type: ignore[no-untyped-def]
    import signal

    fresh_server.start()
    with fresh_server.client() as api:
        name, url = create(api, {"forbiddenDomains": ["blocked.example"]})
        assert status_of(api, url, "http://blocked.example/") == "403"
    fresh_server.stop(signal.SIGKILL)
    fresh_server.start()
    with fresh_server.client() as api:
        assert api.get(f"/v0/sandboxes/{name}").json()["status"] == "DEPLOYED"
        assert status_of(api, url, "http://blocked.example/") == "403"  # policy restored too
        assert logs(api, name)["blocked"] == 1  # a new log since the restart
    assert fresh_server.stop() == 0
    assert leftovers(fresh_server.data_dir) == []


def test_sdk_create_with_network_and_update_network(sdk, api):  # type: ignore[no-untyped-def]
    from blaxel.core.sandbox.types import SandboxUpdateNetwork

    name = unique("egsdk")
    sb = sdk.SyncSandboxInstance.create(
        {"name": name, "memory": 256, "network": {"forbiddenDomains": ["blocked.example"]}}
    )
    assert sb.spec.network.forbidden_domains == ["blocked.example"]
    url = sb.metadata.url
    assert status_of(api, url, "http://blocked.example/") == "403"
    updated = sdk.SyncSandboxInstance.update_network(
        name, SandboxUpdateNetwork(network={"allowedDomains": ["only.example"]})
    )
    assert updated.spec.network.allowed_domains == ["only.example"]
    assert status_of(api, url, "http://blocked.example/") == "403"
    reasons = [e["blocked"] for e in logs(api, name)["logs"]]
    assert "forbiddenDomains" in reasons[0] and "not in allowedDomains" in reasons[1]
    sdk.SyncSandboxInstance.delete(name)


# -- transparent capture (COVE_EGRESS_TRANSPARENT=on) --------------------------------------------


@pytest.fixture(scope="module")
def tapi(upstream: int):  # type: ignore[no-untyped-def]
    mapping = ",".join(f"{n}=127.0.0.1:{upstream}" for n in NAMES)
    with (
        own_server(COVE_EGRESS_TEST_HOSTS=mapping, COVE_EGRESS_TRANSPARENT="on") as srv,
        srv.client("ws-a") as client,
    ):
        yield client


def test_transparent_capture_polices_programs_ignoring_the_proxy(tapi):  # type: ignore[no-untyped-def]
    name, url = create(tapi, {"forbiddenDomains": ["other.test"]})
    SEEN.clear()
    # name -> 192.0.2.1 from the sandbox's resolver -> redirected -> Host header -> upstream
    out = run(tapi, url, "curl -s --noproxy '*' --max-time 10 http://allowed.test/direct")
    assert json.loads(out["stdout"])["path"] == "/direct"
    assert status_of(tapi, url, "http://other.test/", "--noproxy '*'") == "000"  # NXDOMAIN
    assert status_of(tapi, url, "http://allowed.test/", "--noproxy ''") == "200"  # proxy too
    silent = (
        "python3 -c \"import socket\ns=socket.create_connection(('10.0.0.1', 80), timeout=5)\n"
        'print(repr(s.recv(10)))"'
    )
    assert run(tapi, url, silent)["stdout"] == "b''\n"  # private address: closed, unanswered
    # a Host header naming an allowed host reaches that host, never the address dialled
    lying = (
        "python3 -c \"import socket\ns=socket.create_connection(('10.0.0.1', 80), timeout=5)\n"
        "s.sendall(b'GET /lying HTTP/1.1\\r\\nHost: allowed.test\\r\\n\\r\\n')\n"
        'print(s.recv(12).decode())"'
    )
    assert run(tapi, url, lying)["stdout"] == "HTTP/1.1 200\n"
    forbidden = lying.replace("allowed.test", "other.test").replace(
        "s.recv(12).decode()", "s.recv(12)"
    )
    assert run(tapi, url, forbidden)["stdout"] == "b''\n"  # policy applies to the Host name
    tls = (
        "python3 -c \"import socket,ssl\ns=socket.create_connection(('api.allowed.test', 443))\n"
        "try: ssl.create_default_context().wrap_socket(s, server_hostname='api.allowed.test')\n"
        "except (ssl.SSLError, OSError) as e: print('tls failed as expected')\""
    )
    assert run(tapi, url, tls)["stdout"] == "tls failed as expected\n"  # upstream is plain HTTP
    entries = logs(tapi, name)["logs"]
    summary = [(e["method"], e["host"], e["port"], e["status"]) for e in entries]
    assert summary == [
        ("TCP", "allowed.test", 80, "tunnel"),
        ("GET", "allowed.test", 80, 200),
        ("TCP", "10.0.0.1", 80, 403),
        ("TCP", "allowed.test", 80, "tunnel"),
        ("TCP", "other.test", 80, 403),
        ("TCP", "api.allowed.test", 443, "tunnel"),  # the name from the TLS ClientHello's SNI
    ]
    assert SEEN[-1]["path"] == "/lying"
    tapi.delete(f"/v0/sandboxes/{name}")


def test_ipv6_forms_of_refused_ipv4_addresses_are_refused() -> None:
    """Mapped, 6to4 and NAT64 addresses are judged as the IPv4 address they carry."""
    from ipaddress import ip_address

    from cove.egress.policy import address_refusal

    for raw in ("::ffff:169.254.169.254", "2002:a9fe:a9fe::1", "64:ff9b::a9fe:a9fe"):
        assert address_refusal(ip_address(raw), set()) == "a link-local address", raw
    for raw in ("64:ff9b::7f00:1", "2002:7f00:1::1", "64:ff9b:1::7f00:1"):
        assert address_refusal(ip_address(raw), set()) == "a loopback address", raw
    assert address_refusal(ip_address("64:ff9b::a00:1"), set()) == "a private or reserved address"
    assert address_refusal(ip_address("64:ff9b::808:808"), set()) is None  # public 8.8.8.8
