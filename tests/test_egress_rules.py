"""Egress routing rules (issue 5): headers and JSON body fields with `{{SECRET:name}}` placeholders
injected by the proxy, HTTPS interception for exactly the hosts a rule must see inside (cove's CA
trusted through the standard variables), tunnels for every other host, bypass, scoping, secrets
write-only everywhere, the SDK's update_network keeping them, idle tunnels closed, counters.

Upstreams are local HTTP and HTTPS servers on 127.0.0.1 (their own test CA, trusted by cove's
proxy through COVE_EGRESS_TEST_CA), reached through COVE_EGRESS_TEST_HOSTS.
"""

from __future__ import annotations

import datetime
import json
import shlex
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import own_server, unique
from server import CoveServer

SECRET = f"sk_live_{uuid.uuid4().hex}"  # never typed into a sandbox, only into spec.secrets
OTHER_SECRET = f"sk_other_{uuid.uuid4().hex}"
SEEN: list[dict] = []  # what the upstreams received
HTTP_NAMES = ("api.http.test", "free.http.test", "bypass.http.test")
TLS_NAMES = ("secure.test", "tunnel.test")  # both in the upstream's certificate
IDLE_S = 2


class Upstream(BaseHTTPRequestHandler):
    """Records each request; answers with its path only (echoing headers back would hand an
    injected secret to the sandbox, which is the destination's doing, not the proxy's)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        self._answer()

    do_POST = do_PUT = do_GET  # noqa: N815

    def _answer(self) -> None:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._chunked()
        else:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        SEEN.append({"method": self.command, "path": self.path, "headers": headers, "body": body})
        data = json.dumps({"upstream": "ok", "path": self.path}).encode()
        if self.path.startswith("/big?n="):
            data = b"x" * int(self.path.split("=")[1])
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _chunked(self) -> bytes:
        body = b""
        while size := int(self.rfile.readline().strip(), 16):
            body += self.rfile.read(size)
            self.rfile.readline()
        self.rfile.readline()
        return body

    def log_message(self, *args: object) -> None:
        pass


class TlsServer(ThreadingHTTPServer):
    context: ssl.SSLContext

    def finish_request(self, request, client_address):  # type: ignore[no-untyped-def]
        try:  # the handshake runs in the request's own thread
            request = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):  # type: ignore[no-untyped-def]
        pass  # clients that give up (idle test, refused certificates) are expected here


def _certs(directory: Path) -> tuple[Path, Path]:
    """A test CA and a certificate for TLS_NAMES signed by it: (ca.pem, server.pem with key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "upstream test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), True
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TLS_NAMES[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in TLS_NAMES]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (directory / "server.pem").write_bytes(leaf.public_bytes(pem) + key_pem)
    return directory / "ca.pem", directory / "server.pem"


def _start(httpd: ThreadingHTTPServer) -> int:
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd.server_address[1]


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory) -> Iterator[tuple[int, int, Path]]:  # type: ignore[no-untyped-def]
    ca, server_pem = _certs(tmp_path_factory.mktemp("upstream-ca"))
    plain = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    tls = TlsServer(("127.0.0.1", 0), Upstream)
    tls.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.context.load_cert_chain(server_pem)
    yield _start(plain), _start(tls), ca
    for httpd in (plain, tls):
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def srv(upstreams) -> Iterator[CoveServer]:  # type: ignore[no-untyped-def]
    http_port, tls_port, ca = upstreams
    mapping = [f"{n}=127.0.0.1:{http_port}" for n in HTTP_NAMES]
    mapping += [f"{n}=127.0.0.1:{tls_port}" for n in (*TLS_NAMES, "wrong-name.test")]
    with own_server(
        COVE_EGRESS_TEST_HOSTS=",".join(mapping),
        COVE_EGRESS_TEST_CA=str(ca),
        COVE_EGRESS_IDLE_TIMEOUT=str(IDLE_S),
    ) as server:
        yield server


@pytest.fixture(scope="module")
def rapi(srv: CoveServer):  # type: ignore[no-untyped-def]
    with srv.client("ws-a") as client:
        yield client


def rule(destinations, headers=None, body=None, secrets=None):  # type: ignore[no-untyped-def]
    out: dict = {"destinations": destinations}
    for key, value in (("headers", headers), ("body", body), ("secrets", secrets)):
        if value is not None:
            out[key] = value
    return out


STRIPE_LIKE = rule(
    ["api.http.test", "secure.test"],
    headers={"Authorization": "Bearer {{SECRET:key}}", "X-Version": "2024-12-18"},
    body={"api_key": "{{SECRET:key}}"},
    secrets={"key": SECRET},
)


def create(api, routing, **proxy):  # type: ignore[no-untyped-def]
    name = unique("rules")
    network = {"proxy": {"routing": routing, **proxy}}
    spec = {"runtime": {"memory": 256}, "network": network}
    r = api.post("/v0/sandboxes", json={"metadata": {"name": name}, "spec": spec})
    assert r.status_code == 200, r.text
    assert SECRET not in r.text and OTHER_SECRET not in r.text
    return name, r.json()["metadata"]["url"]


def run(api, url, command):  # type: ignore[no-untyped-def]
    r = api.post(url + "/process", json={"command": command, "waitForCompletion": True})
    assert r.status_code == 200, r.text
    return r.json()


def logs(api, name):  # type: ignore[no-untyped-def]
    r = api.get(f"/v0/sandboxes/{name}/egress/logs")
    assert r.status_code == 200 and SECRET not in r.text, r.text
    return r.json()


def curl(api, url, target, *flags):  # type: ignore[no-untyped-def]
    out = run(api, url, f"curl -sS --max-time 15 {' '.join(flags)} '{target}'")
    return out


# -- injection ---------------------------------------------------------------------------------


def test_header_and_body_injection_over_plain_http(rapi):  # type: ignore[no-untyped-def]
    name, url = create(rapi, [STRIPE_LIKE])
    SEEN.clear()
    out = curl(rapi, url, "http://api.http.test/v1/charges", "-H 'X-Mine: a-{{SECRET:key}}-b'")
    assert json.loads(out["stdout"])["upstream"] == "ok", out
    got = SEEN[-1]["headers"]
    assert got["authorization"] == f"Bearer {SECRET}" and got["x-version"] == "2024-12-18"
    assert got["x-mine"] == f"a-{SECRET}-b"  # the sandbox's own placeholder, resolved
    assert SEEN[-1]["body"] == b""  # a GET gets no body fields
    # POST JSON: fields merged, the sandbox's own win; placeholders of its own resolved
    post = "-X POST -H 'Content-Type: application/json' "
    post += """-d '{"amount": 5, "note": "{{SECRET:key}}"}'"""
    curl(rapi, url, "http://api.http.test/v1/charges", post)
    assert json.loads(SEEN[-1]["body"]) == {"api_key": SECRET, "amount": 5, "note": SECRET}
    mine = "-X POST -H 'Content-Type: application/json' -d '{\"api_key\": \"mine\"}'"
    curl(rapi, url, "http://api.http.test/x", mine)
    assert json.loads(SEEN[-1]["body"]) == {"api_key": "mine"}
    curl(rapi, url, "http://api.http.test/x", "-X POST")  # no body at all: JSON made for it
    assert json.loads(SEEN[-1]["body"]) == {"api_key": SECRET}
    assert SEEN[-1]["headers"]["content-type"] == "application/json"
    # a user-sent header is never replaced by an injected one
    curl(rapi, url, "http://api.http.test/x", "-H 'Authorization: Basic mine'")
    assert SEEN[-1]["headers"]["authorization"] == "Basic mine"
    # chunked JSON bodies are read whole, merged, and sent with a length
    chunked = "-H 'Transfer-Encoding: chunked' -H 'Content-Type: application/json' -d '{\"n\": 1}'"
    curl(rapi, url, "http://api.http.test/x", chunked)
    assert json.loads(SEEN[-1]["body"]) == {"api_key": SECRET, "n": 1}
    entries = logs(rapi, name)["logs"]
    assert [e["status"] for e in entries] == [200] * 6
    assert all(len(e["requestId"]) == 32 for e in entries)
    assert SEEN[-1]["headers"]["x-blaxel-request-id"] == entries[-1]["requestId"]
    rapi.delete(f"/v0/sandboxes/{name}")


NODE_CONNECT = """
const http = require('http'), tls = require('tls'), proxy = new URL(process.env.HTTPS_PROXY);
http.request({host: proxy.hostname, port: proxy.port, method: 'CONNECT', path: 'secure.test:443'})
  .on('connect', (res, sock) => {
    const t = tls.connect({socket: sock, servername: 'secure.test'}, () =>
      t.write('GET /node HTTP/1.1\\r\\nHost: secure.test\\r\\nConnection: close\\r\\n\\r\\n'));
    let got = '';
    t.on('data', c => got += c).on('end', () => console.log(got.split('\\r\\n')[0]));
    t.on('error', e => console.log('ERR ' + e.message));
  }).end();
"""


def test_https_to_a_rule_host_is_intercepted_with_cove_ca(rapi):  # type: ignore[no-untyped-def]
    name, url = create(rapi, [STRIPE_LIKE])
    SEEN.clear()
    # curl trusts cove's CA through the variables every sandbox gets (no -k, no --cacert)
    json_post = "-H 'Content-Type: application/json' -d '{\"amount\": 7}'"
    out = curl(rapi, url, "https://secure.test/v1/charges", "-v", json_post)
    assert out["exitCode"] == 0, out
    assert json.loads(out["stdout"])["path"] == "/v1/charges"
    assert "issuer: O=cove; CN=cove egress CA" in out["stderr"]  # cove's CA, not upstream's
    assert "Bearer {{SECRET:key}}" not in out["stderr"] and SECRET not in out["stderr"]
    seen = SEEN[-1]
    assert seen["headers"]["authorization"] == f"Bearer {SECRET}"
    assert json.loads(seen["body"]) == {"api_key": SECRET, "amount": 7}
    # Python's urllib through HTTPS_PROXY, verifying with SSL_CERT_FILE
    code = (
        "import urllib.request as u; "
        "r = u.Request('https://secure.test/py', headers={'X-Mine': '{{SECRET:key}}'}); "
        "print(u.urlopen(r).status)"
    )
    assert run(rapi, url, f'python3 -c "{code}"')["stdout"] == "200\n"
    assert SEEN[-1]["headers"]["x-mine"] == SECRET
    assert SEEN[-1]["headers"]["authorization"] == f"Bearer {SECRET}"
    entries = logs(rapi, name)["logs"]
    assert [(e["method"], e["host"], e["port"], e["status"]) for e in entries] == [
        ("POST", "secure.test", 443, 200),
        ("GET", "secure.test", 443, 200),
    ]
    assert all(e["intercepted"] for e in entries)
    assert SEEN[-1]["headers"]["x-blaxel-request-id"] == entries[-1]["requestId"]
    # Node trusts cove's CA too (--use-openssl-ca; a CONNECT by hand: Node ignores the proxy vars)
    node = run(rapi, url, f"node -e {shlex.quote(NODE_CONNECT)}")
    assert node["stdout"].startswith("HTTP/1.1 200"), node
    assert (
        SEEN[-1]["path"] == "/node" and SEEN[-1]["headers"]["authorization"] == f"Bearer {SECRET}"
    )
    # a large answer arrives whole (the upstream ends TCP without a TLS close_notify)
    big = run(rapi, url, "curl -sS --max-time 60 https://secure.test/big?n=8000000 | wc -c")
    assert big["stdout"].strip() == "8000000", big
    # a client that does not trust cove's CA gets no answer, and the upstream no request
    SEEN.clear()
    untrusting = "env -u CURL_CA_BUNDLE -u SSL_CERT_FILE curl -s https://secure.test/"
    assert run(rapi, url, untrusting)["exitCode"] == 60  # the image's own CAs only
    assert SEEN == [] and logs(rapi, name)["logs"][-1]["status"] == "tls-failed"
    rapi.delete(f"/v0/sandboxes/{name}")


def test_https_without_a_rule_stays_tunnelled(rapi, upstreams):  # type: ignore[no-untyped-def]
    name, url = create(rapi, [STRIPE_LIKE])
    SEEN.clear()
    # the client sees the upstream's own certificate: cove's bundle does not vouch for it...
    refused = curl(rapi, url, "https://tunnel.test/t")
    assert refused["exitCode"] == 60 and SEEN == [], refused  # curl: peer cert not trusted
    # ...the upstream's CA does, end to end, and the proxy adds nothing inside
    ca = upstreams[2].read_text()
    assert rapi.put(url + "/filesystem//tmp/upstream-ca.pem", json={"content": ca}).is_success
    out = curl(rapi, url, "https://tunnel.test/t", "-v", "--cacert /tmp/upstream-ca.pem")
    assert out["exitCode"] == 0 and "CN=upstream test CA" in out["stderr"], out
    assert "x-blaxel-request-id" not in SEEN[-1]["headers"]
    assert "authorization" not in SEEN[-1]["headers"]
    entry = logs(rapi, name)["logs"][-1]
    assert (entry["method"], entry["status"], entry["intercepted"]) == ("CONNECT", "tunnel", False)
    rapi.delete(f"/v0/sandboxes/{name}")


def test_wrong_upstream_certificate_never_gets_the_secret(rapi):  # type: ignore[no-untyped-def]
    name, url = create(
        rapi, [rule(["wrong-name.test"], {"X-Key": "{{SECRET:k}}"}, None, {"k": SECRET})]
    )
    SEEN.clear()
    out = curl(rapi, url, "https://wrong-name.test/", "-w '%{http_code}'")
    assert out["exitCode"] != 0 and SEEN == []  # its certificate names other hosts
    entry = logs(rapi, name)["logs"][-1]
    assert entry["status"] == 502 and entry["intercepted"] is False
    rapi.delete(f"/v0/sandboxes/{name}")


def test_rules_are_scoped_and_bypass_is_untouched(rapi):  # type: ignore[no-untyped-def]
    routing = [
        rule(["api.http.test"], {"X-Key": "{{SECRET:a}}"}, None, {"a": SECRET}),
        rule(["*"], {"X-Global": "{{SECRET:b}}"}, None, {"b": OTHER_SECRET}),
    ]
    name, url = create(rapi, routing, bypass=["bypass.http.test"])
    SEEN.clear()
    curl(rapi, url, "http://api.http.test/", "-H 'X-Try: {{SECRET:b}}'")
    got = SEEN[-1]["headers"]
    assert got["x-key"] == SECRET and "x-global" not in got  # the most specific rule only
    assert got["x-try"] == "{{SECRET:b}}"  # another rule's secret does not resolve here
    curl(rapi, url, "http://free.http.test/", "-H 'X-Try: {{SECRET:a}}'")
    got = SEEN[-1]["headers"]
    assert got["x-global"] == OTHER_SECRET and "x-key" not in got
    assert got["x-try"] == "{{SECRET:a}}"
    curl(rapi, url, "http://bypass.http.test/", "-H 'X-Try: {{SECRET:b}}'")
    got = SEEN[-1]["headers"]
    assert "x-global" not in got and "x-blaxel-request-id" not in got
    assert got["x-try"] == "{{SECRET:b}}"
    rapi.delete(f"/v0/sandboxes/{name}")


# -- secrets are write-only ----------------------------------------------------------------------


def test_secrets_never_leave_through_api_sandbox_or_log(rapi, srv):  # type: ignore[no-untyped-def]
    name, url = create(rapi, [STRIPE_LIKE])
    curl(rapi, url, "https://secure.test/", "-d '{}'")
    curl(rapi, url, "http://api.http.test/", "-H 'X-A: {{SECRET:key}}'")
    assert SEEN[-1]["headers"]["x-a"] == SECRET  # it was used...
    record = rapi.get(f"/v0/sandboxes/{name}")
    texts = [record.text, rapi.get("/v0/sandboxes").text, rapi.get("/v0/sandboxes?limit=5").text]
    texts.append(rapi.put(f"/v0/sandboxes/{name}", json=record.json()).text)
    texts.append(rapi.get(f"/v1/sandboxes/{name}").text)
    texts.append(rapi.get(f"/v0/sandboxes/{name}/egress/logs").text)
    assert all(SECRET not in t for t in texts)
    assert "secrets" not in record.json()["spec"]["network"]["proxy"]["routing"][0]
    # ...but is nowhere inside the sandbox: environment of every process, or any file cove
    # could have put there (the sandbox's writable layer and the shared read-only directory)
    out = run(rapi, url, "env; cat /proc/[0-9]*/environ | tr '\\0' '\\n'; ls /.cove")
    assert SECRET not in out["stdout"] and "egress-ca-bundle.pem" in out["stdout"]
    places = [*(srv.data_dir / "sandboxes").glob("*/upper"), srv.data_dir / "bin"]
    assert len(places) > 1
    grep = subprocess.run(["grep", "-rlF", SECRET, *map(str, places)], capture_output=True)
    assert grep.returncode == 1, grep  # 1: searched everything, found nothing
    assert SECRET not in (srv.data_dir / "server.log").read_text(errors="replace")
    rapi.delete(f"/v0/sandboxes/{name}")


def test_put_and_sdk_updates_keep_stored_secrets(rapi, srv):  # type: ignore[no-untyped-def]
    from blaxel.core.client import client
    from blaxel.core.sandbox import SyncSandboxInstance
    from blaxel.core.sandbox.types import SandboxUpdateMetadata, SandboxUpdateNetwork

    name, url = create(rapi, [STRIPE_LIKE])
    client.with_base_url(srv.url + "/v0")
    network = SyncSandboxInstance.get(name).spec.network.to_dict()  # read: no secrets in it
    network["allowedDomains"] = ["api.http.test", "secure.test"]
    updated = SyncSandboxInstance.update_network(name, SandboxUpdateNetwork(network=network))
    assert updated.spec.network.allowed_domains == ["api.http.test", "secure.test"]
    SyncSandboxInstance.update_ttl(name, "1h")
    SyncSandboxInstance.update_metadata(name, SandboxUpdateMetadata(labels={"k": "v"}))
    curl(rapi, url, "http://api.http.test/")
    assert SEEN[-1]["headers"]["authorization"] == f"Bearer {SECRET}"  # still injected
    assert (
        curl(rapi, url, "http://free.http.test/", "-w '%{http_code}' -o /dev/null")["stdout"]
        == "403"
    )  # the new allowedDomains apply
    # an explicit empty map clears them; placeholders then stay as they are
    record = rapi.get(f"/v0/sandboxes/{name}").json()
    record["spec"]["network"]["proxy"]["routing"][0]["secrets"] = {}
    assert rapi.put(f"/v0/sandboxes/{name}", json=record).status_code == 200
    curl(rapi, url, "http://api.http.test/")
    assert SEEN[-1]["headers"]["authorization"] == "Bearer {{SECRET:key}}"
    rapi.delete(f"/v0/sandboxes/{name}")


# -- idle connections ---------------------------------------------------------------------------


def test_idle_tunnel_is_closed(rapi):  # type: ignore[no-untyped-def]
    name, url = create(rapi, [])
    silent = (
        'python3 -c "import socket\n'
        "s = socket.create_connection(('127.0.0.1', 3128))\n"
        "s.sendall(b'CONNECT tunnel.test:443 HTTP/1.1\\r\\n\\r\\n')\n"
        "print(s.recv(100).split(b' ')[1].decode())\n"
        "s.settimeout(60)\n"
        'print(repr(s.recv(100)))"'  # blocks until the proxy closes the idle tunnel
    )
    assert run(rapi, url, silent)["stdout"] == "200\nb''\n"
    entry = logs(rapi, name)["logs"][-1]
    # closed by the proxy (b'' long before the client's 60 s), and not before it was idle; the
    # log's clock starts a moment after the idle timer's, hence the margin
    assert entry["status"] == "tunnel" and entry["durationMs"] >= IDLE_S * 1000 * 0.9
    rapi.delete(f"/v0/sandboxes/{name}")


# -- pure parts: parsing, scoping, the PUT rule ---------------------------------------------


def test_route_parsing_matching_and_resolution() -> None:
    from cove.domain.errors import InvalidRequest
    from cove.domain.network import parse_network

    policy = parse_network(
        {
            "proxy": {
                "routing": [
                    rule(["*"], {"X-A": "{{SECRET:a}}"}, None, {"a": "1"}),
                    rule(["*.b.com"], {"X-B": "x"}),
                    rule(["api.b.com"], {"X-C": "{{SECRET:c}}-{{SECRET:nope}}"}, None, {"c": "3"}),
                    rule(["only.d.com"]),
                ],
                "bypass": ["*.s3.amazonaws.com"],
            }
        }
    )
    assert policy.route_for("API.b.com.").headers == (("X-C", "{{SECRET:c}}-{{SECRET:nope}}"),)
    assert policy.route_for("x.b.com").headers == (("X-B", "x"),)
    assert policy.route_for("b.com").headers == (("X-A", "{{SECRET:a}}"),)  # '*.' needs a label
    assert policy.route_for("only.d.com").rewrites is False  # nothing to do: tunnelled
    assert policy.route_for("x.s3.amazonaws.com") is None and policy.bypassed("x.s3.amazonaws.com")
    route = policy.route_for("api.b.com")
    assert (
        route.resolve("{{SECRET:c}}-{{SECRET:nope}}-{{SECRET:a}}")
        == "3-{{SECRET:nope}}-{{SECRET:a}}"
    )
    assert route.resolve_json({"k": ["{{SECRET:c}}", 1]}) == {"k": ["3", 1]}
    assert SECRET not in repr(parse_network({"proxy": {"routing": [STRIPE_LIKE]}}))
    bad = [
        rule(["a.com"], {"Host": "x"}),
        rule(["a.com"], {"Bad Name": "x"}),
        rule(["a.com"], {"X": 1}),
        rule(["a.com"], {"X": "{{SECRET:k}}"}, None, {"k": f"{SECRET}\r\nX-Evil: 1"}),
        rule(["a.com"], None, None, {"k": 5}),
        rule(["a.com"], None, None, {"bad name": "v"}),
        rule(["http://a.com/"]),
        "not a rule",
    ]
    for item in bad:
        with pytest.raises(InvalidRequest) as caught:
            parse_network({"proxy": {"routing": [item]}})
        assert "spec.network.proxy.routing[0]" in caught.value.message
        assert SECRET not in caught.value.message  # errors name secrets, never show them


def test_keep_secrets_rule() -> None:
    from cove.domain.network import keep_secrets

    stored = {
        "proxy": {
            "routing": [
                rule(["a.com", "b.com"], {"X": "{{SECRET:k}}"}, None, {"k": "1"}),
                rule(["c.com"], None, None, {"k": "2"}),
            ]
        }
    }
    sent = {
        "allowedDomains": ["a.com"],
        "proxy": {
            "routing": [
                rule(["c.com"], {"Y": "{{SECRET:k}}"}),  # no secrets key: kept
                rule(["B.com", "a.com"]),  # same destinations in another order: kept
                rule(["d.com"]),  # a new rule: nothing to keep
            ]
        },
    }
    merged = keep_secrets(stored, sent)
    assert [r.get("secrets") for r in merged["proxy"]["routing"]] == [{"k": "2"}, {"k": "1"}, None]
    assert merged["allowedDomains"] == ["a.com"] and "secrets" not in sent["proxy"]["routing"][0]
    cleared = {"proxy": {"routing": [rule(["c.com"], None, None, {})]}}
    assert keep_secrets(stored, cleared)["proxy"]["routing"][0]["secrets"] == {}
    assert keep_secrets(stored, None) is None  # network left out: cleared, secrets too


def test_body_rewriting() -> None:
    from cove.domain.network import Route
    from cove.egress.http1 import RequestHead, rewrite_body, rewrites_body, upstream_head

    route = Route(("a.com",), (("X-K", "{{SECRET:k}}"),), {"key": "{{SECRET:k}}"}, {"k": 's"1'})

    def head(method: str, *lines: str) -> RequestHead:
        return RequestHead(method, "/", "HTTP/1.1", list(lines))

    form = head("POST", "Content-Type: application/x-www-form-urlencoded", "Content-Length: 9")
    assert rewrites_body(form, route)  # a textual body may hold the sandbox's placeholders
    assert rewrite_body(form, route, b"a={{SECRET:k}}") == b'a=s"1'
    binary = head("POST", "Content-Type: application/octet-stream", "Content-Length: 9")
    assert not rewrites_body(binary, route)  # streamed untouched
    gz = head("POST", "Content-Type: application/json", "Content-Encoding: gzip")
    assert not rewrites_body(gz, route)
    js = head("PATCH", "Content-Type: application/json")
    assert json.loads(rewrite_body(js, route, b'{"n": "{{SECRET:k}}"}')) == {
        "key": 's"1',
        "n": 's"1',
    }
    assert rewrite_body(js, route, b"[1]") == b"[1]"  # not an object: nothing merged
    assert not rewrites_body(head("GET"), route)
    out = upstream_head(
        head(
            "POST",
            "Connection: keep-alive, X-Drop",
            "X-Drop: 1",
            "Content-Length: 3",
            "Expect: 100-continue",
        ),
        "/p",
        "a.com",
        route,
        "rid",
        b"{}",
    )
    text = out.decode()
    assert text.startswith("POST /p HTTP/1.1\r\nHost: a.com\r\n") and text.endswith("\r\n\r\n")
    assert "X-Drop" not in text and "Expect" not in text and "Content-Length: 2" in text
    assert 'X-K: s"1' in text and "X-Blaxel-Request-Id: rid" in text


def test_counters_for_metering(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Egress.counters: live while attached, still readable after the detach (a final reading)."""
    import asyncio
    import os
    import time

    from cove.domain.network import OPEN
    from cove.egress.local import LocalEgress
    from cove.runtime.netns import socket_in_netns

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    port = _start(httpd)
    proc = subprocess.Popen(["unshare", "-n", "sh", "-c", "ip link set lo up && exec sleep 300"])
    try:
        deadline = time.monotonic() + 10
        while not os.readlink(f"/proc/{proc.pid}/exe").endswith("sleep"):
            assert time.monotonic() < deadline
            time.sleep(0.01)

        async def main() -> None:
            egress = LocalEgress(
                {"up.test": ("127.0.0.1", port)},
                ca_dir=tmp_path / "ca",
                shared=(tmp_path / "shared", "/.cove"),
            )
            assert oct((tmp_path / "ca" / "ca-key.pem").stat().st_mode & 0o777) == "0o600"
            assert not list((tmp_path / "shared").glob("*key*"))  # the key is never shared
            assert egress.env()["SSL_CERT_FILE"] == "/.cove/egress-ca-bundle.pem"
            assert egress.counters("k") is None
            await egress.attach("k", proc.pid, OPEN)
            sock = await asyncio.to_thread(socket_in_netns, proc.pid)
            sock.connect(("127.0.0.1", 3128))
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(b"GET http://up.test/c HTTP/1.1\r\nHost: up.test\r\n\r\n")
            assert (await reader.read()).startswith(b"HTTP/1.1 200")
            writer.close()
            live = egress.counters("k")
            assert live.requests == 1 and live.bytes_out > 0 and live.bytes_in > 0
            await egress.detach("k")
            final = egress.counters("k")
            assert (final.bytes_out, final.bytes_in) == (live.bytes_out, live.bytes_in)
            await egress.close()

        asyncio.run(main())
    finally:
        proc.kill()
        proc.wait()
        httpd.shutdown()
        httpd.server_close()
