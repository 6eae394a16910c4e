#!/usr/bin/env python3
"""Writes COUNT generated, distinct, real-shaped domains, one a line, to standard output.

    gen_domains.py COUNT [VERSION]

The same COUNT gives the same domains every run (fixed seed). VERSION 2 is the same
feed a day later: every 20th domain replaced by a new one (5 % churn), the rest kept,
so an update is neither a shrink nor a copy.
"""
import base64
import random
import sys

TLDS = [b"com"] * 8 + [b"net", b"org", b"info", b"xyz", b"co.uk", b"de", b"ru", b"io", b"top", b"online"]


def main() -> None:
    count = int(sys.argv[1])
    version = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    rng = random.Random(19)
    out = sys.stdout.buffer
    batch = 100_000
    for start in range(0, count, batch):
        n = min(batch, count - start)
        # 16 base32 characters (a-z, 2-7) per domain; lengths 5..16 from the random bytes.
        text = base64.b32encode(rng.randbytes(n * 10)).lower()
        picks = rng.randbytes(n * 2)
        lines = []
        for k in range(n):
            i = start + k
            name = text[16 * k : 16 * k + 5 + picks[2 * k] % 12]
            tld = TLDS[picks[2 * k + 1] % len(TLDS)]
            # A tenth carry a subdomain, as real feeds do (ads.example.com).
            prefix = b"cdn." if picks[2 * k + 1] < 26 else b""
            # The index makes names distinct: random ones may collide.
            suffix = b"-v2" if version == 2 and i % 20 == 0 else b""
            lines.append(b"%s%s%x%s.%s" % (prefix, name, i, suffix, tld))
        out.write(b"\n".join(lines) + b"\n")


if __name__ == "__main__":
    main()
