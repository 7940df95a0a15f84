#!/usr/bin/env python3
"""The master's view of the rollout controller's pillar: releases only.

Salt's `cmd_json` ext_pillar runs this on the master for each minion and
merges what it prints into that minion's pillar. It asks `rollout serve`'s
`GET /pillar/MINION` with curl and prints nothing but
`{"warren": {COMPONENT: {"release": {"version", "source", "sha256"}}}}`, so an
answer from anyone else (a stolen address, a tampered store, a proxy) can
assign a release to a host, which the states check against its sha256, but
cannot set any other pillar key: not `warren:root`, not a service's config,
not a key of another formula.

    release_pillar.py [--token-file FILE] -- curl CURL_OPTION... URL_PREFIX MINION_ID

`cmd_json` puts the minion id where the master config writes `%s`, and
splits the command line like a shell would, without running one. The id is
the last argument and must be a plain name (letters, digits, `.`, `_`, `-`);
an id that split into several words leaves a fragment in URL_PREFIX's place,
which must end in `/pillar/`, so it is refused too. The token is sent as a
header read by curl from its standard input (`-H @-`), never on a command
line (Salt logs command lines). Anything unexpected prints a reason and no
JSON: Salt then logs the failure and merges nothing, and the states keep the
release each host runs.

Standard library only: it runs with the master's own Python.
"""

import json
import re
import subprocess
import sys

MINION_ID = re.compile(r"[A-Za-z0-9._-]{1,253}")
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
SHA256 = re.compile(r"[0-9a-f]{64}")
SOURCE = re.compile(r"(salt|https?)://[\x21-\x7e]{1,2048}")
TOKEN = re.compile(r"[\x21-\x7e]{1,4096}")
COMPONENTS = ("edge", "connector")
RELEASE_KEYS = {"version", "source", "sha256"}
# The controller's answer is a few hundred bytes; anything this big is not it.
MAX_ANSWER = 64 * 1024
# curl has --max-time from the master config; this only bounds a curl that
# ignores it.
CURL_DEADLINE = 60


class Refused(Exception):
    """The answer or the invocation is not one to merge."""


def parse_args(argv):
    """(token_file, curl_argv, url_prefix, minion_id) from argv[1:]."""
    token_file = None
    args = list(argv)
    while args and args[0] != "--":
        flag = args.pop(0)
        if flag == "--token-file" and args:
            token_file = args.pop(0)
        elif flag.startswith("--token-file="):
            token_file = flag.split("=", 1)[1]
        else:
            raise Refused(f"unknown option {flag!r}; usage: {USAGE}")
    if not args:
        raise Refused(f"missing `--`; usage: {USAGE}")
    args.pop(0)
    if len(args) < 3:
        raise Refused(f"missing the curl command, URL prefix or minion id; usage: {USAGE}")
    *curl, prefix, minion = args
    if not minion_id_ok(minion):
        raise Refused(f"minion id {minion!r} is not a plain name (letters, digits, . _ -)")
    if not prefix.endswith("/pillar/"):
        raise Refused(
            f"{prefix!r} should be the controller's URL ending in /pillar/; "
            "a minion id with spaces or quotes splits into several arguments"
        )
    return token_file, curl, prefix, minion


USAGE = "release_pillar.py [--token-file FILE] -- curl CURL_OPTION... URL_PREFIX MINION_ID"


def minion_id_ok(minion):
    return bool(MINION_ID.fullmatch(minion)) and minion not in (".", "..")


def read_token(path):
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as e:
        raise Refused(f"cannot read the token file {path}: {e.strerror}") from None
    if not TOKEN.fullmatch(token):
        raise Refused(f"the token file {path} is empty or holds spaces or control characters")
    return token


def fetch(token, curl, url):
    """The body curl got, or Refused with curl's reason."""
    argv = list(curl)
    stdin = b""
    if token is not None:
        argv += ["-H", "@-"]
        stdin = f"Authorization: Bearer {token}\n".encode()
    argv.append(url)
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, timeout=CURL_DEADLINE, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Refused(f"cannot run {argv[0]}: {e}") from None
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip()[:300]
        raise Refused(f"{argv[0]} exited {done.returncode} for {url}: {why}")
    if len(done.stdout) > MAX_ANSWER:
        raise Refused(f"the answer from {url} is over {MAX_ANSWER} bytes")
    return done.stdout


def releases_only(body):
    """The pillar to merge: exactly the releases of the answer, checked."""
    try:
        answer = json.loads(body)
    except ValueError as e:
        raise Refused(f"the answer is not JSON: {e}") from None
    if not isinstance(answer, dict) or set(answer) != {"warren"}:
        raise Refused("the answer must be an object with the one key `warren`")
    warren = answer["warren"]
    if not isinstance(warren, dict):
        raise Refused("`warren` must be an object")
    out = {}
    for component, entry in warren.items():
        if component not in COMPONENTS:
            raise Refused(f"`warren:{component}` is not a component the controller assigns")
        if not isinstance(entry, dict) or set(entry) != {"release"}:
            raise Refused(f"`warren:{component}` must hold only `release`")
        out[component] = {"release": checked_release(component, entry["release"])}
    return {"warren": out}


def checked_release(component, release):
    where = f"warren:{component}:release"
    if not isinstance(release, dict) or set(release) != RELEASE_KEYS:
        raise Refused(f"`{where}` must hold exactly version, source and sha256")
    for key, pattern in (("version", VERSION), ("sha256", SHA256), ("source", SOURCE)):
        value = release[key]
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise Refused(f"`{where}:{key}` is not a valid {key}")
    return {k: release[k] for k in ("version", "source", "sha256")}


def main(argv):
    try:
        token_file, curl, prefix, minion = parse_args(argv)
        token = read_token(token_file) if token_file else None
        pillar = releases_only(fetch(token, curl, prefix + minion))
    except Refused as e:
        # Salt folds this into the output, fails to read it as JSON, logs the
        # command and merges nothing.
        print(f"release_pillar: {e}", file=sys.stderr)
        return 1
    print(json.dumps(pillar, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
