#!/bin/sh
# Release steps for the warren Salt states, run with `cmd.script ... stateful: True`:
# the last line of stdout is `changed=yes|no comment="..."`, and a non-zero exit
# fails the state. Every step is idempotent.
#
#   release.sh verify   HOME COMPONENT VERSION SHA256
#   release.sh unpack   HOME COMPONENT VERSION SHA256
#   release.sh switch   HOME VERSION
#   release.sh prune    HOME COMPONENT
#   release.sh rollback HOME COMPONENT VERSION MANAGER CONF_FILE READY_URL TIMEOUT
#
# HOME is {root}/COMPONENT: releases/VERSION/ holds one release, `current` and
# `previous` are relative symlinks into releases/, downloads/ the tarballs.
set -u

say() { # changed comment
    printf 'changed=%s comment="%s"\n' "$1" "$(printf '%s' "$2" | tr '"' "'")"
}

# Points LINK at TARGET atomically: a new symlink renamed over the old one.
relink() { # HOME LINK TARGET
    ln -sfn "$3" "$1/$2.tmp" && mv -T "$1/$2.tmp" "$1/$2"
}

# The downloaded tarball must have the assigned sha256. (file.managed ignores
# source_hash for salt:// sources, so this check is ours.)
verify() {
    home=$1 comp=$2 ver=$3 sha=$4
    tarball=$home/downloads/$comp-$ver.tar.gz
    actual=$(sha256sum "$tarball" 2>/dev/null | cut -d' ' -f1)
    if [ -z "$actual" ]; then
        say no "cannot read $tarball to check its sha256"
        exit 1
    fi
    if [ "$actual" != "$sha" ]; then
        cur=$(readlink "$home/current" 2>/dev/null || true)
        rm -f "$tarball"
        say no "checksum mismatch: the sha256 of $comp $ver ($tarball, now deleted) is $actual, which does not match the assigned sha256 $sha; nothing was installed or switched, current stays ${cur:-unset}"
        exit 1
    fi
    say no "sha256 of $comp-$ver.tar.gz matches the assigned $sha"
}

unpack() {
    home=$1 comp=$2 ver=$3 sha=$4
    dir=$home/releases/$ver
    tarball=$home/downloads/$comp-$ver.tar.gz
    if [ -f "$dir/.tarball-sha256" ] && [ "$(cat "$dir/.tarball-sha256")" = "$sha" ] && [ -x "$dir/$comp" ]; then
        say no "$comp $ver is already unpacked in $dir"
        return 0
    fi
    tmp=$home/releases/.$ver.tmp
    rm -rf "$tmp" && mkdir -p "$tmp" || { say no "cannot create $tmp"; exit 1; }
    if ! out=$(tar -xzf "$tarball" -C "$tmp" --strip-components=1 --no-same-owner 2>&1); then
        rm -rf "$tmp"; say no "cannot unpack $tarball: $out"; exit 1
    fi
    if [ ! -x "$tmp/$comp" ] || [ ! -f "$tmp/release.json" ]; then
        rm -rf "$tmp"; say no "$tarball does not hold $comp-$ver/$comp and $comp-$ver/release.json"; exit 1
    fi
    # Literally equal: a version is text, not a pattern (`1.2.3` is not `1x2x3`).
    if ! why=$(manifest_is_version "$tmp/release.json" "$ver"); then
        rm -rf "$tmp"; say no "$tarball is not version $ver: $why"; exit 1
    fi
    # Readable and runnable by the service user, writable by root alone,
    # whatever modes the tarball carried.
    chmod -R u+rwX,go+rX,go-w "$tmp" || { rm -rf "$tmp"; say no "cannot set the modes of $tmp"; exit 1; }
    printf '%s\n' "$sha" > "$tmp/.tarball-sha256"
    rm -rf "$dir" && mv -T "$tmp" "$dir" || { say no "cannot move $tmp to $dir"; exit 1; }
    say yes "unpacked $comp $ver into $dir"
}

switch() {
    home=$1 ver=$2
    cur=$(readlink "$home/current" 2>/dev/null || true)
    if [ "$cur" = "releases/$ver" ]; then
        say no "current already points to releases/$ver"
        return 0
    fi
    if [ -n "$cur" ]; then
        relink "$home" previous "$cur" || { say no "cannot write $home/previous"; exit 1; }
    fi
    relink "$home" current "releases/$ver" || { say no "cannot switch $home/current"; exit 1; }
    say yes "current -> releases/$ver (was ${cur:-nothing})"
}

prune() {
    home=$1 comp=$2
    keep_cur=$(basename "$(readlink "$home/current" 2>/dev/null || echo none)")
    keep_prev=$(basename "$(readlink "$home/previous" 2>/dev/null || echo none)")
    removed=""
    for d in "$home"/releases/* "$home"/releases/.*.tmp; do
        [ -e "$d" ] || continue
        name=$(basename "$d")
        [ "$name" = "$keep_cur" ] || [ "$name" = "$keep_prev" ] && continue
        rm -rf "$d" && removed="$removed releases/$name"
    done
    for f in "$home"/downloads/*; do
        [ -e "$f" ] || continue
        name=$(basename "$f")
        [ "$name" = "$comp-$keep_cur.tar.gz" ] || [ "$name" = "$comp-$keep_prev.tar.gz" ] && continue
        rm -f "$f" && removed="$removed downloads/$name"
    done
    if [ -n "$removed" ]; then
        say yes "kept releases/$keep_cur (current) and releases/$keep_prev (previous); removed$removed"
    else
        say no "nothing to prune: releases holds only current ($keep_cur) and previous ($keep_prev)"
    fi
}

# Succeeds when release.json's `version` is exactly VERSION (parsed as JSON
# and compared as text); otherwise prints why not.
manifest_is_version() { # FILE VERSION
    "${WARREN_PYTHON:-python3}" - "$1" "$2" <<'PY'
import json, sys
try:
    with open(sys.argv[1]) as f:
        found = json.load(f).get("version")
except Exception as e:
    print(f"its release.json cannot be read ({e})")
    sys.exit(1)
if found != sys.argv[2]:
    print(f"its release.json says version {json.dumps(found)}")
    sys.exit(1)
PY
}

# The certificate of an https URL is not checked: the probe asks our own
# process on its own address (not the name the certificate is for), sends
# nothing and reads only the status.
ready() { # READY_URL TIMEOUT -> 0 when GET READY_URL answers 200 within TIMEOUT seconds
    "${WARREN_PYTHON:-python3}" - "$1" "$2" <<'PY'
import ssl, sys, time, urllib.request
url, deadline = sys.argv[1], time.time() + float(sys.argv[2])
unchecked = ssl._create_unverified_context()
while time.time() < deadline:
    try:
        if urllib.request.urlopen(url, timeout=2, context=unchecked).status == 200:
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.5)
sys.exit(1)
PY
}

rollback() {
    home=$1 comp=$2 ver=$3 manager=$4 conf=$5 url=$6 timeout=$7
    what="$comp $ver did not become ready (GET $url answering 200 and ${comp}_build_info reporting $ver) within ${timeout}s"
    cur=$(readlink "$home/current" 2>/dev/null || true)
    prev=$(readlink "$home/previous" 2>/dev/null || true)
    if [ -z "$prev" ] || [ "$prev" = "releases/$ver" ] || [ ! -x "$home/$prev/$comp" ]; then
        say no "$what; there is no previous release to roll back to, so current stays ${cur:-unset}"
        exit 1
    fi
    if [ "$cur" != "$prev" ]; then
        relink "$home" current "$prev" || { say no "$what; switching current back to $prev FAILED"; exit 1; }
    fi
    # The edge goes back in place, refusing nothing (its old worker may even
    # be serving still, if the new one never started); a restart only when
    # its supervisor is not there to ask.
    how=restarted
    if [ "$comp" = edge ] && out=$("$home/current/edge" upgrade --config "$home/edge.yaml" 2>&1); then
        how="upgraded in place back to it"
    else
        case $manager in
            supervisord) out=$(supervisorctl -c "$conf" restart "warren-$comp" 2>&1) ;;
            systemd) out=$(systemctl restart "warren-$comp" 2>&1) ;;
            *) out="unknown service manager $manager"; false ;;
        esac
    fi
    if [ $? -ne 0 ]; then
        say yes "$what; rolled back current to $prev, but restarting warren-$comp failed: $out"
        exit 1
    fi
    if ready "$url" "$timeout"; then
        say yes "$what; ROLLED BACK: current points to $prev again and warren-$comp was $how and is ready, so this host keeps serving $(basename "$prev")"
    else
        say yes "$what; rolled back current to $prev and restarted warren-$comp, but it is not ready either"
    fi
    # The rollout failed either way: fail the state so the run reports it.
    exit 1
}

cmd=${1:-}; [ $# -gt 0 ] && shift
case $cmd in
    verify) [ $# -eq 4 ] && verify "$@" ;;
    unpack) [ $# -eq 4 ] && unpack "$@" ;;
    switch) [ $# -eq 2 ] && switch "$@" ;;
    prune) [ $# -eq 2 ] && prune "$@" ;;
    rollback) [ $# -eq 7 ] && rollback "$@" ;;
    *) say no "usage: release.sh verify|unpack|switch|prune|rollback ARGS"; exit 2 ;;
esac || { say no "release.sh $cmd: wrong arguments"; exit 2; }
