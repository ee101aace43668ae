# Shared by the VM tests (sourced): the Debian mirror apt already uses.
# shellcheck shell=bash

# The Debian mirror apt already uses (deb822 .sources or one-line .list), for suite $suite.
# Prints nothing when apt names no mirror for that suite. Reads $suite.
apt_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        # deb822 stanzas are separated by blank lines; want Types: deb, Suites containing $suite.
        awk -v suite="$suite" '
            BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; ok_type = 0; ok_suite = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^Types:/ && $i ~ /(^|[ \t])deb([ \t]|$)/) ok_type = 1
                    if ($i ~ /^URIs:/) { uris = $i; sub(/^URIs:[ \t]*/, "", uris) }
                    if ($i ~ /^Suites:/) {
                        n = split($i, s, /[ \t]+/)
                        for (j = 2; j <= n; j++) if (s[j] == suite) ok_suite = 1
                    }
                }
                if (ok_type && ok_suite && uris != "") { split(uris, u, /[ \t]+/); print u[1]; exit }
            }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        # deb [options] URI SUITE COMPONENTS...
        sed -E 's/\[[^]]*\]//' "$f" | awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2 }'
    done
}
