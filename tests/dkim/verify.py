"""Verifies every DKIM-Signature of a message with dkimpy, an implementation independent of
Sangha's signer. Used by tests/api/dkim.rs.

Usage: verify.py MESSAGE_FILE NAME=VALUE...
Each NAME=VALUE is a DNS TXT record (NAME like sel._domainkey.example.org); no real DNS is asked.
Prints one line per signature, "pass" or "fail", with its s= and a= tags; exits 0 only when
there is at least one signature and all of them pass.
"""
import sys

import dkim

message = open(sys.argv[1], "rb").read()
records = {}
for arg in sys.argv[2:]:
    name, _, value = arg.partition("=")
    records[name.rstrip(".").lower()] = value.encode()


def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    return records.get(name.rstrip(".").lower())


headers, _ = dkim.rfc822_parse(message)
signatures = [v for (n, v) in headers if n.lower() == b"dkim-signature"]
if not signatures:
    print("no DKIM-Signature header")
    sys.exit(1)
failed = 0
for idx, value in enumerate(signatures):
    tags = dkim.util.parse_tag_value(value)
    try:
        ok = dkim.DKIM(message).verify(idx=idx, dnsfunc=dnsfunc)
    except dkim.DKIMException as e:
        print("error:", e)
        ok = False
    failed += 0 if ok else 1
    print(
        "pass" if ok else "fail",
        "s=" + tags[b"s"].decode(),
        "a=" + tags[b"a"].decode(),
        "c=" + tags.get(b"c", b"simple/simple").decode(),
        "h=" + "".join(tags[b"h"].decode().split()),
    )
sys.exit(1 if failed else 0)
