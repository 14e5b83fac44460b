# bq2pg's Google identity, and the least it needs:
# - roles/bigquery.readSessionUser on the billing project: create Storage Read API sessions
#   and read their streams (bq2pg reads every table that way, never with query jobs);
# - roles/bigquery.dataViewer only on your own datasets (var.bigquery_datasets): table
#   metadata and rows. The Google Patents data (patents-public-data) is public: any
#   authenticated principal may read it, so it needs no grant;
# - roles/bigquery.jobUser only when var.grant_bigquery_job_user: `bq2pg plan` then prices
#   a read with a free dry-run query instead of table metadata;
# - roles/secretmanager.secretAccessor on the database password secret only (secrets.tf).
# No key file: the pods act as this account through Workload Identity.

resource "google_service_account" "bq2pg" {
  account_id   = "${var.name}-app"
  display_name = "bq2pg"
  description  = "Identity of bq2pg's pods (Workload Identity): reads BigQuery, reads its database password."

  depends_on = [google_project_service.apis]
}

resource "google_project_iam_member" "bq2pg_read_sessions" {
  project = local.billing_project
  role    = "roles/bigquery.readSessionUser"
  member  = "serviceAccount:${google_service_account.bq2pg.email}"
}

resource "google_project_iam_member" "bq2pg_job_user" {
  count = var.grant_bigquery_job_user ? 1 : 0

  project = local.billing_project
  role    = "roles/bigquery.jobUser"
  member  = "serviceAccount:${google_service_account.bq2pg.email}"
}

# Dataset-level grants only: a project-level dataViewer would open every dataset of the
# project, including ones bq2pg has no business reading.
resource "google_bigquery_dataset_iam_member" "bq2pg_data_viewer" {
  for_each = toset(var.bigquery_datasets)

  project    = split(".", each.value)[0]
  dataset_id = split(".", each.value)[1]
  role       = "roles/bigquery.dataViewer"
  member     = "serviceAccount:${google_service_account.bq2pg.email}"
}

# Workload Identity: the Kubernetes ServiceAccount bq2pg/bq2pg (deploy/k8s, annotated with
# iam.gke.io/gcp-service-account = this account's email) may act as this account. Only that
# one KSA in that one namespace: the member names both.
resource "google_service_account_iam_member" "bq2pg_workload_identity" {
  service_account_id = google_service_account.bq2pg.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.k8s_namespace}/${var.k8s_service_account}]"

  # The identity pool PROJECT.svc.id.goog exists once the first GKE cluster with Workload
  # Identity (every Autopilot cluster) exists.
  depends_on = [google_container_cluster.bq2pg]
}
