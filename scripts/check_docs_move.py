"""One-off check for the README split (removed once the split is done).

Every non-blank line of README.md as it was at the commit the split started from must
appear, stripped of surrounding white space, in the new README.md or in a docs/*.md page.
Two rewrites are allowed without comment, because the move itself makes them:

* a heading may change level (``### X`` under ``## Y`` becomes ``## X`` on Y's page);
* a relative link gains ``../`` when its line moves into docs/ (``](config/x.yaml)``
  becomes ``](../config/x.yaml)``), and a ``#anchor`` link may gain the page it now
  lives on (``](#health-probes)`` becomes ``](operations.md#health-probes)``).

Every other line that is not found must be listed in CHANGED, with the reason: those are
the cross-references rewritten into links, and the like. A listed line that *is* found, or
that was never in the old README, is an error too, so the list stays honest.

    python scripts/check_docs_move.py [BASE]     # BASE: the commit split from (ee1aff4)
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
BASE = "ee1aff4"

# Old line (stripped) -> why it is not found as it was.
CHANGED: dict[str, str] = {
    "long before it exits). Each alert links to its runbook below.":
        "docs/operations.md: 'below' became a link: 'its runbook in [Runbooks](runbooks.md)'",
    "itself (stage `deliver`, see below). Each reason names the field, the spec and what was":
        "docs/mapping.md: 'see below' became a link to delivery.md#answers-from-userflux",
    "**Answers from UserFlux:**":
        "docs/delivery.md: the table's bold lead-in became a heading, '## Answers from UserFlux', to link to",
    '"Benchmark"). The loop keeps up to `max_in_flight` keep-alive connections and never':
        "docs/decisions.md: the quoted section name became a link to benchmark.md#where-the-cpu-goes",
    '(see "How answers are read"), and that every rule that protects a batch (the reuse':
        "docs/decisions.md: the quoted section name became a link to delivery.md#how-answers-are-read",
    '(`connector/sink/direct.py`; "Decisions" says how it behaves). With the interpreter lock,':
        "docs/benchmark.md: the quoted section name became a link to decisions.md",
    'asks of a client reading one answer, checked against h11 on generated answers (see "How':
        "docs/benchmark.md: with the next line, the quoted section names became one link to "
        "delivery.md#how-answers-are-read",
    'answers are read" under "Delivery guarantees"). When it was introduced, under httpx\'s':
        "docs/benchmark.md: see the line before",
    "make demo          # see above":
        "docs/development.md: 'see above' (the README's quick start) is no longer above; it says what it is",
    "make bench         # the benchmark (not part of make test), see below":
        "docs/development.md: 'see below' became 'see benchmark.md'",
    "make bench-floor   # where the benchmark's CPU per event goes (the pipeline four ways), see below":
        "docs/development.md: 'see below' became 'see benchmark.md'",
    "make bench-senders # the sender's concurrency models side by side, CPU per request, see below":
        "docs/development.md: 'see below' became 'see benchmark.md'",
    'make bench-answers # reading an answer: http11.py against h11, and the reuse check ("How answers are read")':
        "docs/development.md: the section name gained its page, '(delivery.md, \"How answers are read\")'",
    "`make soak` and `make bench` are run by hand; their last results are in this README":
        "docs/development.md: 'this README' became links to delivery.md#the-last-soak and "
        "benchmark.md#last-results",
    '("The fault suite" and "Benchmark").':
        "docs/development.md: see the line before",
    "**Mappings in values.** The chart's `config` value *is* the configuration file above,":
        "docs/kubernetes.md: 'the configuration file above' became a link to configuration.md",
    "and off by default; the chart's README explains the trade-off.":
        "docs/kubernetes.md: 'the chart's README' became a link to its 'Static group membership'",
    "| configuration: load, `${VAR}`, validate | `connector/config/` (`load.py`, `envexpand.py`, `reader.py`, `model.py`) |":
        "docs/development.md: made true after main moved config/reader.py to validation.py and added startup.py",
    "| consume (the group member) | `connector/source.py` |":
        "docs/development.md: names connector/kafka.py, which main split out of source.py",
    "Exit codes:":
        "docs/commands.md: the table's lead-in became a heading, '## Exit codes', for the runbooks to link to",
}


def normalise(line: str) -> str:
    line = line.strip()
    line = re.sub(r"^#{1,6} ", "# ", line)
    line = re.sub(r"\]\((?:\.\./)+", "](", line)
    line = re.sub(r"\]\((?:docs/)?[a-z-]+\.md#", "](#", line)
    return line


def main() -> int:
    base = sys.argv[1] if len(sys.argv) > 1 else BASE
    old = subprocess.run(["git", "show", f"{base}:README.md"], cwd=REPO, check=True, capture_output=True,
                         text=True).stdout
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    new_exact, new_normal = set(), set()
    for page in pages:
        for line in page.read_text().splitlines():
            new_exact.add(line.strip())
            new_normal.add(normalise(line))
    old_lines = [line.strip() for line in old.splitlines() if line.strip()]
    missing, rewritten, explained = [], 0, []
    for number, line in enumerate(old.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped in new_exact:
            continue
        if normalise(stripped) in new_normal:
            rewritten += 1
        elif stripped in CHANGED:
            explained.append((number, stripped, CHANGED[stripped]))
        else:
            missing.append((number, stripped))
    stale = [line for line in CHANGED if line not in old_lines or line in new_exact]
    print(f"{len(old_lines)} non-blank lines in {base}:README.md; {rewritten} found after the heading/link "
          f"rewrites; {len(explained)} deliberately changed")
    for number, line, why in explained:
        print(f"  changed, line {number}: {line}\n      -> {why}")
    for number, line in missing:
        print(f"MISSING, line {number}: {line}")
    for line in stale:
        print(f"STALE entry in CHANGED (found as it was, or never in the old README): {line}")
    return 1 if missing or stale else 0


if __name__ == "__main__":
    sys.exit(main())
