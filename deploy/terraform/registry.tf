# A private Docker repository for the bq2pg image, next to the cluster: pulls stay on
# Google's network (no Cloud NAT needed for them) and do not depend on ghcr.io.
#   docker pull ghcr.io/bq2pg/bq2pg:0.1.0
#   docker tag  ghcr.io/bq2pg/bq2pg:0.1.0 $(terraform output -raw artifact_registry_url)/bq2pg:0.1.0
#   docker push $(terraform output -raw artifact_registry_url)/bq2pg:0.1.0

resource "google_artifact_registry_repository" "bq2pg" {
  #checkov:skip=CKV_GCP_84:Images are encrypted at rest with Google-managed keys; a customer-managed key needs a Cloud KMS key ring this configuration does not own, and the image holds no secrets (configuration and passwords are mounted at run time).
  location      = local.registry_region
  repository_id = var.name
  description   = "Container images of bq2pg"
  format        = "DOCKER"

  docker_config {
    immutable_tags = var.immutable_tags
  }

  depends_on = [google_project_service.apis]
}

# Autopilot nodes pull images as the node service account (gke.tf), not as the default
# compute account: it needs read access here, on this repository only.
resource "google_artifact_registry_repository_iam_member" "nodes_reader" {
  project    = var.project_id
  location   = google_artifact_registry_repository.bq2pg.location
  repository = google_artifact_registry_repository.bq2pg.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.nodes.email}"
}
