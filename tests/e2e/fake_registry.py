#!/usr/bin/python3
"""A registry that misbehaves on purpose, for tests/e2e/test_service_registry.sh.

Serves one image from an OCI layout (its index.json's only manifest) as /v2/<any>/manifests/<any>
and /v2/<any>/blobs/sha256:<hex>, on 127.0.0.1 at a port the kernel picks (printed on stdout's
first line). Modes:
  tamper    the largest layer's bytes have one byte flipped (same size)
  redirect  needs Basic credentials; blobs answer 307 to a second server on "localhost" (a
            different host to a client) that records every Authorization header it is sent
            into the file named by the third argument
  huge      manifests are 5 MiB of JSON
  scheme    blobs answer 307 to file:///etc/passwd
  stall     the largest layer stops halfway and the answer hangs (for a pull killed mid-blob)
  bearer    needs a Bearer token, which /token hands out for Basic u:p (the token request's
            query is recorded in the third argument's file)
Every request line goes to stderr."""
import http.server, json, os, sys, threading, time

mode, layout = sys.argv[1], sys.argv[2]
seen_file = sys.argv[3] if len(sys.argv) > 3 else None
index = json.load(open(os.path.join(layout, "index.json")))
manifest_desc = index["manifests"][0]
blobs = os.path.join(layout, "blobs", "sha256")
manifest = json.load(open(os.path.join(blobs, manifest_desc["digest"][7:])))
largest = max(manifest["layers"], key=lambda d: d["size"])["digest"][7:]


def blob_bytes(hexd):
    data = bytearray(open(os.path.join(blobs, hexd), "rb").read())
    if mode == "tamper" and hexd == largest:
        data[len(data) // 2] ^= 0xFF
    return bytes(data)


class Other(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(seen_file, "a") as f:
            f.write("auth=%s\n" % self.headers.get("Authorization", "none"))
        data = blob_bytes(self.path.rsplit(":", 1)[1])
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


other = None
if mode == "redirect":
    other = http.server.ThreadingHTTPServer(("localhost", 0), Other)
    threading.Thread(target=other.serve_forever, daemon=True).start()


class Registry(http.server.BaseHTTPRequestHandler):
    def refuse(self, challenge):
        self.send_response(401)
        self.send_header("WWW-Authenticate", challenge)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def answer(self, body):
        auth = self.headers.get("Authorization", "")
        if mode == "bearer" and self.path.startswith("/token"):
            with open(seen_file, "a") as f:
                f.write("token %s %s\n" % (self.path, auth))
            if auth != "Basic dTpw":  # u:p
                return self.refuse('Basic realm="token"')
            data = b'{"token": "good-token"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if mode == "bearer" and auth != "Bearer good-token":
            return self.refuse('Bearer realm="http://127.0.0.1:%d/token",service="fake",'
                               'scope="repository:test/busybox:pull"' % server.server_address[1])
        if mode == "redirect" and not self.headers.get("Authorization", "").startswith("Basic "):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="fake"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if "/blobs/" in self.path and mode == "scheme":
            self.send_response(307)
            self.send_header("Location", "file:///etc/passwd")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if "/manifests/" in self.path and mode == "huge":
            data = b'{"pad": "' + b"x" * (5 << 20) + b'"}'
            self.send_response(200)
            self.send_header("Content-Type", manifest_desc["mediaType"])
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)
            return
        if "/blobs/" in self.path:
            hexd = self.path.rsplit(":", 1)[1]
            if mode == "redirect":
                self.send_response(307)
                self.send_header("Location", "http://localhost:%d/b/sha256:%s"
                                 % (other.server_address[1], hexd))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = blob_bytes(hexd)
            ctype = "application/octet-stream"
            if mode == "stall" and hexd == largest:
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                time.sleep(60)
                return
        elif "/manifests/" in self.path:
            data = open(os.path.join(blobs, manifest_desc["digest"][7:]), "rb").read()
            ctype = manifest_desc["mediaType"]
        else:
            data, ctype = b"{}", "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_GET(self):
        self.answer(True)

    def do_HEAD(self):
        self.answer(False)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.command, self.path))


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
print(server.server_address[1], flush=True)
server.serve_forever()
