# Shared by the Python end-to-end tests of `ocibuild daemon` (test_daemon_security.py,
# test_daemon_load.py): TAP output, Python gRPC stubs generated at run time from the project's
# own proto/ files, daemons started in a private temp dir (and always killed), their logs, ports,
# memory, and the containers and temp files they might leave behind. Not a test itself.
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OCIBUILD = os.environ.get("OCIBUILD", os.path.join(ROOT, "build", "ocibuild"))
PROTO = os.path.join(ROOT, "proto")


class Tap:
    """TAP lines: ok / not ok with the detail as # comments / loud skips."""

    def __init__(self):
        self.num = 0
        self.failed = 0

    def ok(self, name):
        self.num += 1
        print(f"ok {self.num} - {name}", flush=True)

    def not_ok(self, name, detail=""):
        self.num += 1
        self.failed += 1
        print(f"not ok {self.num} - {name}", flush=True)
        for line in str(detail).splitlines()[-40:]:
            print(f"#   {line}", flush=True)

    def skip(self, name, reason):
        self.num += 1
        print(f"ok {self.num} - {name} # SKIP {reason}", flush=True)
        print(f"!!! SKIPPED: {name}: {reason}", file=sys.stderr, flush=True)

    def check(self, name, cond, detail=""):
        if cond:
            self.ok(name)
        else:
            self.not_ok(name, detail)

    def done(self):
        print(f"1..{self.num}", flush=True)
        sys.exit(1 if self.failed else 0)


class Env:
    """A temp dir, generated stubs and the daemons started in it; close() cleans up."""

    def __init__(self, prefix):
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        # Searchable by others: a rootful build's container root (a host id of its id slot) must
        # reach the bundles below (docs/security.md "Build identity").
        os.chmod(self.tmp, 0o711)
        self.daemons = []
        self.grpc = None

    def load_stubs(self):
        """Imports grpc and the generated modules; returns None, or why they are missing."""
        try:
            import grpc  # noqa: F401
            from grpc_tools import protoc
        except ImportError as e:
            return f"python3-grpcio / python3-grpc-tools missing ({e})"
        gen = os.path.join(self.tmp, "gen")
        os.makedirs(gen)
        # Both generations (docs/rpc.md "Generations"): every .proto beneath proto/.
        protos = sorted(os.path.relpath(os.path.join(d, f), PROTO)
                        for d, _, files in os.walk(PROTO) for f in files if f.endswith(".proto"))
        if protoc.main(["protoc", f"-I{PROTO}", f"--python_out={gen}", f"--grpc_python_out={gen}"]
                       + protos) != 0:
            return "grpc_tools.protoc failed on proto/"
        sys.path.insert(0, gen)
        import grpc as grpc_module
        self.grpc = grpc_module
        return None

    def start_daemon(self, name, *args, preexec_fn=None, pass_fds=(), argv=None):
        log = open(os.path.join(self.tmp, f"{name}.log"), "wb")
        cmd = argv if argv is not None else [OCIBUILD, "daemon", *args]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, preexec_fn=preexec_fn,
                             pass_fds=pass_fds)
        p.log_path = log.name
        self.daemons.append(p)
        return p

    def close(self):
        for d in self.daemons:
            if d.poll() is None:
                d.kill()
                d.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def read_log(proc):
    with open(proc.log_path, "r", errors="replace") as f:
        return f.read()


def wait_for_socket(path, proc, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def wait_for_port(proc, timeout=15):
    """The port a daemon listening on HOST:0 logged, or None."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        for line in read_log(proc).splitlines():
            if "(port " in line:
                return int(line.rsplit("(port ", 1)[1].split(")")[0].split(",")[0])
        time.sleep(0.05)
    return None


def memory_kib(pid, field):
    """VmRSS or VmHWM of a process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def runc_containers_under(bundle_root):
    """Ids of runc containers (default state root) whose bundle is below bundle_root."""
    out = subprocess.run(["runc", "list", "--format", "json"], capture_output=True, text=True)
    return [c["id"] for c in (json.loads(out.stdout or "null") or [])
            if c.get("bundle", "").startswith(bundle_root)]


def entries(path):
    """Non-hidden entries of a directory (none if it does not exist)."""
    return sorted(x for x in os.listdir(path) if not x.startswith(".")) if os.path.isdir(path) else []


def can_build_with_runc():
    """None if rootful runc builds can run here, else why not."""
    if os.geteuid() != 0:
        return "not running as root: rootful runc builds need root"
    if not shutil.which("runc") or not os.path.exists("/bin/busybox"):
        return "runc or /bin/busybox missing (apt-get install runc busybox-static)"
    return None


def import_busybox(store_url):
    """Imports /bin/busybox into a store through the CLI; returns its Node as protobuf JSON."""
    r = subprocess.run([OCIBUILD, "store", "import", "--store", store_url, "--name", "busybox",
                        "/bin/busybox"], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"store import: {r.stderr}")
    return r.stdout


def build_request(build_pb2, cpb, busybox_json, script):
    """A BuildRequest that runs `sh -c script` in busybox and outputs nix/store/out."""
    from google.protobuf import json_format
    node = json_format.Parse(busybox_json, cpb.Node())
    return build_pb2.BuildRequest(
        inputs=[node], command_args=["/nix/store/busybox", "sh", "-c", script],
        working_dir="build", scratch_paths=["build", "nix/store"], inputs_dir="nix/store",
        outputs=["nix/store/out"])


def free_loopback_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def stop(proc, sig=signal.SIGTERM, timeout=30):
    """Signals a daemon and waits; its exit code, or "timeout"."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return "timeout"


def openssl(*args):
    r = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {r.stderr}")


def make_pki(d):
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate from the same
    CA, and a client certificate from a CA the daemon does not know."""
    os.makedirs(d)
    p = lambda name: os.path.join(d, name)  # noqa: E731
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", p(f"{ca}.key"), "-out", p(f"{ca}.pem"), "-days", "2",
                "-subj", f"/CN=ocibuild test {ca}")
    with open(p("server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    with open(p("client.ext"), "w") as f:
        f.write("extendedKeyUsage=clientAuth\n")
    for name, ca, ext in (("server", "ca", "server.ext"), ("client", "ca", "client.ext"),
                          ("stranger", "other-ca", "client.ext")):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", p(f"{name}.key"), "-out", p(f"{name}.csr"), "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", p(f"{name}.csr"), "-CA", p(f"{ca}.pem"), "-CAkey",
                p(f"{ca}.key"), "-CAcreateserial", "-out", p(f"{name}.pem"), "-days", "2",
                "-extfile", p(ext))
    return p
