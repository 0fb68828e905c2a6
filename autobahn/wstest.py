"""Runs the original wstest (Python 2.7) with a faster check of incoming UTF-8.

    $AUTOBAHN_VENV/bin/python autobahn/wstest.py -m fuzzingclient -s spec.json
    $AUTOBAHN_VENV/bin/python autobahn/wstest.py --self-test

wstest checks every text message it receives with wsaccel's Utf8Validator,
an incremental DFA that runs at about 4 MB/s here: three quarters of the
CPU time of a permessage-deflate case (12.*, 13.*) goes into it. This
wrapper gives the same answers (the same quadruple for every call, failure
positions included) but lets Python's own C decoder vouch for the long
runs of whole code points it accepts, and hands everything else to the
original validator:

  * bytes that finish a code point begun in the previous chunk (at most 3);
  * the bytes from the first one Python rejects (an invalid sequence or a
    code point cut at the end of the chunk);
  * any chunk whose decoded text holds a surrogate: Python 2 accepts
    encoded surrogates (ED A0 80 ...), RFC 3629 and the DFA do not.

Before it patches anything it checks itself against the original validator
and autobahn's pure-Python DFA on random chunked input, and refuses to run
wstest if they disagree. Only the validator that autobahn's protocol uses
for received frames is replaced; the case definitions keep their own.
WSTEST_FAST_UTF8=0 runs wstest unpatched.
"""

import os
import random
import re
import sys

from autobahn.websocket import protocol as _protocol
from autobahn.websocket import utf8validator as _utf8

Original = _protocol.Utf8Validator
_SURROGATE = re.compile(u"[\ud800-\udfff]")


def _valid_prefix(ba, start):
    """Length of the longest run of whole, valid code points at ba[start:]."""
    s = ba[start:]
    try:
        u = s.decode("utf-8")
        n = len(s)
    except UnicodeDecodeError as e:
        n = e.start
        u = s[:n].decode("utf-8")
    # Only ED A0..BF encodes a surrogate: no ED byte, nothing to search.
    if "\xed" in s and _SURROGATE.search(u):
        return 0
    return n


class FastUtf8Validator(object):
    """Same interface and results as autobahn's Utf8Validator."""

    def __init__(self):
        self._slow = Original()
        self.reset()

    def reset(self):
        self._slow.reset()
        self._skipped = 0       # bytes vouched for by Python's decoder
        self._slow_total = 0    # bytes the original validator has seen
        self._boundary = True   # the original is between code points

    def _slow_validate(self, chunk, before):
        """The original validator on chunk, reported as if from index before."""
        r = self._slow.validate(chunk)
        self._slow_total = r[3]
        self._boundary = r[0] and r[1]
        return r[0], r[1], r[2] + before, r[3] + self._skipped

    def validate(self, ba):
        if type(ba) is not str:
            return self._slow_validate(ba, 0)
        n = len(ba)
        i = 0
        # Finish a code point begun in the previous chunk, one byte at a time.
        while not self._boundary and i < n:
            r = self._slow_validate(ba[i], i)
            if not r[0]:
                return r
            i += 1
        if i < n:
            k = _valid_prefix(ba, i)
            self._skipped += k
            i += k
        if i < n:
            return self._slow_validate(ba[i:], i)
        return True, self._boundary, n, self._slow_total + self._skipped


# ---------------------------------------------------------------- self-test

class _Reference(object):
    """autobahn's pure-Python DFA (Hoehrmann), the definition of right."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.state = 0
        self.i = 0

    def validate(self, ba):
        dfa = _utf8.UTF8VALIDATOR_DFA
        state = self.state
        for i, c in enumerate(ba):
            state = dfa[256 + (state << 4) + dfa[ord(c)]]
            if state == 1:
                self.state = state
                self.i += i
                return False, False, i, self.i
        self.state = state
        self.i += len(ba)
        return True, state == 0, len(ba), self.i


def _piece(rnd):
    c = rnd.random()
    if c < 0.35:
        return "".join(chr(rnd.randrange(0x20, 0x7F)) for _ in range(rnd.randrange(1, 20)))
    if c < 0.75:
        cp = rnd.choice([rnd.randrange(0x80, 0x800), rnd.randrange(0x800, 0xD800),
                         rnd.randrange(0xE000, 0x10000), rnd.randrange(0x10000, 0x110000),
                         0x7F, 0x80, 0x7FF, 0x800, 0xD7FF, 0xE000, 0xFFFF, 0x10000, 0x10FFFF])
        return (u"\\U%08x" % cp).decode("unicode-escape").encode("utf-8")
    if c < 0.85:    # encoded surrogates, overlongs, past U+10FFFF, stray bytes
        return rnd.choice(["\xed\xa0\x80", "\xed\xbf\xbf", "\xed\x9f\xbf", "\xc0\x80", "\xc1\xbf",
                           "\xe0\x80\x80", "\xe0\x9f\xbf", "\xf0\x8f\xbf\xbf", "\xf4\x90\x80\x80",
                           "\xf5\x80\x80\x80", "\xfe", "\xff", "\x80", "\xbf", "\xe2\x82", "\xf0\x9f\x98"])
    return "".join(chr(rnd.randrange(256)) for _ in range(rnd.randrange(1, 6)))


def self_test(rounds=400, seed=None):
    """Compare FastUtf8Validator, the original and the reference call by call."""
    if seed is None:
        seed = random.randrange(1 << 32)
    rnd = random.Random(seed)
    for r in range(rounds):
        # Mostly valid text, so that chunks cross code points; sometimes broken.
        data = "".join(_piece(rnd) for _ in range(rnd.randrange(0, 40)))
        if rnd.random() < 0.5:
            data = data.decode("utf-8", "ignore").encode("utf-8")
        cuts = sorted(rnd.randrange(len(data) + 1) for _ in range(rnd.randrange(0, 6)))
        chunks = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
        chunks.append("")
        if rnd.random() < 0.3:
            chunks.append(_piece(rnd))
        vs = [FastUtf8Validator(), Original(), _Reference()]
        for repeat in range(2):     # and once more after reset()
            for ch in chunks:
                got = [tuple(v.validate(ch)) for v in vs]
                if got[0] != got[1] or got[0] != got[2]:
                    return "seed %d round %d: validate(%r) in %r: fast %r, original %r, reference %r" % (
                        seed, r, ch, chunks, got[0], got[1], got[2])
            for v in vs:
                v.reset()
    return None


def main():
    only_test = sys.argv[1:] == ["--self-test"]
    if only_test or os.environ.get("WSTEST_FAST_UTF8", "1") != "0":
        err = self_test()
        if err:
            sys.stderr.write("autobahn/wstest.py: the fast UTF-8 check disagrees with the original, "
                             "not running wstest (WSTEST_FAST_UTF8=0 runs it unpatched):\n  %s\n" % err)
            return 3
        if only_test:
            print("autobahn/wstest.py: fast UTF-8 check agrees with %s and the reference DFA" % Original)
            return 0
        _protocol.Utf8Validator = FastUtf8Validator
    from autobahntestsuite.wstest import run
    sys.argv[0] = "wstest"
    return run()


if __name__ == "__main__":
    sys.exit(main())
