"""The GitHub workflows and the pre-commit hooks: actionlint, pre-commit's own validation, and
the promises the workflows make (Python 3.11–3.13, caching, coverage artifact, what .ci/run
installs, image to GHCR and wheel to PyPI on a tag)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from tests.deploy_tools import ROOT, ok, run, tool

WORKFLOWS = ROOT / ".github" / "workflows"
CI = WORKFLOWS / "ci.yml"
RELEASE = WORKFLOWS / "release.yml"
PRE_COMMIT = ROOT / ".pre-commit-config.yaml"


def load(path: Path) -> dict:
    document = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True
    document["on"] = document.pop(True, document.get("on"))
    return document


def steps(job: dict) -> list[dict]:
    return job["steps"]


def uses(job: dict) -> list[str]:
    return [step["uses"].split("@")[0] for step in steps(job) if "uses" in step]


def test_actionlint_passes_on_the_workflows():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (Debian's shellcheck; .ci/run installs it)")
    ok(run(tool("actionlint"), "-no-color"))


def test_actionlint_rejects_a_broken_workflow(tmp_path: Path):
    # the negative control: a copy with an undefined expression and a bad shell line
    repo = tmp_path / "repo"
    (repo / ".github" / "workflows").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    broken = CI.read_text().replace("${{ matrix.python }}", "${{ matrix.pyhton }}", 1)
    (repo / ".github" / "workflows" / "ci.yml").write_text(broken)
    result = run(tool("actionlint"), "-no-color", cwd=repo)
    assert result.returncode != 0 and "pyhton" in result.stdout, result.stdout


def test_ci_tests_python_311_to_313_with_cache_and_coverage():
    ci = load(CI)
    assert set(ci["on"]) >= {"push", "pull_request"}
    test = ci["jobs"]["test"]
    assert test["strategy"]["matrix"]["python"] == ["3.11", "3.12", "3.13"]
    assert "actions/cache" in uses(test)
    lint = ci["jobs"]["lint"]
    setup = next(s for s in steps(lint) if s.get("uses", "").startswith("actions/setup-python"))
    assert setup["with"]["cache"] == "pip"
    assert any(s.get("run") == "make lint" for s in steps(lint))
    make_test = next(s for s in steps(test) if "make test" in s.get("run", ""))
    assert "--cov=bq2pg" in make_test["run"] and "coverage.xml" in make_test["run"]
    upload = next(s for s in steps(test) if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["with"]["path"] == "coverage.xml" and upload["if"] == "always()"
    assert ci["permissions"] == {"contents": "read"}


def test_ci_installs_what_ci_run_installs():
    """Every Debian package .ci/run installs is installed by the workflow's test job too."""
    ci_run = (ROOT / ".ci" / "run").read_text()
    wanted = set(re.findall(r"packages\+=\(([\w.-]+)\)", ci_run))
    assert {"prometheus", "chromium", "prometheus-alertmanager", "kubernetes-client"} <= wanted
    apt = next(
        s["run"] for s in steps(load(CI)["jobs"]["test"]) if "apt-get install" in s.get("run", "")
    )
    installed = set(apt.replace("\\", " ").split())
    # kubectl comes from its release (with kustomize v5) rather than Debian's 1.20 client
    assert wanted - {"kubernetes-client"} <= installed, wanted - installed
    assert "kubectl" in CI.read_text() and "sha256sum --check" in CI.read_text()


def test_release_pushes_the_image_to_ghcr_and_the_wheel_to_pypi():
    release = load(RELEASE)
    assert release["on"]["push"]["tags"] == ["v*.*.*"]
    jobs = release["jobs"]
    dist = "\n".join(s.get("run", "") for s in steps(jobs["dist"]))
    assert "python -m build" in dist and "GITHUB_REF_NAME" in dist
    assert "pypa/gh-action-pypi-publish" in uses(jobs["pypi"])
    assert jobs["pypi"]["permissions"] == {"id-token": "write"}, "trusted publishing, no token"
    image = jobs["image"]
    login = next(s for s in steps(image) if s.get("uses", "").startswith("docker/login-action"))
    assert login["with"]["registry"] == "ghcr.io"
    build = next(s for s in steps(image) if s.get("uses", "").startswith("docker/build-push"))
    assert build["with"]["file"] == "Containerfile"
    assert image["permissions"]["packages"] == "write"
    assert release["permissions"] == {"contents": "read"}


def test_every_action_is_pinned_to_a_version():
    for path in (CI, RELEASE):
        for job in load(path)["jobs"].values():
            for step in steps(job):
                if "uses" in step:
                    assert re.search(r"@(v\d+|release/v\d+|[0-9a-f]{40})$", step["uses"]), step


def test_pre_commit_config_is_valid_and_has_the_hooks():
    ok(run(tool("pre-commit"), "validate-config", PRE_COMMIT))
    config = yaml.safe_load(PRE_COMMIT.read_text())
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    for wanted in ("ruff", "ruff-format", "mypy", "actionlint", "hadolint", "checkov-terraform",
                   "checkov-kubernetes"):  # fmt: skip
        assert wanted in hooks, wanted
    for hook in hooks.values():
        program = ROOT / hook["entry"].split()[0]
        assert program.exists(), f"{hook['id']}: {program} (make dev tools installs it)"


def test_pre_commit_runs_the_container_and_workflow_hooks():
    """The hooks themselves run, offline, on the repository's files."""
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (Debian's shellcheck; .ci/run installs it)")
    for hook in ("hadolint", "actionlint"):
        result = run(tool("pre-commit"), "run", hook, "--all-files", "--color", "never")
        output = ok(result)
        assert "Passed" in output and "no files to check" not in output, output
