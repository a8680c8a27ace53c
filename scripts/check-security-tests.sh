#!/bin/sh
# Checks that every test docs/security.md names (`path/file.rs::test_name`) exists as a
# function in that file. Exits non-zero, listing the missing ones.
set -eu
cd "$(dirname "$0")/.."
missing=0
for ref in $(grep -oE '`[a-z0-9_/.-]+\.rs::[a-z0-9_]+`' docs/security.md | tr -d '`' | sort -u); do
    file=${ref%%::*}
    name=${ref##*::}
    if ! grep -qE "fn $name\b" "$file" 2>/dev/null; then
        echo "missing: $ref"
        missing=1
    fi
done
exit $missing
