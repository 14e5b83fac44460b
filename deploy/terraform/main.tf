# bq2pg on Google Cloud: a private GKE Autopilot cluster that runs bq2pg, a private Cloud SQL
# for PostgreSQL it loads into, and the identity that lets its pods read BigQuery.
# What each file holds: network.tf, gke.tf, sql.tf, secrets.tf, iam.tf, registry.tf.

locals {
  billing_project = coalesce(var.billing_project_id, var.project_id)
  registry_region = coalesce(var.artifact_registry_location, var.region)

  pods_range_name     = "${var.name}-pods"
  services_range_name = "${var.name}-services"

  # The APIs the resources below call. BigQuery's are enabled on the billing project too,
  # where the read sessions are created.
  project_apis = [
    "artifactregistry.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com", # Workload Identity mints the pods' tokens through it
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
    "sqladmin.googleapis.com",
  ]
  bigquery_apis = ["bigquery.googleapis.com", "bigquerystorage.googleapis.com"]

  apis = merge(
    { for api in local.project_apis : "${var.project_id}/${api}" => { project = var.project_id, api = api } },
    { for api in local.bigquery_apis : "${local.billing_project}/${api}" => { project = local.billing_project, api = api } },
  )
}

resource "google_project_service" "apis" {
  for_each = local.apis

  project = each.value.project
  service = each.value.api

  # Other workloads in the project may use the same APIs: destroying this configuration
  # must not turn them off.
  disable_on_destroy = false
}
