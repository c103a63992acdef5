#!/usr/bin/env python3
"""Writes the hand-made seed inputs of every fuzz target into fuzz/corpus/<target>/seed-*.

The committed corpora started from these and were grown by fuzzing and minimised with
`cargo fuzz cmin`; rerun this only to start a corpus afresh. Needs python3-cryptography (for
the CSRs) and nothing else: HTTP/2 frames, HPACK and protobuf are written by hand below.

Input formats are the ones each target documents in fuzz/fuzz_targets/<target>.rs.
"""

import os
import struct
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
FUZZ_IDENTITY = "spiffe://cluster.local/ns/fuzz/sa/fuzz"


def write(target, name, data):
    directory = ROOT / "corpus" / target
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (directory / f"seed-{name}").write_bytes(data)


# --- protobuf (only what our messages use) ---------------------------------------------------


def varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pb_varint(tag, n):
    return varint(tag << 3) + varint(n)


def pb_bytes(tag, data):
    if isinstance(data, str):
        data = data.encode()
    return varint((tag << 3) | 2) + varint(len(data)) + data


# --- CSRs ------------------------------------------------------------------------------------


def csr(key, uris, algorithm=hashes.SHA256()):
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
    return builder.sign(key, algorithm)


def csr_seeds():
    p256 = ec.generate_private_key(ec.SECP256R1())
    p384 = ec.generate_private_key(ec.SECP384R1())
    cases = {
        "good": csr(p256, [FUZZ_IDENTITY]),
        "no-san": csr(p256, []),
        "other-identity": csr(p256, ["spiffe://cluster.local/ns/other/sa/x"]),
        "two-sans": csr(p256, [FUZZ_IDENTITY, "spiffe://cluster.local/ns/a/sa/b"]),
        "p384": csr(p384, [FUZZ_IDENTITY], hashes.SHA384()),
        "ed25519": csr(ed25519.Ed25519PrivateKey.generate(), [FUZZ_IDENTITY], None),
    }
    for name, request in cases.items():
        pem = request.public_bytes(serialization.Encoding.PEM)
        der = request.public_bytes(serialization.Encoding.DER)
        write("csr", f"pem-{name}", b"P" + pem)
        write("csr", f"der-{name}", b"D" + der)
    # A signature that does not verify: flip a bit in the signature's last byte.
    der = bytearray(cases["good"].public_bytes(serialization.Encoding.DER))
    der[-1] ^= 1
    write("csr", "der-bad-signature", b"D" + bytes(der))
    return cases


def ca_request_seeds(csrs):
    good = csrs["good"].public_bytes(serialization.Encoding.PEM)
    write("ca_request", "good", pb_bytes(1, good) + pb_bytes(2, FUZZ_IDENTITY) + pb_varint(3, 3600))
    write("ca_request", "default-ttl", pb_bytes(1, good) + pb_bytes(2, FUZZ_IDENTITY))
    write("ca_request", "negative-ttl", pb_bytes(1, good) + pb_bytes(2, FUZZ_IDENTITY) + pb_varint(3, -5))
    write("ca_request", "huge-ttl", pb_bytes(1, good) + pb_bytes(2, FUZZ_IDENTITY) + pb_varint(3, 2**62))
    write(
        "ca_request",
        "identity-mismatch",
        pb_bytes(1, good) + pb_bytes(2, "spiffe://cluster.local/ns/other/sa/x"),
    )
    write(
        "ca_request",
        "foreign-domain",
        pb_bytes(1, good) + pb_bytes(2, "spiffe://other.domain/ns/fuzz/sa/fuzz"),
    )
    write("ca_request", "empty", b"")


# --- SPIFFE IDs ------------------------------------------------------------------------------


def spiffe_seeds():
    for i, uri in enumerate(
        [
            "spiffe://cluster.local/ns/default/sa/default",
            "spiffe://example.org/ns/shop/sa/frontend-v2",
            "spiffe://td_with-under.score/ns/a/sa/b",
            "spiffe://cluster.local/ns//sa/x",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://Cluster.Local/ns/a/sa/b",
            "spiffe://cluster.local:443/ns/a/sa/b",
            "spiffe://cluster.local/ns/a/sa/b?q#f",
            "SPIFFE://cluster.local/ns/a/sa/b",
        ]
    ):
        write("spiffe_id", f"uri-{i}", "U" + uri)
    write("spiffe_id", "parts", "Pcluster.local\nshop\nweb")
    write("spiffe_id", "parts-bad", "Pcluster.local\nsh/op\nweb")


# --- HTTP/2 (client side of HBONE) -----------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name_index, value):
    """HPACK literal header field without indexing, indexed name, no Huffman."""
    value = value.encode()
    return bytes([name_index]) + bytes([len(value)]) + value


def literal_new(name, value):
    name, value = name.encode(), value.encode()
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


METHOD, AUTHORITY = 2, 1  # HPACK static table: :method GET, :authority


def connect(stream, authority, extra=b"", end_stream=False):
    block = literal(METHOD, "CONNECT") + literal(AUTHORITY, authority) + extra
    return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), stream, block)


def settings(*pairs):
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def hbone_server_seeds():
    start = PREFACE + settings((0x4, 65535), (0x2, 0))
    cases = {
        # port % 4 == 3: accepted and echoed
        "accept-echo": start
        + connect(1, "10.0.0.5:8083")
        + frame(DATA, 0, 1, b"hello")
        + frame(DATA, END_STREAM, 1, b""),
        "denied": start + connect(1, "10.0.0.5:8080", end_stream=True),
        "unavailable": start + connect(1, "10.0.0.5:8081"),
        "unanswered": start + connect(1, "10.0.0.5:8082"),
        "ip-mismatch": start + connect(1, "10.9.9.9:8083"),
        "v6-mapped": start + connect(1, "[::ffff:10.0.0.5]:8083"),
        "no-port": start + connect(1, "10.0.0.5"),
        "get": start
        + frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            b"\x82" + b"\x86" + b"\x84" + literal(AUTHORITY, "10.0.0.5:80"),
        ),
        "headers-forwarded": start
        + connect(
            1,
            "10.0.0.5:8083",
            literal_new("forwarded", 'for="10.0.0.9:5000"')
            + literal_new("baggage", "k8s.namespace.name=shop")
            + literal_new("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ),
        "many-streams": start + b"".join(connect(i, f"10.0.0.5:{8080 + i % 4}") for i in range(1, 40, 2)),
        "rst": start + connect(1, "10.0.0.5:8083") + frame(RST_STREAM, 0, 1, struct.pack(">I", 8)),
        "ping-window-goaway": start
        + frame(PING, 0, 0, b"12345678")
        + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 20))
        + connect(1, "10.0.0.5:8083")
        + frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1000))
        + frame(GOAWAY, 0, 0, struct.pack(">II", 1, 0)),
        "continuation": start
        + frame(HEADERS, 0, 1, literal(METHOD, "CONNECT"))
        + frame(CONTINUATION, END_HEADERS, 1, literal(AUTHORITY, "10.0.0.5:8083")),
        "settings-ack": start + frame(SETTINGS, ACK, 0) + connect(3, "10.0.0.5:8083"),
    }
    for name, data in cases.items():
        write("hbone_server", name, b"\x00" + data)  # option byte 0: raw bytes, 64 KiB buffer
    # The same without the preface (option bit 0 adds it) and split into 7-byte reads.
    write("hbone_server", "accept-echo-split", bytes([1 | (7 << 1)]) + cases["accept-echo"][len(PREFACE):])


# --- enrollment ------------------------------------------------------------------------------


def enroll_seeds():
    add = pb_varint(1, 1) + pb_bytes(2, pb_bytes(1, "uid-1") + pb_bytes(2, "web-0") + pb_bytes(3, "shop"))
    delete = pb_varint(1, 1) + pb_bytes(3, pb_bytes(1, "uid-1"))
    done = pb_varint(1, 1) + pb_bytes(4, b"")
    # flags (bit 0: through a socket), fd count, fd kinds (2 bits each: netns, uts, null, socket)
    for via in (0, 1):
        write("enroll", f"add-{via}", bytes([via, 1, 0]) + add)
        write("enroll", f"add-uts-{via}", bytes([via, 1, 1]) + add)
        write("enroll", f"add-two-{via}", bytes([via, 2, 0]) + add)
        write("enroll", f"add-max-fds-{via}", bytes([via, 253, 0b11100100]) + add)
        write("enroll", f"delete-{via}", bytes([via, 0, 0]) + delete)
        write("enroll", f"delete-fd-{via}", bytes([via, 1, 2]) + delete)
        write("enroll", f"done-{via}", bytes([via, 0, 0]) + done)
        write("enroll", f"version-2-{via}", bytes([via, 1, 0]) + pb_varint(1, 2) + add[2:])
        write("enroll", f"empty-{via}", bytes([via, 0, 0]))
        write("enroll", f"empty-fds-{via}", bytes([via, 3, 0b100111]))


# --- manifests and policies ------------------------------------------------------------------

POLICIES = {
    "allow": """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/web], ipBlocks: [10.0.0.0/8], notNamespaces: [dev]}}]
    to: [{operation: {ports: ['5432', 8080], notPorts: [22]}}]
""",
    "deny-l7": """apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: deny-get, namespace: shop}
spec:
  action: DENY
  rules:
  - to: [{operation: {methods: [GET], paths: [/admin*]}}]
    when: [{key: request.headers[x], values: [y]}]
""",
    "broken-allow": """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: typo, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{source: {principal: [cluster.local/ns/shop/sa/web]}}]
""",
    "broken-deny": """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad-cidr, namespace: shop}
spec:
  action: DENY
  rules:
  - from: [{source: {ipBlocks: [10.0.0.0/33]}}]
""",
    "audit": """{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
 "metadata": {"name": "audit"}, "spec": {"action": "AUDIT", "rules": [{"to": [{"operation": {"ports": ["x"]}}]}]}}
""",
    "custom": """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: istio-system}
spec: {action: CUSTOM, provider: {name: opa}, targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]}
""",
    "lowercase-action": """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: lc, namespace: 7}
spec: {action: allow, selector: {matchLabels: {app: [x]}}}
""",
    "merge-keys": """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: merged, namespace: shop}
spec:
  rules:
  - from: &src [{source: {namespaces: [shop, "*-prod"], notPrincipals: ["*"]}}]
    to: [{operation: {ports: ["443"]}}]
  - <<: {from: *src}
""",
}


def manifest_seeds():
    write("manifest", "shop", (REPO / "discovery" / "testdata" / "shop.yaml").read_bytes())
    for name, policy in POLICIES.items():
        write("policy", name, policy)
    write("manifest", "policies", "---\n".join(POLICIES.values()))
    write(
        "manifest",
        "list-json",
        '{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Namespace", '
        '"metadata": {"name": "shop", "labels": {"istio.io/dataplane-mode": "ambient"}}}, '
        '{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "shop"}, '
        '"data": {"k": "dg=="}, "stringData": {"x": "y"}}]}',
    )
    write(
        "manifest",
        "conflicts",
        """apiVersion: v1
kind: Pod
metadata: {name: a, namespace: shop}
spec: {nodeName: n, hostNetwork: false, containers: [{name: c, image: i, ports: [{name: http, containerPort: 80}]}]}
status: {podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}, {ip: "fd00::1"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: shop}
spec: {nodeName: n, containers: []}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Service
metadata: {name: s, namespace: shop, labels: {istio.io/use-waypoint: wp}}
spec: {clusterIP: 10.96.0.1, clusterIPs: [10.96.0.1, "fd00::a"], ports: [{port: 80, targetPort: http}, {port: 53, protocol: UDP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-1, namespace: shop, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
endpoints: [{addresses: [10.0.0.7], conditions: {ready: true}, targetRef: {kind: Pod, name: a, namespace: shop}}]
ports: [{port: 8080, name: ""}]
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: shop}
spec: {nodeName: n}
""",
    )
    write("manifest", "bad-yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: [\n")
    write("manifest", "unknown-kinds", "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: x}\n---\napiVersion: v2\nkind: Pod\n---\n")


# --- CNI -------------------------------------------------------------------------------------


def cni_seeds():
    conf = (
        '{"cniVersion":"1.0.0","name":"k8s","type":"ambit-cni","enrollSocket":"/run/e.sock",'
        '"enrollTimeoutMs":500,"logLevel":"debug","probeSourceIp":"169.254.7.127",'
        '"rulesBackend":"nftables","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.5/24","gateway":"10.1.0.1"}]}}'
    )
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_UID=u-1"
    for command in ("ADD", "DEL", "CHECK"):
        write("cni", command.lower(), f"{command}\nabc123\n/var/run/netns/x\neth0\n{args}\n{conf}")
    write("cni", "version", "VERSION\n\n\n\n\n")
    write("cni", "status", 'STATUS\n\n\n\n\n{"cniVersion":"1.1.0","name":"k8s"}')
    write("cni", "gc", 'GC\n\n\n\n\n{"cniVersion":"1.1.0","name":"k8s","cni.dev/valid-attachments":[]}')
    write("cni", "old-check", 'CHECK\nabc\n/n\neth0\n\n{"cniVersion":"0.3.1","name":"k","prevResult":{}}')
    write("cni", "del-no-netns", 'DEL\nabc\n\neth0\nK8S_POD_NAME=x\n{"cniVersion":"0.4.0","name":"k","logFile":"/tmp/x"}')
    write("cni", "bad-id", 'ADD\n-bad id\n/n\neth0\n\n{"cniVersion":"1.0.0","name":"k","prevResult":[]}')


def conflist_seeds():
    # The conflists the installer's tests use (calico, containerd, flannel, a single .conf), each
    # as a .conflist (flag 1) and as a .conf (flag 0), plus one already holding our entry.
    for path in sorted((REPO / "cni-plugin" / "tests" / "conflists").iterdir()):
        data = path.read_bytes()
        write("conflist", f"{path.name}-list", b"\x01" + data)
        write("conflist", f"{path.name}-conf", b"\x00" + data)
    write(
        "conflist",
        "installed-tabs",
        b'\x01{\n\t"cniVersion": "1.0.0",\n\t"name": "k8s",\n\t"plugins": [\n\t\t{"type": "bridge"},\n'
        b'\t\t{"type": "ambit-cni", "enrollSocket": "/var/run/ambit/enroll.sock"},\n\t\t{"type": "ambit-cni"}\n\t]\n}\n',
    )


# --- DNS -------------------------------------------------------------------------------------


def dns_name(text):
    return b"".join(bytes([len(label)]) + label.encode() for label in text.split(".") if label) + b"\0"


def dns_query(ident, name, qtype=1, flags=0x0100, edns=False):
    message = struct.pack(">HHHHHH", ident, flags, 1, 0, 0, 1 if edns else 0)
    message += dns_name(name) + struct.pack(">HH", qtype, 1)
    if edns:
        message += b"\0" + struct.pack(">HHIH", 41, 4096, 0, 0)
    return message


def dns_seeds():
    write("dns_message", "a-service", dns_query(1, "web.shop.svc.cluster.local"))
    write("dns_message", "aaaa-short", dns_query(2, "web", 28))
    write("dns_message", "srv", dns_query(3, "_http._tcp.web.shop.svc.cluster.local", 33))
    write("dns_message", "edns", dns_query(4, "example.com", edns=True))
    write("dns_message", "mixed-case", dns_query(5, "WeB.ShOp"))
    two = struct.pack(">HHHHHH", 6, 0x0100, 2, 0, 0, 0) + dns_name("a.shop") + struct.pack(">HH", 1, 1)
    write("dns_message", "compressed", two + b"\xc0\x0c" + struct.pack(">HH", 28, 1))
    write("dns_message", "response", dns_query(7, "x", flags=0x8180))
    write("dns_message", "notify", dns_query(8, "x", flags=0x2000))
    write("dns_message", "header-only", struct.pack(">HHHHHH", 9, 0x0100, 0, 0, 0, 0))


def main():
    csrs = csr_seeds()
    ca_request_seeds(csrs)
    spiffe_seeds()
    hbone_server_seeds()
    enroll_seeds()
    manifest_seeds()
    cni_seeds()
    conflist_seeds()
    dns_seeds()
    return 0


if __name__ == "__main__":
    sys.exit(main())
