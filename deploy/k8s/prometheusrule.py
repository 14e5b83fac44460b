"""Write deploy/k8s/base/prometheusrule.yaml: the PrometheusRule of deploy/prometheus/alerts.yml.

The Prometheus Operator reads alerting rules from PrometheusRule objects, whose ``spec.groups``
has the grammar of a Prometheus rule file. The groups are copied as text, indented under
``spec:``, so the rules' comments (what each alert means, its ``threshold:`` marks) stay beside
them; the script then loads both files and refuses to write unless the groups are equal.

Usage (from the repository's root; ``make k8s-rules`` runs the first)::

    python deploy/k8s/prometheusrule.py           # (re)write the PrometheusRule
    python deploy/k8s/prometheusrule.py --check   # exit 1 when the committed file is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ALERTS = HERE.parent / "prometheus" / "alerts.yml"
OUTPUT = HERE / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by deploy/k8s/prometheusrule.py: do not edit.
# Change alerts.yml (and alerts_test.yml), then regenerate with `make k8s-rules`
# (python deploy/k8s/prometheusrule.py); `--check` fails when this file is out of date.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: bq2pg
  labels:
    app.kubernetes.io/name: bq2pg
spec:
"""


def render(alerts_text: str) -> str:
    """The PrometheusRule's text for the rule file ``alerts_text``.

    Raises:
        ValueError: the rule file has no top-level ``groups:`` line, or its groups did not
            survive the copy unchanged.
    """
    lines = alerts_text.splitlines()
    try:
        start = lines.index("groups:")
    except ValueError:
        raise ValueError("alerts.yml has no top-level `groups:` line to copy") from None
    body = "".join(f"  {line}\n" if line.strip() else "\n" for line in lines[start:])
    text = HEADER + body
    expected = yaml.safe_load(alerts_text)["groups"]
    if yaml.safe_load(text)["spec"]["groups"] != expected:
        raise ValueError("the groups copied under spec: differ from alerts.yml's")
    return text


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    root = HERE.parents[1]
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def main(argv: list[str] | None = None) -> int:
    """Write the PrometheusRule, or with ``--check`` say whether the written one is current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file differs from what it would be"
    )
    args = parser.parse_args(argv)
    wanted = render(ALERTS.read_text(encoding="utf-8"))
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != wanted:
            print(
                f"{_shown(OUTPUT)} is out of date with {_shown(ALERTS)}: run `make k8s-rules` "
                "(python deploy/k8s/prometheusrule.py) and commit the result",
                file=sys.stderr,
            )
            return 1
        return 0
    OUTPUT.write_text(wanted, encoding="utf-8")
    print(f"wrote {_shown(OUTPUT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
