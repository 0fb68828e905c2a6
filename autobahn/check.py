#!/usr/bin/env python3
"""Check an Autobahn report directory (wstest or kosoku) and summarise it.

    check.py OUTDIR [SUMMARY] [--expected FILE] [--expect-cases N] [--fail-on-diff]
             [--cases LIST] [--exclude-cases LIST] [--update-expected]

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
  * with --expected FILE, compares the summary with the lines of FILE for
    the cases the run selected (--cases/--exclude-cases, comma-separated
    patterns read as wstest reads them: with a '*' a prefix pattern, else
    one case id; default all) and lists every case that differs, is
    missing or is extra; with --fail-on-diff that fails the check, and so
    does a missing FILE;
  * with --update-expected, writes the run's lines into FILE in place of
    the lines of the selected cases (the others are kept);
  * with --expect-cases N, fails when the index does not hold exactly N
    cases per agent (a testee that crashed mid-run leaves cases out).

Exit status: 0 all good, 1 some case not OK/INFORMATIONAL (or count/diff
check failed), 2 no usable index.json.  Standard library only.
"""

import argparse
import collections
import json
import os
import re
import sys

PASSING = ("OK", "INFORMATIONAL")
KNOWN = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")


def case_key(case_id):
    """Natural sort key: '1.1.10' after '1.1.9'."""
    key = []
    for part in str(case_id).split("."):
        key.append((0, int(part), "") if part.isdigit() else (1, 0, part))
    return key


def case_matcher(cases, exclude):
    """A predicate on case ids, as wstest selects cases from its spec."""
    def compile_list(text):
        pats = []
        for c in (text or "").split(","):
            c = c.strip()
            if not c:
                continue
            if "*" in c:
                pats.append(re.compile(c.replace(".", r"\.").replace("*", ".*")).match)
            else:
                pats.append(lambda x, c=c: x == c)
        return pats
    inc = compile_list(cases) or [lambda x: True]
    exc = compile_list(exclude)
    return lambda cid: any(p(cid) for p in inc) and not any(p(cid) for p in exc)


def summary_entries(lines):
    """{key: verdict} from summary lines 'CASE B BC' or 'AGENT CASE B BC'."""
    out = {}
    for l in lines:
        t = l.split()
        if len(t) >= 3:
            out[" ".join(t[:-2])] = " ".join(t[-2:])
    return out


def compare_expected(path, lines, selected):
    """Print how the run differs from the expected file; True if it does not."""
    with open(path, encoding="utf-8") as f:
        raw = [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]
    exp = {k: v for k, v in summary_entries(raw).items() if selected(k.split()[-1])}
    got = summary_entries(lines)
    keys = sorted(set(exp) | set(got), key=lambda k: (k.split()[:-1], case_key(k.split()[-1])))
    diffs = []
    for k in keys:
        if exp.get(k) != got.get(k):
            diffs.append("  %-12s expected %-22s got %s"
                         % (k, exp.get(k, "(not listed)"), got.get(k, "(missing)")))
    if diffs:
        print("\nCases that differ from %s (%d of %d expected):" % (path, len(diffs), len(exp)))
        print("\n".join(diffs))
        return False
    print("matches %s (%d cases)" % (path, len(exp)))
    return True


def update_expected(path, lines, selected):
    """Replace the selected cases' lines of the expected file with this run's."""
    keep = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            keep = [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]
    keep = [l for l in keep if not selected(l.split()[-3])]
    merged = sorted(keep + lines, key=lambda l: (l.split()[:-3], case_key(l.split()[-3])))
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(l + "\n" for l in merged))
    print("updated %s (%d cases from this run, %d kept)" % (path, len(lines), len(merged) - len(lines)))


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
    ap.add_argument("--expected", help="expected summary to compare with")
    ap.add_argument("--cases", help="the run's case patterns, comma-separated (default: all)")
    ap.add_argument("--exclude-cases", help="the run's excluded case patterns, comma-separated")
    ap.add_argument("--update-expected", action="store_true",
                    help="write this run's lines for its selected cases into --expected")
    ap.add_argument("--expect-cases", type=int, help="number of cases each agent must have")
    ap.add_argument("--fail-on-diff", action="store_true",
                    help="exit 1 when the summary differs from --expected or that file is missing")
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
        selected = case_matcher(args.cases, args.exclude_cases)
        if os.path.exists(args.expected):
            if not compare_expected(args.expected, lines, selected) and args.fail_on_diff:
                rc = 1
        else:
            print("\nno expected summary at %s" % args.expected)
            if args.fail_on_diff:
                rc = 1
        if args.update_expected:
            update_expected(args.expected, lines, selected)

    print("\nRESULT: %s" % ("PASS" if rc == 0 else "FAIL"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
