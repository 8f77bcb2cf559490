# bash completion for ocibuild (installed to share/bash-completion/completions/ocibuild):
# commands, the subcommands of store and service, each command's options, files otherwise. The
# same lists as _ocibuild (zsh) and ocibuild.fish (tests/e2e/test_packaging.sh checks all three
# against `ocibuild --help`).
_ocibuild() {
    local cur prev words cword
    _init_completion || return
    local commands="build spec store hash nix-build nar-hash show-derivation remote-builder service
        daemon"
    local builder="--store --blob-service --directory-service --build-service --runtime
        --rootless --timeout --keep-bundle --sandbox-shell --max-builds --bundle-root
        --max-pids --memory --scratch-limit --root --rootful --log-level --quiet --verbose --help"
    local store_opts="--store --blob-service --directory-service --help"
    if [ "$cword" -eq 1 ]; then
        COMPREPLY=($(compgen -W "$commands --help --version" -- "$cur"))
        return
    fi
    case $prev in
        --store | --blob-service | --directory-service | --build-service | --timeout | \
            --max-builds | --max-pids | --memory | --scratch-limit | --max-freed | --remove | \
            --name | --cores | --grace | --replica | --log-level | --listen | --socket-group | \
            --idle-timeout | --max-message-bytes | --max-inflight-bytes | --insecure-registry | \
            --trusted-user | --max-jobs | --attr | --input-cache | --path-info | --registry-auth | \
            --tail)
            return ;;
        --runtime)
            COMPREPLY=($(compgen -W "runc crun" -- "$cur")) && return ;;
        --log-level)
            COMPREPLY=($(compgen -W "error warn info debug" -- "$cur")) && return ;;
    esac
    local opts=""
    case ${words[1]} in
        build) opts="$builder --json --out" ;;
        nix-build) opts="$builder --out-link --no-out-link --path-info --cores --nix-store
            --max-jobs --keep-failed --attr --no-register --json" ;;
        remote-builder) opts="$builder --write --serve --path-info --cores" ;;
        spec) opts="--rootless --sandbox-shell --help" ;;
        hash | nar-hash | show-derivation) opts="--help" ;;
        daemon) opts="--listen --build-service --store --blob-service --directory-service
            --log-level --grace --tls-cert --tls-key --tls-client-ca --insecure-tcp
            --socket-group --idle-timeout --max-message-bytes --max-inflight-bytes --path-info
            --trusted-user --snix-build-events --help" ;;
        store)
            if [ "$cword" -eq 2 ]; then
                COMPREPLY=($(compgen -W "import export cat ls verify mount gc roots du --help" -- "$cur"))
                return
            fi
            case ${words[2]} in
                import) opts="$store_opts --name --root" ;;
                mount) opts="$store_opts --allow-other" ;;
                verify) opts="$store_opts --repair" ;;
                gc) opts="$store_opts --dry-run --max-freed --input-cache" ;;
                roots) opts="$store_opts --remove" ;;
                du) opts="$store_opts --input-cache" ;;
                *) opts=$store_opts ;;
            esac ;;
        service)
            if [ "$cword" -eq 2 ]; then
                COMPREPLY=($(compgen -W "up ps logs down stop restart exec ls spec bundle --help" -- "$cur"))
                return
            fi
            opts="--replica --data-dir --secrets-dir --runtime --grace --registry-auth
                --insecure-registry --follow --tail --timestamps --json --volumes --help" ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        _filedir
    fi
}
complete -F _ocibuild ocibuild
