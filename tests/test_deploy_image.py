"""The container image's files: hadolint and checkov on the Containerfile, and what it promises.

Building and smoke-testing the image needs root, podman and debootstrap and takes minutes: that
is ``make image-test`` (deploy/container/image_test.py), outside ``make test``; its latest
output is in docs/deploy.md. These checks read the files only.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.deploy_tools import ROOT, ok, run, tool

CONTAINERFILE = ROOT / "Containerfile"
IGNORE = ROOT / ".containerignore"


def instructions(text: str) -> list[tuple[str, str]]:
    """The Containerfile's instructions (continuation lines joined, comments dropped)."""
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_hadolint_passes_on_the_containerfile():
    ok(run(tool("hadolint"), CONTAINERFILE))


def test_hadolint_rejects_a_root_image(tmp_path: Path):
    # the negative control: the same file with its last USER root is refused (DL3002)
    bad = tmp_path / "Containerfile"
    bad.write_text(CONTAINERFILE.read_text().replace("USER 10001:10001", "USER root"))
    result = run(tool("hadolint"), bad)
    assert result.returncode != 0 and "DL3002" in result.stdout, result.stdout


def test_checkov_passes_on_the_containerfile(tmp_path: Path):
    # checkov's dockerfile runner only recognises files named like Dockerfile
    copy = tmp_path / "Dockerfile"
    shutil.copy(CONTAINERFILE, copy)
    args = ("--quiet", "--compact", "--framework", "dockerfile", "--file", copy)
    output = ok(run(tool("checkov"), *args, timeout=300))
    assert "Failed checks: 0" in output, output
    # and it can fail: the same file running as root is flagged (CKV_DOCKER_8)
    copy.write_text(CONTAINERFILE.read_text().replace("USER 10001:10001", "USER root"))
    result = run(tool("checkov"), *args, timeout=300)
    assert result.returncode != 0 and "CKV_DOCKER_8" in result.stdout, result.stdout


def test_the_image_is_multi_stage_non_root_with_entrypoint_healthcheck_and_labels():
    steps = instructions(CONTAINERFILE.read_text())
    words = [w for w, _ in steps]
    froms = [rest for w, rest in steps if w == "FROM"]
    assert len(froms) == 2 and froms[0].endswith("AS builder"), froms
    assert all(f.startswith("${BASE_IMAGE}") for f in froms), froms
    base_arg = next(rest for w, rest in steps if w == "ARG" and rest.startswith("BASE_IMAGE="))
    assert base_arg == "BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm"
    assert words.index("ARG") < words.index("FROM"), "BASE_IMAGE must be declared before FROM"
    runtime = steps[words.index("FROM", words.index("FROM") + 1) :]
    users = [rest for w, rest in runtime if w == "USER"]
    assert users == ["10001:10001"], users
    assert ("ENTRYPOINT", '["bq2pg"]') in runtime
    health = next(rest for w, rest in runtime if w == "HEALTHCHECK")
    assert "/healthz" in CONTAINERFILE.read_text() and "CMD" in health
    copies = [rest for w, rest in runtime if w == "COPY"]
    assert copies == ["--from=builder /opt/bq2pg /opt/bq2pg"], "only the venv reaches the image"
    labels = " ".join(rest for w, rest in runtime if w == "LABEL")
    for name in ("title", "description", "version", "revision", "created", "source", "licenses"):
        assert f"org.opencontainers.image.{name}=" in labels, name
    useradd = next(rest for w, rest in runtime if w == "RUN" and "useradd" in rest)
    assert "--uid 10001" in useradd and "--gid 10001" in useradd


def test_no_secret_is_built_into_the_image():
    steps = instructions(CONTAINERFILE.read_text())
    for word, rest in steps:
        if word in ("ARG", "ENV"):
            # names and values, except the extra that adds Secret Manager *support*
            text = rest.replace("gcp-secrets", "")
            assert not re.search(r"(?i)password|secret|token|credential", text), rest
    assert "--mount=type=secret" not in CONTAINERFILE.read_text()


def test_the_build_context_leaves_out_secrets_and_local_state():
    lines = [
        line.strip()
        for line in IGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "everything is excluded first; only what is copied comes back"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for word, rest in instructions(CONTAINERFILE.read_text()):
        if word == "COPY" and not rest.startswith("--from"):
            copied.update(p.rstrip("/") for p in rest.split()[:-1])
    assert copied <= allowed | {"."}, copied - allowed
    assert allowed == copied, f"re-included but never copied: {allowed - copied}"
    for path in copied:
        assert (ROOT / path).exists(), path
    assert (ROOT / ".dockerignore").resolve() == IGNORE.resolve(), "docker reads .dockerignore"
    wheelhouse = ROOT / "deploy" / "container" / "wheelhouse"
    tracked = run("git", "ls-files", wheelhouse).stdout.split()
    assert tracked == ["deploy/container/wheelhouse/README.md"], tracked


def test_the_make_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("build", "run-container", "image-test", "k8s-rules", "tools"):
        assert re.search(rf"^{target}:.*## ", makefile, re.M), target
    # podman or docker, whichever is installed
    assert "command -v podman" in makefile and "command -v docker" in makefile
