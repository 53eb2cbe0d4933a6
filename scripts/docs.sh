#!/usr/bin/env bash
# Builds the DocC documentation of the library modules from the debug build's modules (run `swift build` first),
# failing on any DocC warning (a broken symbol link, say). Output: .build/docs/<Module>.doccarchive.
# Usage: scripts/docs.sh [Module ...]   (default: every library module)
set -euo pipefail
cd "$(dirname "$0")/.."

modules=("$@")
[ ${#modules[@]} -gt 0 ] || modules=(SwitchboardCore SwitchboardCatalog SwitchboardAgent SwitchboardClient SwitchboardDNS SwitchboardGateway SwitchboardEtcd)
bin=$(swift build --show-bin-path)
triple=$(swiftc -print-target-info | python3 -c 'import json, sys; print(json.load(sys.stdin)["target"]["triple"])')

# The C modules the Swift modules import, as the build saw them.
clang_args=()
while IFS= read -r map; do clang_args+=(-Xcc "-fmodule-map-file=$map"); done \
    < <(find -L "$bin" -maxdepth 2 -name module.modulemap)
while IFS= read -r dir; do clang_args+=(-Xcc "-I$dir"); done < <(find "$PWD/.build/checkouts" -type d -name include)
# System-library targets (GRDB's SQLite) keep their module map in their sources.
clang_args+=(-Xcc "-fmodule-map-file=$PWD/.build/checkouts/GRDB.swift/Sources/GRDBSQLite/module.modulemap")

mkdir -p .build/docs
for module in "${modules[@]}"; do
    graphs=$(mktemp -d)
    swift symbolgraph-extract -module-name "$module" -I "$bin/Modules" -target "$triple" -output-dir "$graphs" \
        -minimum-access-level public "${clang_args[@]}"
    docc convert "Sources/$module/$module.docc" --additional-symbol-graph-dir "$graphs" \
        --output-path ".build/docs/$module.doccarchive" --fallback-display-name "$module" \
        --fallback-bundle-identifier "switchboard.$module" --warnings-as-errors
    rm -rf "$graphs"
    echo "documentation of $module: .build/docs/$module.doccarchive"
done
