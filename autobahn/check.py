#!/usr/bin/env python3
"""Check an Autobahn report directory (wstest or kosoku) and summarise it.

    check.py OUTDIR [SUMMARY] [--expected FILE] [--expect-cases N] [--fail-on-diff]

Reads OUTDIR/index.json, which both the original wstest and kosoku write as
    {agent: {case_id: {"behavior": ..., "behaviorClose": ...,
                       "remoteCloseCode": ..., "duration": ..., "reportfile": ...}}}
and:
  * prints the counts per behavior (OK, NON-STRICT, INFORMATIONAL,
    UNIMPLEMENTED, FAILED, and any other value seen);
  * lists every case whose behavior or behaviorClose is neither OK nor
    INFORMATIONAL (UNIMPLEMENTED and NON-STRICT included), with the
    result text from its per-case report, and exits 1 if there is any;
  * writes SUMMARY (if given): one line per case, sorted by case id,
    "CASE BEHAVIOR BEHAVIORCLOSE" (prefixed by the agent when the index
    holds more than one agent);
  * if --expected FILE exists, prints a unified diff of the summary against
    it (informational, unless --fail-on-diff);
  * with --expect-cases N, fails when the index does not hold exactly N
    cases per agent (a testee that crashed mid-run leaves cases out).

Exit status: 0 all good, 1 some case not OK/INFORMATIONAL (or count/diff
check failed), 2 no usable index.json.  Standard library only.
"""

import argparse
import collections
import difflib
import json
import os
import sys

PASSING = ("OK", "INFORMATIONAL")
KNOWN = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")


def case_key(case_id):
    """Natural sort key: '1.1.10' after '1.1.9'."""
    key = []
    for part in str(case_id).split("."):
        key.append((0, int(part), "") if part.isdigit() else (1, 0, part))
    return key


def load_index(outdir):
    path = os.path.join(outdir, "index.json")
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except FileNotFoundError:
        print("check: no %s (did the run finish and write its reports?)" % path, file=sys.stderr)
        return None
    except (OSError, ValueError) as e:
        print("check: cannot read %s: %s" % (path, e), file=sys.stderr)
        return None
    if not isinstance(index, dict) or not all(isinstance(v, dict) for v in index.values()):
        print("check: %s is not {agent: {case: {...}}}" % path, file=sys.stderr)
        return None
    return index


def case_detail(outdir, entry):
    """Short reason text from the per-case JSON report, if there is one."""
    name = entry.get("reportfile")
    if not name:
        return ""
    try:
        with open(os.path.join(outdir, name), encoding="utf-8") as f:
            rep = json.load(f)
    except (OSError, ValueError):
        return ""
    bits = []
    for k in ("result", "resultClose"):
        v = rep.get(k)
        if v:
            v = " ".join(str(v).split())
            bits.append("%s: %s" % (k, v[:300] + (" ..." if len(v) > 300 else "")))
    return "\n        ".join(bits)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", help="report directory holding index.json")
    ap.add_argument("summary", nargs="?", help="write the sorted per-case summary here")
    ap.add_argument("--expected", help="expected summary to diff against (skipped if the file is absent)")
    ap.add_argument("--expect-cases", type=int, help="number of cases each agent must have")
    ap.add_argument("--fail-on-diff", action="store_true", help="exit 1 when the summary differs from --expected")
    ap.add_argument("--label", default="", help="name printed in the headline (e.g. 'server/wstest')")
    ap.add_argument("--quiet-details", action="store_true", help="do not read per-case reports for failure reasons")
    args = ap.parse_args(argv)

    index = load_index(args.outdir)
    if index is None:
        return 2

    agents = sorted(index)
    multi = len(agents) > 1
    rc = 0
    total = 0
    beh = collections.Counter()
    beh_close = collections.Counter()
    bad = []
    lines = []
    for agent in agents:
        cases = index[agent]
        if args.expect_cases is not None and len(cases) != args.expect_cases:
            print("check: agent %r has %d cases, expected %d (testee crashed or hung mid-run?)"
                  % (agent, len(cases), args.expect_cases))
            rc = 1
        for cid in sorted(cases, key=case_key):
            e = cases[cid] if isinstance(cases[cid], dict) else {}
            b = str(e.get("behavior", "MISSING"))
            bc = str(e.get("behaviorClose", "MISSING"))
            total += 1
            beh[b] += 1
            beh_close[bc] += 1
            lines.append("%s%s %s %s" % (agent + " " if multi else "", cid, b, bc))
            if b not in PASSING or bc not in PASSING:
                bad.append((agent, cid, b, bc, e))

    if total == 0:
        print("check: index.json holds no cases")
        rc = 1

    title = "Autobahn results" + (" (%s)" % args.label if args.label else "")
    print("%s: %d cases, agent%s %s" % (title, total, "s" if multi else "", ", ".join(agents) or "-"))
    order = list(KNOWN) + sorted((set(beh) | set(beh_close)) - set(KNOWN))
    print("  %-14s %9s %14s" % ("", "behavior", "behaviorClose"))
    for k in order:
        if k in KNOWN or beh[k] or beh_close[k]:
            print("  %-14s %9d %14d" % (k, beh[k], beh_close[k]))

    if bad:
        rc = 1
        print("\nNot OK/INFORMATIONAL (%d):" % len(bad))
        for agent, cid, b, bc, e in bad:
            extra = ""
            if e.get("remoteCloseCode") is not None:
                extra = " remoteCloseCode=%s" % e.get("remoteCloseCode")
            print("  %s%-10s behavior=%s behaviorClose=%s%s"
                  % (agent + " " if multi else "", cid, b, bc, extra))
            if not args.quiet_details:
                d = case_detail(args.outdir, e)
                if d:
                    print("        " + d)
            if e.get("reportfile"):
                print("        report: %s" % os.path.join(args.outdir, e["reportfile"].replace(".json", ".html")))

    text = "".join(l + "\n" for l in lines)
    if args.summary:
        d = os.path.dirname(os.path.abspath(args.summary))
        os.makedirs(d, exist_ok=True)
        with open(args.summary, "w", encoding="utf-8") as f:
            f.write(text)
        print("\nsummary written to %s" % args.summary)

    if args.expected:
        if os.path.exists(args.expected):
            with open(args.expected, encoding="utf-8") as f:
                exp = [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]
            diff = list(difflib.unified_diff(exp, [l for l in lines], args.expected,
                                             args.summary or "actual", lineterm="", n=0))
            if diff:
                print("\nDifferences from %s:" % args.expected)
                for l in diff:
                    print("  " + l)
                if args.fail_on_diff:
                    rc = 1
            else:
                print("matches %s" % args.expected)
        else:
            print("(no expected summary at %s; copy the summary there to track changes)" % args.expected)

    print("\nRESULT: %s" % ("PASS" if rc == 0 else "FAIL"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
