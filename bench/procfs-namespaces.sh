# Sourced by the bench scripts that run mapwatch beside pid namespaces with
# a procfs of their own: sets $work (a temporary directory) and defines
# start_procfs_namespaces N, which starts N-1 of them (`unshare -pf
# --mount-proc`) beside the host's procfs. At exit the namespaces are
# killed and waited for (so a next run starts with none of them left) and
# $work is removed.
work=$(mktemp -d)
namespaces=()
trap 'for p in "${namespaces[@]}"; do kill -9 "$p" 2> /dev/null || true; done; wait "${namespaces[@]}" 2> /dev/null || true; rm -rf "$work"' EXIT

start_procfs_namespaces() {
    local _
    for _ in $(seq 2 "$1"); do
        unshare -pf --mount-proc --kill-child sleep 1000000 &
        namespaces+=("$!")
    done
}
