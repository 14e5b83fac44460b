# The database password, in Secret Manager. bq2pg reads it at run time with
#   password: ${gcp:projects/PROJECT/secrets/SECRET/versions/latest}
# (its Application Default Credentials are the Workload Identity of iam.tf), or External
# Secrets copies it into a Kubernetes Secret for ${env:...}. Either way it never sits in a
# manifest.

resource "google_secret_manager_secret" "db_password" {
  secret_id = "${var.name}-db-password"

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "db_password" {
  secret      = google_secret_manager_secret.db_password.id
  secret_data = random_password.db.result
}

# Only this secret, only read access: the role is granted on the secret, not the project.
resource "google_secret_manager_secret_iam_member" "bq2pg_db_password" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.db_password.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.bq2pg.email}"
}
