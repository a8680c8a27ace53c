#!/usr/bin/python3
"""Helpers for tests/operator.rs (named so as not to shadow the stdlib `operator`), run with Debian's /usr/bin/python3.

  get URL HOST            GET URL with this Host header; prints {"status", "body"} as JSON
  validate SCHEMA         validates the JSON on stdin against SCHEMA (jsonschema)
  metrics                 parses the exposition on stdin with prometheus_client's parser;
                          prints {"families": {name: type}, "samples": [[name, labels, value]]}
  udp-garbage HOST PORT N sends N datagrams of random bytes to HOST:PORT
  tcp-garbage HOST PORT   opens a TCP connection, sends random bytes, closes
  tcp-flood HOST PORT N   opens and at once closes N TCP connections, as fast as it can
"""
import http.client
import json
import os
import socket
import sys
import urllib.parse


def get(url, host):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.putrequest("GET", u.path or "/", skip_host=True, skip_accept_encoding=True)
    if host != "-":
        conn.putheader("Host", host)
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read().decode("utf-8", "replace")
    print(json.dumps({"status": resp.status, "body": body,
                      "content_type": resp.getheader("Content-Type")}))


def validate(schema_path):
    import jsonschema
    with open(schema_path) as f:
        schema = json.load(f)
    doc = json.load(sys.stdin)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    errors = sorted(cls(schema).iter_errors(doc), key=lambda e: list(e.path))
    for e in errors:
        print(f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}")
    sys.exit(1 if errors else 0)


def metrics():
    from prometheus_client.parser import text_string_to_metric_families
    families, samples = {}, []
    for fam in text_string_to_metric_families(sys.stdin.read()):
        families[fam.name] = fam.type
        for s in fam.samples:
            samples.append([s.name, s.labels, s.value])
    print(json.dumps({"families": families, "samples": samples}))


def udp_garbage(host, port, n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(n):
        s.sendto(os.urandom(16 + (i * 37) % 400), (host, port))


def tcp_garbage(host, port):
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n" + os.urandom(64))
    try:
        s.recv(100)
    except OSError:
        pass
    s.close()


def tcp_flood(host, port, n):
    for _ in range(n):
        try:
            s = socket.create_connection((host, port), timeout=5)
            s.close()
        except OSError:
            pass


def main(argv):
    cmd = argv[1]
    if cmd == "get":
        get(argv[2], argv[3])
    elif cmd == "validate":
        validate(argv[2])
    elif cmd == "metrics":
        metrics()
    elif cmd == "udp-garbage":
        udp_garbage(argv[2], int(argv[3]), int(argv[4]))
    elif cmd == "tcp-garbage":
        tcp_garbage(argv[2], int(argv[3]))
    elif cmd == "tcp-flood":
        tcp_flood(argv[2], int(argv[3]), int(argv[4]))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
