#!/usr/bin/env bash
# Seeds each fuzz target's corpus from ../shared/testdata (real auditd
# records) and the shipped rules. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
samples=../../shared/testdata/peer-laurel
[ -d "$samples" ] || { echo "missing $samples (the shared test data beside this checkout)" >&2; exit 1; }
mkdir -p corpus/record corpus/execve corpus/assembler corpus/eql
n=0
for f in "$samples"/*.txt; do
    base=$(basename "$f" .txt)
    cp "$f" "corpus/assembler/$base"
    grep '^type=EXECVE' "$f" | sed 's/^[^)]*): //' > "corpus/execve/$base" || true
    [ -s "corpus/execve/$base" ] || rm -f "corpus/execve/$base"
    while IFS= read -r line; do
        n=$((n + 1))
        printf '%s' "$line" > "corpus/record/$n"
    done < "$f"
done
for rule in ../rules/*.toml; do
    awk "/^query = '''/{flag=1; next} /^'''/{flag=0} flag" "$rule" > "corpus/eql/$(basename "$rule" .toml)"
done
printf 'process where process.name : ("cat", "gr?p") and not process.args == null' > corpus/eql/extra1
printf 'file where file.path : "/proc/*/maps" and process.entry_leader.entry_meta.type in ("init", "sshd")' > corpus/eql/extra2
echo "seeded: $(ls corpus/record | wc -l) records, $(ls corpus/execve | wc -l) execve sets, $(ls corpus/assembler | wc -l) logs, $(ls corpus/eql | wc -l) queries"
