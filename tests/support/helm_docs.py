"""The chart's README, as helm-docs writes it from README.md.gotmpl and values.yaml.

The values table is generated from the ``# --`` comments above each key of
``values.yaml``; everything else in the README is ``README.md.gotmpl``. ``make`` builds
helm-docs once per machine into ``~/.cache/userflux-connector/tools`` (``go install
github.com/norwoodj/helm-docs/cmd/helm-docs@v1.14.2``); ``$HELM_DOCS`` names another binary.
A test that needs it fails when it is missing: it never skips.

    python -m tests.support.helm_docs          # rewrite helm/userflux-connector/README.md (make chart-docs)
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from tests.support.helm import CHART

DEFAULT_HELM_DOCS = pathlib.Path.home() / ".cache" / "userflux-connector" / "tools" / "helm-docs"
README = CHART / "README.md"
TEMPLATE = CHART / "README.md.gotmpl"
# The table in the order of values.yaml, which groups related keys, rather than sorted.
ARGS = ("--chart-search-root", str(CHART), "--template-files", TEMPLATE.name, "--sort-values-order", "file")


def helm_docs_binary() -> str:
    path = pathlib.Path(os.environ.get("HELM_DOCS") or DEFAULT_HELM_DOCS)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise AssertionError(
            f"helm-docs not found at {path}: `make chart-docs` (or `make test`) installs it, or set $HELM_DOCS"
        )
    return str(path)


def _run(*extra: str) -> str:
    result = subprocess.run([helm_docs_binary(), *ARGS, *extra], capture_output=True, text=True, timeout=120)
    # helm-docs logs a chart it cannot read as a warning and carries on: treat it as the failure it is.
    if result.returncode != 0 or "level=warning" in result.stderr or "level=error" in result.stderr:
        raise AssertionError(f"helm-docs failed (exit {result.returncode}):\n{result.stderr}")
    return result.stdout


def generated() -> str:
    """The README helm-docs would write now (nothing is written)."""
    return _run("--dry-run")


def write() -> None:
    _run()


if __name__ == "__main__":
    try:
        write()
    except AssertionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"wrote {README.relative_to(CHART.parents[1])}")
