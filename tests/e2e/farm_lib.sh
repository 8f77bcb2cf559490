# Farm nodes on loopback for tests/e2e/test_farm.sh and bench/farm.sh (docs/farm.md): each node
# is a real sshd on a random 127.0.0.1 port whose only key (made here) runs `ocibuild
# remote-builder --write` as a forced command on the node's own data dir, in a private mount
# namespace whose /nix/store is an empty tmpfs. Clients reach them as
# ssh://root@NODE with NIX_SSHOPTS="-F $F/ssh_config" (one Host block per node: port and host
# key alias; known_hosts made here, strict checking). Needs F (a directory of the caller's),
# OCIBUILD, and t_cleanup CMD (run at exit); sshd are stopped there, or by stop_node.
SSHD=${SSHD:-$(command -v sshd || echo /usr/sbin/sshd)}

farm_free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

farm_init() { # the client's key, the ssh config's common part
  mkdir -p "$F" /run/sshd # sshd's privilege separation dir (the package makes it at boot)
  ssh-keygen -q -t ed25519 -N "" -f "$F/client_key"
  : >"$F/ssh_hosts"
  : >"$F/known_hosts"
  # Appended after the nodes' blocks: ssh takes the first value it finds for an option.
  cat >"$F/ssh_config.tail" <<EOF
Host *
  BatchMode yes
  UserKnownHostsFile $F/known_hosts
  StrictHostKeyChecking yes
  IdentitiesOnly yes
  ConnectTimeout 5
EOF
  export NIX_SSHOPTS="-F $F/ssh_config"
}

start_node() { # NAME [REMOTE-BUILDER ARGS...]: 0 once its sshd answers
  local name=$1 port dir=$F/$1; shift
  mkdir -p "$dir"
  port=$(farm_free_port)
  ssh-keygen -q -t ed25519 -N "" -f "$dir/host_key"
  # In a mount namespace of its own with an empty /nix/store: a node needs nothing of the host's
  # Nix store (docs/farm.md), and this proves it.
  printf 'command="%s",restrict %s\n' \
    "unshare --mount --propagation private sh -c 'mount -t tmpfs -o size=1m,mode=0755 farm-empty /nix/store && exec env OCIBUILD_DATA_DIR=$dir/data $OCIBUILD remote-builder --write $*'" \
    "$(cat "$F/client_key.pub")" >"$dir/authorized_keys"
  cat >"$dir/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_key
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin forced-commands-only
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $dir/sshd.pid
LogLevel VERBOSE
EOF
  "$SSHD" -D -e -f "$dir/sshd_config" 2>"$dir/sshd.log" &
  echo $! >"$dir/sshd.pid.ours"
  t_cleanup "kill $(cat "$dir/sshd.pid.ours") 2>/dev/null"
  printf 'Host %s\n  HostName 127.0.0.1\n  Port %s\n  HostKeyAlias %s\n' "$name" "$port" "$name" >>"$F/ssh_hosts"
  cat "$F/ssh_hosts" "$F/ssh_config.tail" >"$F/ssh_config"
  echo "$name $(cut -d' ' -f1,2 "$dir/host_key.pub")" >>"$F/known_hosts"
  for _ in $(seq 1 50); do
    ssh -F "$F/ssh_config" -i "$F/client_key" "root@$name" true </dev/null >/dev/null 2>&1
    [ $? -ne 255 ] && return 0 # 255: ssh itself failed; else the forced command ran (and saw EOF)
    sleep 0.1
  done
  return 1
}

stop_node() { # NAME
  kill "$(cat "$F/$1/sshd.pid.ours")" 2>/dev/null
  wait "$(cat "$F/$1/sshd.pid.ours")" 2>/dev/null
}

builder_line() { # [--jobs N] NODE...: Nix's builders lines (uri system key max-jobs speed)
  local node sep="" jobs=2
  [ "$1" = --jobs ] && { jobs=$2; shift 2; }
  for node in "$@"; do
    printf '%sssh://root@%s x86_64-linux %s %s 1 - - -' "$sep" "$node" "$F/client_key" "$jobs"
    sep=" ; "
  done
}

# Derivations nix-build said it built on NODE, in its log LOG.
node_built() { grep -c "^building '.*' on 'ssh://root@$1'" "$2"; }
# Paths (and their NAR bytes) the client copied to the nodes, from its log LOG.
shipped() { grep -c "^copying path '.*' to 'ssh://" "$1"; }
shipped_bytes() {
  local p total=0
  for p in $(sed -n "s/^copying path '\([^']*\)' to 'ssh:.*/\1/p" "$1"); do
    total=$((total + $(nix-store -q --size "$p")))
  done
  echo "$total"
}

# PIDs of NODE's remote-builders (known by the data dir in their environment).
node_processes() {
  local pid
  for pid in $(pgrep -f "$OCIBUILD remote-builder"); do
    tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qx "OCIBUILD_DATA_DIR=$F/$1/data" && echo "$pid"
  done
}
