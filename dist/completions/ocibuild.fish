# fish completion for ocibuild (installed to share/fish/vendor_completions.d/ocibuild.fish):
# commands, the subcommands of store and service, each command's options, the values of the
# options that have few, files otherwise. The same lists as ocibuild.bash and _ocibuild
# (tests/e2e/test_packaging.sh checks all three against `ocibuild --help`).

set -l commands build hash service nar-hash show-derivation nix-build remote-builder store spec daemon
set -l store_commands import export cat ls verify mount gc roots du
set -l service_commands spec bundle up ps logs down stop restart exec ls

complete -c ocibuild -f -n "not __fish_seen_subcommand_from $commands" -l help -d 'usage'
complete -c ocibuild -f -n "not __fish_seen_subcommand_from $commands" -l version -d 'version'
complete -c ocibuild -f -n "not __fish_seen_subcommand_from $commands" -a build -d 'run a BuildRequest in an OCI runtime'
complete -c ocibuild -f -n "not __fish_seen_subcommand_from $commands" -a hash -d 'BLAKE3 digests of files'
complete -c ocibuild -f -n "not __fish_seen_subcommand_from $commands" -a service -d 'services from a deployment YAML'
complete -c ocibuild -f -n "not __fish_seen_subcommand_from $commands" -a nar-hash -d 'NAR hashes of paths'
complete -c ocibuild -f -n "not __fish_seen_subcommand_from $commands" -a show-derivation -d 'print .drv files as JSON'
complete -c ocibuild -f -n "not __fish_seen_subcommand_from $commands" -a nix-build -d 'build a Nix .drv here'
complete -c ocibuild -f -n "not __fish_seen_subcommand_from $commands" -a remote-builder -d 'a Nix remote builder'
complete -c ocibuild -f -n "not __fish_seen_subcommand_from $commands" -a store -d 'the castore: import, export, gc, ...'
complete -c ocibuild -f -n "not __fish_seen_subcommand_from $commands" -a spec -d 'the OCI config.json for a BuildRequest'
complete -c ocibuild -f -n "not __fish_seen_subcommand_from $commands" -a daemon -d 'serve the services over gRPC'

# the builder's options: build, nix-build, remote-builder
set -l builders "__fish_seen_subcommand_from build nix-build remote-builder"
for opt in store blob-service directory-service build-service timeout max-builds bundle-root max-pids memory scratch-limit root sandbox-shell
    complete -c ocibuild -n $builders -l $opt -r
end
complete -c ocibuild -n $builders -l runtime -x -a 'runc crun'
complete -c ocibuild -n $builders -l log-level -x -a 'error warn info debug'
for opt in rootless rootful keep-bundle quiet verbose help
    complete -c ocibuild -n $builders -l $opt
end
complete -c ocibuild -n '__fish_seen_subcommand_from build' -l json -d 'print the Build as JSON'
complete -c ocibuild -n '__fish_seen_subcommand_from build' -l out -r -d 'export the outputs into DIR'
for opt in out-link nix-store max-jobs attr
    complete -c ocibuild -n '__fish_seen_subcommand_from nix-build' -l $opt -r
end
for opt in no-out-link keep-failed no-register json
    complete -c ocibuild -n '__fish_seen_subcommand_from nix-build' -l $opt
end
complete -c ocibuild -n '__fish_seen_subcommand_from nix-build remote-builder' -l path-info -r
complete -c ocibuild -n '__fish_seen_subcommand_from nix-build remote-builder' -l cores -x
complete -c ocibuild -n '__fish_seen_subcommand_from remote-builder' -l write
complete -c ocibuild -n '__fish_seen_subcommand_from remote-builder' -l serve

complete -c ocibuild -n '__fish_seen_subcommand_from spec' -l rootless
complete -c ocibuild -n '__fish_seen_subcommand_from spec' -l sandbox-shell -r
complete -c ocibuild -n '__fish_seen_subcommand_from hash nar-hash show-derivation spec' -l help

# daemon
set -l daemon "__fish_seen_subcommand_from daemon"
for opt in listen build-service store blob-service directory-service grace tls-cert tls-key tls-client-ca socket-group idle-timeout max-message-bytes max-inflight-bytes path-info trusted-user
    complete -c ocibuild -n $daemon -l $opt -r
end
complete -c ocibuild -n $daemon -l log-level -x -a 'error warn info debug'
for opt in insecure-tcp snix-build-events help
    complete -c ocibuild -n $daemon -l $opt
end

# store SUBCOMMAND
set -l store_sub "__fish_seen_subcommand_from store; and not __fish_seen_subcommand_from $store_commands"
complete -c ocibuild -f -n $store_sub -a import -d 'ingest a path, print its root node'
complete -c ocibuild -f -n $store_sub -a export -d 'write a node, or a build\'s outputs'
complete -c ocibuild -f -n $store_sub -a cat -d 'write a blob to stdout'
complete -c ocibuild -f -n $store_sub -a ls -d 'list the tree under a node'
complete -c ocibuild -f -n $store_sub -a verify -d 'check every blob and directory'
complete -c ocibuild -f -n $store_sub -a mount -d 'serve a tree read-only over FUSE'
complete -c ocibuild -f -n $store_sub -a gc -d 'remove what no root keeps'
complete -c ocibuild -f -n $store_sub -a roots -d 'list the roots, remove one'
complete -c ocibuild -f -n $store_sub -a du -d 'what the store and caches take'
set -l store_in "__fish_seen_subcommand_from store; and __fish_seen_subcommand_from $store_commands"
for opt in store blob-service directory-service
    complete -c ocibuild -n $store_in -l $opt -r
end
complete -c ocibuild -n $store_in -l help
complete -c ocibuild -n "$store_in; and __fish_seen_subcommand_from import" -l name -r
complete -c ocibuild -n "$store_in; and __fish_seen_subcommand_from import" -l root -r
complete -c ocibuild -n "$store_in; and __fish_seen_subcommand_from mount" -l allow-other
complete -c ocibuild -n "$store_in; and __fish_seen_subcommand_from verify" -l repair
complete -c ocibuild -n "$store_in; and __fish_seen_subcommand_from gc" -l dry-run
complete -c ocibuild -n "$store_in; and __fish_seen_subcommand_from gc" -l max-freed -r
complete -c ocibuild -n "$store_in; and __fish_seen_subcommand_from gc du" -l input-cache -r
complete -c ocibuild -n "$store_in; and __fish_seen_subcommand_from roots" -l remove -r

# service SUBCOMMAND FILE.yaml
set -l service_sub "__fish_seen_subcommand_from service; and not __fish_seen_subcommand_from $service_commands"
complete -c ocibuild -f -n $service_sub -a spec -d 'the OCI config.json of one replica'
complete -c ocibuild -f -n $service_sub -a bundle -d 'an OCI bundle for one replica'
complete -c ocibuild -f -n $service_sub -a up -d 'start the replicas detached'
complete -c ocibuild -f -n $service_sub -a ps -d 'each replica\'s state'
complete -c ocibuild -f -n $service_sub -a logs -d 'a replica\'s log'
complete -c ocibuild -f -n $service_sub -a down -d 'stop and remove replicas'
complete -c ocibuild -f -n $service_sub -a stop -d 'stop replicas, keeping them'
complete -c ocibuild -f -n $service_sub -a restart -d 'stop and start replicas again'
complete -c ocibuild -f -n $service_sub -a exec -d 'run a command in a replica'
complete -c ocibuild -f -n $service_sub -a ls -d 'list the deployments'
set -l service_in "__fish_seen_subcommand_from service; and __fish_seen_subcommand_from $service_commands"
for opt in replica data-dir secrets-dir grace
    complete -c ocibuild -n $service_in -l $opt -r
end
complete -c ocibuild -n $service_in -l runtime -x -a 'runc crun'
complete -c ocibuild -n $service_in -l help
