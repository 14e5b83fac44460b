"""The Terraform configuration for Google Cloud (``deploy/terraform``) parses, passes checkov,
and keeps the promises of its README.

terraform itself is not installed here, so ``terraform validate`` and ``plan`` are not run
(the README says so). What is checked instead: every file parses with python-hcl2 (from the
tools environment, in a subprocess); checkov reports no failed check and every skip has a
reason, while a copy with a public database IP is flagged; and the parsed configuration is
checked for structure: described, typed and validated variables, a private and backed-up
database whose flags meet ``bq2pg doctor``'s rules (read from :mod:`bq2pg.doctor`, so the
flags follow the code), least-privilege BigQuery roles, and a Workload Identity binding for
deploy/k8s's ServiceAccount.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from bq2pg.doctor import SETTING_RULES
from bq2pg.postgres.settings_probe import Setting, quantity
from deploy_tools import DEPLOY, ok, run, tool

TF = DEPLOY / "terraform"
README = TF / "README.md"
TF_FILES = sorted(TF.glob("*.tf"))
TFVARS_EXAMPLE = TF / "terraform.tfvars.example"

#: Cloud SQL flags take a plain number in the setting's base unit, the unit pg_settings shows.
FLAG_UNITS: dict[str, str | None] = {
    "maintenance_work_mem": "kB",
    "max_wal_size": "MB",
    "checkpoint_timeout": "s",
    "max_parallel_maintenance_workers": None,
}
#: doctor's rules that sql.tf does not set as flags, on purpose (its comments say why).
NOT_FLAGS = {
    "wal_level": "Cloud SQL has no wal_level flag; PITR and the standby need at least replica",
    "synchronous_commit": "PostgreSQL's default, on, already passes the rule",
    "default_toast_compression": "set per role after the first apply (README, step 6)",
}
#: The k8s names deploy/k8s uses (the Workload Identity member must name them).
K8S_NAMESPACE = "bq2pg"
K8S_SERVICE_ACCOUNT = "bq2pg"

#: Variables that need no validation: a bool cannot be mistyped into a wrong value.
_UNVALIDATED_TYPES = {"bool"}
_CIDR_VARIABLES = {
    "subnet_cidr",
    "pods_cidr",
    "services_cidr",
    "private_service_cidr",
    "master_authorized_networks",
}
_SKIP = re.compile(r"#\s*checkov:skip=(?P<id>CKV2?_[A-Z]+_\d+):(?P<reason>.*)$")
#: python-hcl2 dumped as JSON, one entry per file. It runs in bq2pg's own .venv (the dev extra
#: has python-hcl2), not in .venv-tools, where checkov's fork bc-python-hcl2 installs over the
#: same `hcl2` module.
_DUMP = (
    "import hcl2, json, sys\n"
    "json.dump({p: hcl2.load(open(p)) for p in sys.argv[1:]}, sys.stdout, default=str)\n"
)


# --- Reading python-hcl2's output ----------------------------------------------------------
# Its versions differ in detail: some wrap every attribute value in a one-item list, some keep
# the quotes of strings and labels. These helpers read both.


def _unquote(text: Any) -> Any:
    if isinstance(text, str) and len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def attr(body: dict[str, Any], key: str, default: Any = None) -> Any:
    """An attribute's value."""
    if key not in body:
        return default
    value = body[key]
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return _unquote(value)


def blocks(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The nested blocks named ``key`` (none when absent)."""
    found = body.get(key, [])
    return [b for b in (found if isinstance(found, list) else [found]) if isinstance(b, dict)]


def named(doc: dict[str, Any], kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``variable``/``output`` blocks of a parsed file, as (name, body)."""
    for entry in doc.get(kind, []):
        for name, body in entry.items():
            yield _unquote(name), body


def parse(*paths: Path) -> dict[str, dict[str, Any]]:
    """python-hcl2's reading of ``paths`` (the test fails when a file does not parse)."""
    result = run(sys.executable, "-c", _DUMP, *paths)
    ok(result)
    return {Path(p).name: _plain(doc) for p, doc in json.loads(result.stdout).items()}


def _plain(value: Any) -> Any:
    """python-hcl2 8's output without its comment entries and with strings unquoted."""
    if isinstance(value, dict):
        return {_unquote(k): _plain(v) for k, v in value.items() if not str(k).startswith("__")}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return _unquote(value)


@cache
def config() -> dict[str, dict[str, Any]]:
    return parse(*TF_FILES, TFVARS_EXAMPLE)


def variables() -> dict[str, dict[str, Any]]:
    return {n: b for doc in config().values() for n, b in named(doc, "variable")}


def outputs() -> dict[str, dict[str, Any]]:
    return {n: b for doc in config().values() for n, b in named(doc, "output")}


def resources() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for doc in config().values():
        for entry in doc.get("resource", []):
            for rtype, by_name in entry.items():
                for name, body in by_name.items():
                    found[(_unquote(rtype), _unquote(name))] = body
    return found


def of_type(rtype: str) -> list[dict[str, Any]]:
    return [body for (t, _), body in resources().items() if t == rtype]


def default(name: str) -> Any:
    return attr(variables()[name], "default")


def sql_settings() -> dict[str, Any]:
    (instance,) = of_type("google_sql_database_instance")
    (settings,) = blocks(instance, "settings")
    return settings


def sql_flags() -> dict[str, str]:
    """The instance's literal database_flags (the dynamic block adds var.extra_database_flags)."""
    flags = {}
    for flag in blocks(sql_settings(), "database_flags"):
        flags[str(attr(flag, "name"))] = str(attr(flag, "value"))
    return flags


def checkov(directory: Path) -> dict[str, Any]:
    """checkov's JSON report on a Terraform directory (--skip-download: no network)."""
    result = run(
        tool("checkov"), "-d", directory, "--framework", "terraform", "--skip-download",
        "--output", "json",
    )  # fmt: skip
    # checkov exits 1 when a check fails; the report says which.
    assert result.returncode in (0, 1), result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["check_type"] == "terraform", report
    return report


# --- Parsing ---------------------------------------------------------------------------------


def test_every_terraform_file_parses_with_python_hcl2() -> None:
    assert {p.name for p in TF_FILES} >= {
        "versions.tf", "variables.tf", "outputs.tf", "network.tf", "gke.tf", "sql.tf",
        "secrets.tf", "iam.tf", "registry.tf",
    }  # fmt: skip
    parsed = config()
    assert set(parsed) == {p.name for p in TF_FILES} | {TFVARS_EXAMPLE.name}
    assert all(parsed[p.name] for p in TF_FILES), "a file parsed to nothing"


def test_python_hcl2_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.tf"
    broken.write_text('resource "google_sql_database_instance" "x" {\n  name = \n')
    assert run(tool("python"), "-c", _DUMP, broken).returncode != 0


def test_tfvars_example_sets_only_declared_variables() -> None:
    example = config()[TFVARS_EXAMPLE.name]
    assert example, "terraform.tfvars.example sets nothing"
    assert set(example) <= set(variables()), set(example) - set(variables())
    assert attr(example, "project_id"), "the example must show project_id, the one required input"


def test_versions_pin_terraform_and_the_providers() -> None:
    (terraform,) = config()["versions.tf"]["terraform"]
    assert attr(terraform, "required_version")
    (providers,) = blocks(terraform, "required_providers")
    sources = {name: attr(providers, name) for name in providers if not name.startswith("__")}
    assert sources["google"]["source"].endswith("hashicorp/google")
    assert sources["random"]["source"].endswith("hashicorp/random")
    assert all(p.get("version") for p in sources.values()), sources


# --- checkov -------------------------------------------------------------------------------


def skip_comments() -> dict[str, str]:
    """Every ``#checkov:skip=ID:reason`` in the .tf files (a malformed one fails the test)."""
    skips = {}
    for path in TF_FILES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "checkov:skip" not in line:
                continue
            found = _SKIP.search(line.strip())
            assert found, f"{path.name}:{number}: malformed checkov skip: {line.strip()}"
            skips[found["id"]] = found["reason"].strip()
    return skips


def test_every_checkov_skip_has_a_reason_and_is_listed_in_the_readme() -> None:
    readme = README.read_text()
    skips = skip_comments()
    assert skips, "no skips at all: then this test should go"
    for check_id, reason in skips.items():
        assert len(reason.split()) >= 12, f"{check_id}: give a real reason, not {reason!r}"
        assert f"| {check_id} " in readme, f"{check_id} is not in the README's table of skips"


def test_checkov_passes_with_no_failed_check() -> None:
    report = checkov(TF)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0 and not failed, failed
    assert summary["parsing_errors"] == 0, report["results"]["parsing_errors"]
    assert summary["passed"] >= 40, summary
    skipped = report["results"]["skipped_checks"]
    for check in skipped:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason.split()) >= 12, f"{check['check_id']} skipped without a reason"
    # Every skip comment is attached to a resource (checkov reports it), none is stale.
    assert {c["check_id"] for c in skipped} == set(skip_comments())


def test_checkov_flags_a_database_with_a_public_ip(tmp_path: Path) -> None:
    copy = tmp_path / "terraform"
    shutil.copytree(TF, copy, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
    sql = copy / "sql.tf"
    text = sql.read_text()
    assert text.count("ipv4_enabled    = false") == 1
    sql.write_text(text.replace("ipv4_enabled    = false", "ipv4_enabled    = true"))
    report = checkov(copy)
    failed = {(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]}
    assert ("CKV_GCP_60", "google_sql_database_instance.bq2pg") in failed, failed


# --- Variables and outputs -------------------------------------------------------------------


def test_every_variable_has_a_description_a_type_and_a_validation() -> None:
    found = variables()
    assert {"project_id", "region", "sql_tier", "availability_type"} <= set(found)
    for name, body in found.items():
        assert len(str(attr(body, "description", ""))) >= 20, f"variable {name}: no description"
        kind = str(attr(body, "type", "")).strip("${}")
        assert kind, f"variable {name}: no type"
        conditions = [str(attr(v, "condition")) for v in blocks(body, "validation")]
        if kind not in _UNVALIDATED_TYPES:
            assert conditions, f"variable {name} ({kind}) takes input but has no validation"
        if name in _CIDR_VARIABLES:
            assert any("cidrhost" in c for c in conditions), f"{name}: validate with cidrhost()"
    assert default("deletion_protection") is True
    assert default("availability_type") == "REGIONAL"


def test_validation_patterns_accept_the_defaults_and_reject_typos() -> None:
    """The regexes of the string validations, run on good and bad values."""

    def pattern(name: str) -> re.Pattern[str]:
        (validation, *_) = blocks(variables()[name], "validation")
        found = re.search(r'regex\(\\?"(.+?)\\?",', str(attr(validation, "condition")))
        assert found, name
        return re.compile(found[1].replace("\\\\", "\\"))

    cases = {
        "project_id": (["my-project", "patents-public-data"], ["My_Project", "123456", "ab"]),
        "region": (["us-central1", "europe-west4"], ["us-central1-a", "US"]),
        "backup_start_time": (["03:00", "23:59"], ["24:00", "3:00"]),
        "k8s_namespace": (["bq2pg"], ["BQ2PG", "-bq2pg"]),
    }
    for name, (good, bad) in cases.items():
        regex = pattern(name)
        assert all(regex.search(v) for v in good), (name, good)
        assert not any(regex.search(v) for v in bad), (name, bad)


def test_every_output_is_described_and_the_endpoint_is_sensitive() -> None:
    found = outputs()
    assert {
        "bq2pg_service_account_email", "cluster_name", "cluster_endpoint", "sql_private_ip",
        "sql_instance_connection_name", "artifact_registry_url", "db_password_secret_id",
    } <= set(found)  # fmt: skip
    for name, body in found.items():
        assert len(str(attr(body, "description", ""))) >= 20, f"output {name}: no description"
    assert attr(found["cluster_endpoint"], "sensitive") is True
    reference = str(attr(found["db_password_reference"], "value"))
    assert reference.startswith("$${gcp:projects/"), reference  # a literal ${gcp:…} for bq2pg


# --- Cloud SQL -------------------------------------------------------------------------------


def test_database_has_no_public_ip_and_requires_tls() -> None:
    (ip,) = blocks(sql_settings(), "ip_configuration")
    assert attr(ip, "ipv4_enabled") is False
    assert "google_compute_network" in str(attr(ip, "private_network"))
    assert not blocks(ip, "authorized_networks")
    assert attr(ip, "ssl_mode") == "${var.sql_ssl_mode}"
    assert default("sql_ssl_mode") in {"ENCRYPTED_ONLY", "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"}
    assert "require_ssl" not in ip, "provider 6 removed require_ssl; use ssl_mode"


def test_database_is_backed_up_with_point_in_time_recovery_and_protected() -> None:
    (instance,) = of_type("google_sql_database_instance")
    (backup,) = blocks(sql_settings(), "backup_configuration")
    assert attr(backup, "enabled") is True
    assert attr(backup, "point_in_time_recovery_enabled") is True
    assert attr(instance, "deletion_protection") == "${var.deletion_protection}"
    assert attr(sql_settings(), "deletion_protection_enabled") == "${var.deletion_protection}"
    assert default("postgres_version") in {"POSTGRES_16", "POSTGRES_17"}


def doctor_problems(flags: dict[str, str]) -> list[str]:
    """What keeps ``flags`` (Cloud SQL database flags) from meeting bq2pg doctor's rules."""
    problems = []
    for rule in SETTING_RULES:
        if rule.setting in NOT_FLAGS:
            if rule.setting in flags:
                problems.append(f"{rule.setting} is set, but sql.tf says why it must not be")
            continue
        if rule.setting not in FLAG_UNITS:
            problems.append(f"doctor has a new rule, {rule.setting}: set it or say why not")
            continue
        if rule.setting not in flags:
            problems.append(f"{rule.setting} is not set")
            continue
        value = flags[rule.setting]
        setting = Setting(
            rule.setting, value, quantity(value, FLAG_UNITS[rule.setting]), "sighup", ()
        )
        if not rule.test(setting):
            problems.append(f"{rule.setting} = {value} fails doctor (wants {rule.recommended})")
    return problems


def test_bulk_load_flags_meet_bq2pg_doctors_rules() -> None:
    assert doctor_problems(sql_flags()) == []


def test_doctor_check_catches_a_flag_below_the_rule() -> None:
    good = sql_flags()
    assert doctor_problems({**good, "maintenance_work_mem": "524288"})  # 512 MB
    assert doctor_problems({**good, "checkpoint_timeout": "300"})  # 5 min
    assert doctor_problems({k: v for k, v in good.items() if k != "max_wal_size"})
    assert doctor_problems({**good, "wal_level": "minimal"})


def test_the_rules_not_set_as_flags_are_explained_and_hold() -> None:
    sql_text = (TF / "sql.tf").read_text()
    readme = README.read_text()
    by_setting = {rule.setting: rule for rule in SETTING_RULES}
    for setting in NOT_FLAGS:
        assert setting in by_setting, f"{setting} is no longer a doctor rule: drop it here"
        assert f"- {setting}:" in sql_text, f"sql.tf does not say why {setting} is not a flag"
        assert f"`{setting}`" in readme
    on = Setting("synchronous_commit", "on", None, "user", ("on", "off"))
    assert by_setting["synchronous_commit"].test(on), "PostgreSQL's default no longer passes"
    assert "ALTER ROLE bq2pg SET default_toast_compression = 'lz4'" in readme
    assert by_setting["default_toast_compression"].recommended == "lz4"


def test_extra_flags_cannot_override_the_managed_ones() -> None:
    (validation,) = blocks(variables()["extra_database_flags"], "validation")
    # The list of names, whichever quotes (and escapes) the parser kept.
    condition = str(attr(validation, "condition")).replace("\\", "")
    for flag in sql_flags():
        assert re.search(f"[\"']{re.escape(flag)}[\"']", condition), flag


def test_database_logs_connections_and_checkpoints_but_not_statement_text() -> None:
    flags = sql_flags()
    for flag in ("log_checkpoints", "log_connections", "log_disconnections", "log_lock_waits"):
        assert flags.get(flag) == "on", flag
    assert flags["log_min_duration_statement"] == "-1"
    assert flags["log_statement"] == "ddl"


# --- IAM -----------------------------------------------------------------------------------


def test_no_authoritative_iam_resources() -> None:
    authoritative = [
        f"{t}.{n}" for t, n in resources() if t.endswith(("_iam_binding", "_iam_policy"))
    ]
    assert authoritative == [], "use *_iam_member: bindings and policies remove other members"


def test_read_sessions_on_the_billing_project_and_data_only_per_dataset() -> None:
    project_roles = {
        (attr(b, "role"), attr(b, "project")) for b in of_type("google_project_iam_member")
    }
    assert ("roles/bigquery.readSessionUser", "${local.billing_project}") in project_roles
    granted = {role for role, _ in project_roles}
    assert "roles/bigquery.dataViewer" not in granted, "dataViewer on a whole project"
    assert "roles/secretmanager.secretAccessor" not in granted, "accessor on every secret"
    assert not {"roles/owner", "roles/editor", "roles/bigquery.admin"} & granted
    (viewer,) = of_type("google_bigquery_dataset_iam_member")
    assert attr(viewer, "role") == "roles/bigquery.dataViewer"
    assert attr(viewer, "for_each") == "${toset(var.bigquery_datasets)}"
    assert default("bigquery_datasets") == []
    (job_user,) = [b for b in of_type("google_project_iam_member") if "jobUser" in str(b)]
    assert attr(job_user, "count") == "${var.grant_bigquery_job_user ? 1 : 0}"
    assert default("grant_bigquery_job_user") is False


def test_the_password_secret_is_readable_by_bq2pg_only() -> None:
    (access,) = of_type("google_secret_manager_secret_iam_member")
    assert attr(access, "role") == "roles/secretmanager.secretAccessor"
    assert "google_secret_manager_secret.db_password" in str(attr(access, "secret_id"))
    assert "google_service_account.bq2pg" in str(attr(access, "member"))
    (secret,) = of_type("google_secret_manager_secret")
    (replication,) = blocks(secret, "replication")
    assert "auto" in replication


def test_workload_identity_binds_the_k8s_service_account() -> None:
    (binding,) = of_type("google_service_account_iam_member")
    assert attr(binding, "role") == "roles/iam.workloadIdentityUser"
    assert attr(binding, "member") == (
        "serviceAccount:${var.project_id}.svc.id.goog"
        "[${var.k8s_namespace}/${var.k8s_service_account}]"
    )
    assert default("k8s_namespace") == K8S_NAMESPACE
    assert default("k8s_service_account") == K8S_SERVICE_ACCOUNT


def k8s_names() -> tuple[set[str], set[str]]:
    """(ServiceAccount names, namespaces) in deploy/k8s's YAML, when it exists."""
    accounts: set[str] = set()
    namespaces: set[str] = set()
    for path in sorted((DEPLOY / "k8s").rglob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict):
                continue
            metadata = doc.get("metadata") or {}
            if doc.get("kind") == "ServiceAccount":
                accounts.add(str(metadata.get("name")))
            if doc.get("kind") == "Namespace":
                namespaces.add(str(metadata.get("name")))
            for found in (metadata.get("namespace"), doc.get("namespace")):
                if isinstance(found, str):
                    namespaces.add(found)
    return accounts, namespaces


def test_workload_identity_names_match_deploy_k8s() -> None:
    accounts, namespaces = k8s_names()
    if not accounts:
        pytest.skip("deploy/k8s has no ServiceAccount (yet): nothing to compare")
    assert K8S_SERVICE_ACCOUNT in accounts, accounts
    assert K8S_NAMESPACE in namespaces, namespaces


def test_deploy_k8s_annotates_the_service_account_terraform_creates() -> None:
    """The iam.gke.io/gcp-service-account annotations (and kustomize patches) of deploy/k8s
    name the account iam.tf creates; with any other name, Workload Identity hands the pods
    no Google credentials and every BigQuery read fails."""
    app = resources()[("google_service_account", "bq2pg")]
    expected = str(attr(app, "account_id")).replace("${var.name}", str(default("name")))
    emails = re.compile(r"\b([a-z][a-z0-9-]*)@[A-Za-z0-9_-]+\.iam\.gserviceaccount\.com\b")
    named_in_k8s = {
        f"{path.relative_to(DEPLOY)}: {found[1]}"
        for path in sorted((DEPLOY / "k8s").rglob("*"))
        if path.is_file() and path.suffix in {".yaml", ".yml", ".md"}
        for found in emails.finditer(path.read_text())
    }
    if not named_in_k8s:
        pytest.skip("deploy/k8s names no Google service account (yet): nothing to compare")
    wrong = sorted(n for n in named_in_k8s if not n.endswith(f": {expected}"))
    assert not wrong, f"deploy/k8s must name {expected}@PROJECT.iam.gserviceaccount.com: {wrong}"


# --- GKE and the registry ------------------------------------------------------------------


def test_cluster_is_autopilot_private_and_protected() -> None:
    (cluster,) = of_type("google_container_cluster")
    assert attr(cluster, "enable_autopilot") is True
    (private,) = blocks(cluster, "private_cluster_config")
    assert attr(private, "enable_private_nodes") is True
    assert blocks(cluster, "master_authorized_networks_config")
    assert blocks(cluster, "release_channel")
    assert attr(cluster, "deletion_protection") == "${var.deletion_protection}"
    (autoscaling,) = blocks(cluster, "cluster_autoscaling")
    (defaults,) = blocks(autoscaling, "auto_provisioning_defaults")
    assert "google_service_account.nodes" in str(attr(defaults, "service_account"))


def test_nodes_may_pull_from_the_repository_only() -> None:
    (reader,) = of_type("google_artifact_registry_repository_iam_member")
    assert attr(reader, "role") == "roles/artifactregistry.reader"
    assert "google_service_account.nodes" in str(attr(reader, "member"))
    (repository,) = of_type("google_artifact_registry_repository")
    assert attr(repository, "format") == "DOCKER"


def test_subnet_has_flow_logs_private_google_access_and_secondary_ranges() -> None:
    (subnet,) = of_type("google_compute_subnetwork")
    assert attr(subnet, "private_ip_google_access") is True
    assert blocks(subnet, "log_config")
    assert len(blocks(subnet, "secondary_ip_range")) == 2


# --- README ----------------------------------------------------------------------------------


def test_readme_says_terraform_was_not_run() -> None:
    readme = README.read_text()
    assert "`terraform validate`" in readme
    assert re.search(r"were \*\*not\*\* run|were not run", readme)


def readme_yaml() -> str:
    text = README.read_text()
    marker = text.index("<!-- bq2pg.yaml for Cloud SQL")
    found = re.search(r"```yaml\n(.*?)```", text[marker:], re.S)
    assert found, "no yaml block after the marker"
    return "\n".join(line[3:] if line.startswith("   ") else line for line in found[1].splitlines())


def validate_config(path: Path) -> int:
    return run(sys.executable, "-m", "bq2pg", "config", "validate", path).returncode


def test_readme_bq2pg_yaml_is_a_valid_configuration(tmp_path: Path) -> None:
    good = tmp_path / "bq2pg.yaml"
    good.write_text(readme_yaml())
    assert validate_config(good) == 0, good.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(readme_yaml().replace("    password:", "    pasword:"))
    assert validate_config(bad) != 0
