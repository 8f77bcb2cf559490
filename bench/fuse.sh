#!/bin/bash
# Inputs over FUSE against the copied (materialized) inputs, side by side in one run, rounds in
# alternating order (issue 20; figures in bench/README.md "FUSE"):
#  1. sequential read of a MIB-sized blob (default 1024): `cat` of the local blob file against
#     `cat` through a fresh `ocibuild store mount` (cold in the mount's page cache, the blob file
#     warm, so the figure is FUSE's own cost), then once more through the same mount; as a plain
#     file (read with direct I/O from the blob file, docs/castore.md "Mounting") and as an
#     executable file (the same blob, read through the mount's page cache); wall time, the
#     reader's CPU and the FUSE server's;
#  2. `find | wc -l` over a 100,000-entry directory: an exported (materialized) tree against a
#     fresh mount;
#  3. a build that reads one small file of an input holding a MIB-sized blob, whose store is a
#     daemon behind grpc+unix://: --inputs materialize against --inputs fuse, each build with a
#     fresh data dir (an empty input cache: the first build of that input on this machine);
#     wall time, the client's CPU (it serves the mount) and the daemon's.
# Usage: bench/fuse.sh [MIB] [ROUNDS] (default 1024, 3). Needs root (rootful runc builds).
set -eu
MIB=${1:-1024} ROUNDS=${2:-3}
OCIBUILD=${OCIBUILD:-$(cd "$(dirname "$0")/.." && pwd)/build/ocibuild}
[ "$(id -u)" -eq 0 ] || { echo "bench/fuse.sh: needs root (rootful runc builds)" >&2; exit 1; }
[ -c /dev/fuse ] || { echo "bench/fuse.sh: /dev/fuse is missing" >&2; exit 1; }
tmp=$(mktemp -d /tmp/obi-bench-fuse.XXXXXX)
cleanup() {
  [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  for m in $(grep -F " $tmp" /proc/self/mountinfo | cut -d' ' -f5 | sort -r); do umount -l "$m"; done
  rmdir "$tmp"
}
trap cleanup EXIT
# Everything on a tmpfs: the stores, the 100,000 files and the input caches are made and
# removed in seconds there (minutes on this VM's disk), and both sides read from memory, so
# the figures are FUSE's own cost.
mount -t tmpfs -o size=$((MIB * 3 + 1024))m,mode=0711 obi-bench-fuse "$tmp"

echo "preparing: a $MIB MiB blob, 100,000 entries, a daemon" >&2
mkdir -p "$tmp/src/input" "$tmp/src/many"
head -c "${MIB}M" /dev/urandom >"$tmp/src/input/large"
echo small-one >"$tmp/src/input/small"
python3 -c 'import sys
for i in range(100000): open("%s/f%06d" % (sys.argv[1], i), "w").write(str(i % 7))' "$tmp/src/many"
export OCIBUILD_DATA_DIR="$tmp/data" OCIBUILD_STORE="$tmp/store"
"$OCIBUILD" store import "$tmp/src/input/large" >"$tmp/large.json"
"$OCIBUILD" store import "$tmp/src/many" >"$tmp/many.json"
"$OCIBUILD" store export "$(cat "$tmp/many.json")" "$tmp/materialized"
large_hex=$(b3sum --no-names "$tmp/src/input/large")
blob="$tmp/store/blobs/${large_hex:0:2}/$large_hex"
rm -rf "$tmp/src/many"

"$OCIBUILD" daemon --listen "unix:$tmp/sock" --store "$tmp/dstore" 2>"$tmp/daemon.log" &
daemon=$!
for _ in $(seq 100); do [ -S "$tmp/sock" ] && break; sleep 0.1; done
remote="grpc+unix://$tmp/sock"
input=$("$OCIBUILD" store import --store "$remote" --name src "$tmp/src/input")
busybox=$("$OCIBUILD" store import --store "$remote" /bin/busybox)
rm -f "$tmp/src/input/large"
python3 - "$busybox" "$input" >"$tmp/req.json" <<'PY'
import json, sys
print(json.dumps({"inputs": [json.loads(sys.argv[1]), json.loads(sys.argv[2])],
                  "commandArgs": ["/nix/store/busybox", "sh", "-c",
                                  "mkdir -p /nix/store/out && cat /nix/store/src/small > /nix/store/out/small"],
                  "workingDir": "build", "scratchPaths": ["build", "nix/store"],
                  "inputsDir": "nix/store", "outputs": ["nix/store/out"]}))
PY
cat "$blob" >/dev/null # the blob file warm in the page cache

python3 - "$tmp" "$OCIBUILD" "$ROUNDS" "$MIB" "$blob" "$remote" "$daemon" <<'PY'
import json, os, resource, statistics, subprocess, sys, time
tmp, ocibuild, rounds, mib, blob, remote, daemon = sys.argv[1:8]
rounds, mib, daemon = int(rounds), int(mib), int(daemon)
tick = os.sysconf("SC_CLK_TCK")

def proc_cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick

def run(cmd, env=None, shell=False):
    """Wall seconds and CPU seconds (user + system) of one command and its children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    subprocess.run(cmd, check=True, env=env, shell=shell, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

class Mount:
    """`ocibuild store mount` of a node at a fresh mountpoint."""
    n = 0
    def __init__(self, node):
        Mount.n += 1
        self.path = f"{tmp}/mnt{Mount.n}"
        os.mkdir(self.path)
        self.proc = subprocess.Popen([ocibuild, "store", "mount", node, self.path],
                                     stderr=subprocess.DEVNULL)
        for _ in range(200):
            if any(f" {self.path} " in l for l in open("/proc/self/mountinfo")):
                return
            time.sleep(0.05)
        raise SystemExit("mount did not appear")
    def close(self):
        self.proc.terminate(); self.proc.wait()

results = {}
def record(case, side, wall, cpu, server=0.0):
    results.setdefault(case, {}).setdefault(side, []).append((wall, cpu, server))

large = open(f"{tmp}/large.json").read()
large_node = json.loads(large)["file"]
large_exec = json.dumps({"file": dict(large_node, executable=True)})
many = open(f"{tmp}/many.json").read()
read_cases = (("read", large), ("read-exec", large_exec))
for r in range(rounds):
    for side in (("local", "fuse") if r % 2 == 0 else ("fuse", "local")):
        # 1. sequential read, cold in the mount and again (the blob file warm all along)
        for case, node in read_cases:
            if side == "local":
                record(case, side, *run(["cat", blob]))
                record(case + "-again", side, *run(["cat", blob]))
                continue
            m = Mount(node)
            for c in (case, case + "-again"):
                c0 = proc_cpu(m.proc.pid)
                wall, cpu = run(["cat", f"{m.path}/large"])
                record(c, side, wall, cpu, proc_cpu(m.proc.pid) - c0)
            m.close()
        # 2. find | wc -l
        if side == "local":
            record("find", side, *run(f"find {tmp}/materialized | wc -l", shell=True))
        else:
            m = Mount(many); c0 = proc_cpu(m.proc.pid)
            wall, cpu = run(f"find {m.path} | wc -l", shell=True)
            record("find", side, wall, cpu, proc_cpu(m.proc.pid) - c0); m.close()
        # 3. one small file of a large remote input
        mode = "materialize" if side == "local" else "fuse"
        env = dict(os.environ, OCIBUILD_DATA_DIR=f"{tmp}/build-{mode}-{r}")
        d0 = proc_cpu(daemon)
        wall, cpu = run([ocibuild, "build", "--store", remote, "--inputs", mode, f"{tmp}/req.json"], env=env)
        record("build", side, wall, cpu, proc_cpu(daemon) - d0)
        subprocess.run(["rm", "-rf", env["OCIBUILD_DATA_DIR"]])

names = {"read": f"sequential read of {mib} MiB, a plain file (direct I/O), fresh mount",
         "read-again": f"sequential read of {mib} MiB, a plain file (direct I/O), once more",
         "read-exec": f"sequential read of {mib} MiB, an executable (page cache), fresh mount",
         "read-exec-again": f"sequential read of {mib} MiB, an executable (page cache), once more",
         "find": "find | wc -l, 100,000 entries",
         "build": f"build reading 1 small file of a {mib} MiB remote input"}
sides = {"find": ("materialized", "FUSE"), "build": ("materialize", "FUSE")}
for case, by_side in results.items():
    print(f"{names[case]} ({rounds} rounds, alternating):")
    med = {}
    reading = case.startswith("read")
    for side, label in zip(("local", "fuse"), sides.get(case, ("local blob file", "FUSE"))):
        rows = by_side[side]
        med[side] = statistics.median(w for w, _, _ in rows)
        extra = f", server/daemon CPU {statistics.median(s for _, _, s in rows)*1000:.0f} ms" if not reading or side == "fuse" else ""
        print(f"  {label:16s} wall median {med[side]*1000:8.1f} ms (all: {', '.join(f'{w*1000:.0f}' for w, _, _ in rows)}), "
              f"CPU {statistics.median(c for _, c, _ in rows)*1000:.0f} ms{extra}")
    ratio = med["fuse"] / med["local"]
    if reading:
        print(f"  FUSE throughput / local file throughput: {1/ratio:.2f}x ({mib/med['fuse']:.0f} vs {mib/med['local']:.0f} MiB/s)")
    else:
        print(f"  FUSE / {sides[case][0]} wall: {ratio:.3f}x")
    if reading:
        tot = {s: statistics.median(c + v for _, c, v in by_side[s]) for s in ("local", "fuse")}
        print(f"  CPU, reader + server: local {tot['local']*1000:.0f} ms, FUSE {tot['fuse']*1000:.0f} ms ({tot['local']/tot['fuse']:.2f}x)")
PY
