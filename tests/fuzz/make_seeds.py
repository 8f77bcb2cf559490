#!/usr/bin/python3
"""Writes the fuzzers' seed corpora (tests/fuzz/corpus/<target>/) from the repo's examples and
unit-test data. Run with /usr/bin/python3 (needs python3-grpc-tools for the protobuf seeds);
the output is checked in, so this only needs rerunning when the examples change."""
import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def c_strings(path, names):
    """The C string constants `static const char NAME[] = "..." "...";` of a test file."""
    text = open(path).read()
    out = {}
    for name in names:
        m = re.search(r"static const char %s\[\] =(.*?);\n" % name, text, re.S)
        parts = re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1))
        out[name] = "".join(parts).encode().decode("unicode_escape")
    return out


def protobuf_modules(tmp):
    from grpc_tools import protoc
    proto = os.path.join(ROOT, "proto")
    files = ["tvix/castore/v1/castore.proto", "tvix/build/v1/build.proto"]
    rc = protoc.main(["protoc", "-I" + proto, "--python_out=" + tmp] + files)
    if rc != 0:
        sys.exit("protoc failed")
    sys.path.insert(0, tmp)
    from tvix.castore.v1 import castore_pb2
    from tvix.build.v1 import build_pb2
    return castore_pb2, build_pb2


def main():
    drvs = c_strings(os.path.join(ROOT, "tests/unit/test_derivation.c"),
                     ["HELLO_DRV", "DEP_DRV", "FOD_DRV"])
    for name, text in drvs.items():
        put("derivation", name.lower() + ".drv", text)

    with tempfile.TemporaryDirectory() as tmp:
        castore, build = protobuf_modules(tmp)
        d = castore.Directory()
        d.directories.add(name=b"lib", digest=bytes(range(32)), size=3)
        d.files.add(name=b"a", digest=bytes(32), size=5)
        d.files.add(name=b"run", digest=b"\x01" * 32, size=100, executable=True)
        d.symlinks.add(name=b"sh", target=b"/bin/busybox")
        put("directory", "mixed.pb", d.SerializeToString())
        put("directory", "empty.pb", b"")
        put("node", "file.pb", castore.Node(file=d.files[1]).SerializeToString())
        put("node", "directory.pb", castore.Node(directory=d.directories[0]).SerializeToString())
        put("node", "symlink.pb", castore.Node(symlink=d.symlinks[0]).SerializeToString())

        from google.protobuf import json_format
        reqdir = os.path.join(ROOT, "examples", "requests")
        for f in sorted(os.listdir(reqdir)):
            text = open(os.path.join(reqdir, f)).read()
            put("request_json", f, text)
            put("friendly_request", f, text)
            msg = json_format.Parse(text, build.BuildRequest())
            put("request_pb", f.replace(".json", ".pb"), msg.SerializeToString())
            # pb_wire: the first byte picks the message (fuzz_pb_wire.c's MESSAGES).
            put("pb_wire", "request-" + f.replace(".json", ".pb"),
                b"\x02" + msg.SerializeToString())
        put("pb_wire", "directory.pb", b"\x00" + d.SerializeToString())
        put("pb_wire", "node.pb", b"\x01" + castore.Node(file=d.files[1]).SerializeToString())
        b = build.Build(build_request=msg)
        b.outputs.add(directory=d.directories[0])
        b.outputs_needles.add(needles=[0, 300])
        put("pb_wire", "build.pb", b"\x03" + b.SerializeToString())
    hello = json.load(open(os.path.join(ROOT, "examples", "hello.json")))
    hello["inputs"] = {"busybox": {"file": {"name": base64.b64encode(b"busybox").decode(),
                                            "digest": base64.b64encode(bytes(32)).decode(),
                                            "size": "10"}}}
    put("friendly_request", "hello-node-input.json", json.dumps(hello, indent=1))

    spec = open(os.path.join(ROOT, "tests/e2e/test_service_spec.sh")).read()
    yaml = re.search(r'deploy.yaml" <<YAML\n(.*?)\nYAML', spec, re.S).group(1)
    put("deployment", "web-stack.yaml", yaml.replace("\\$", "$"))
    put("deployment", "minimal.yaml",
        "version: v1\ndeployment: d\nservices:\n  a:\n    depends: [ { service: b } ]\n  b: {}\n")

    for i, url in enumerate(["memory://", "objectstore+file:///var/lib/x?sync=1&a=b",
                             "grpc+unix:///run/obi.sock", "grpc+http://[::1]:8000/p%20q",
                             "/plain/path", "oci:/srv/images/web:1.0", "sqlite:///x?a&b=%41"]):
        put("url", "url%d" % i, url)

    put("digest", "base64", b"\x00" + base64.b64encode(bytes(range(32))))
    put("digest", "base64-urlsafe", b"\x00" + base64.urlsafe_b64encode(b"\xfb\xff\xfe"))
    # Nix base32 of 32 bytes (selector: decoder 1, length (31 << 2) -> 32 bytes)
    put("digest", "nixbase32", bytes([1 | (31 << 2)]) +
        b"0c5b8vw40dy178xlpddw65q9gf1h2186jcc3p4swinwggbllv8mk")
    put("digest", "hex", bytes([2 | (3 << 2)]) + b"deadBEEF")
    put("digest", "digest-hex", b"\x03" + hashlib.sha256(b"x").hexdigest().encode())

    config = {"architecture": "amd64", "os": "linux",
              "config": {"Env": ["PATH=/bin", "A=b"], "Entrypoint": ["/bin/sh"],
                         "Cmd": ["-c", "true"], "WorkingDir": "/srv", "User": "1000:1000"},
              "rootfs": {"type": "layers", "diff_ids": []}}
    put("image_config", "config.json", json.dumps(config))
    put("image_config", "empty-config.json", '{"config": {}}')

    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": "@CONFIG@", "size": 0},
                "layers": []}
    index = {"schemaVersion": 2,
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": "@MANIFEST@", "size": 0,
                            "annotations": {"org.opencontainers.image.ref.name": "1.0"}}]}
    def layout(i, m):
        return (json.dumps(i).replace('"size": 0', '"size": @MSIZE@', 1) + "\0" +
                json.dumps(m).replace('"size": 0', '"size": @CSIZE@', 1) + "\0" +
                json.dumps(config))
    put("image_layout", "no-layers", layout(index, manifest))
    manifest["layers"] = [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                           "digest": "sha256:" + "0" * 64, "size": 10}]
    put("image_layout", "missing-layer", layout(index, manifest))


if __name__ == "__main__":
    main()
