# What deploy/k8s and bq2pg.yaml need from this configuration.

output "bq2pg_service_account_email" {
  description = "Google service account of bq2pg's pods: put it in the Kubernetes ServiceAccount's iam.gke.io/gcp-service-account annotation."
  value       = google_service_account.bq2pg.email
}

output "workload_identity_member" {
  description = "The Kubernetes ServiceAccount allowed to act as bq2pg_service_account_email (namespace/name)."
  value       = "${var.k8s_namespace}/${var.k8s_service_account}"
}

output "cluster_name" {
  description = "GKE Autopilot cluster name (gcloud container clusters get-credentials NAME --region REGION)."
  value       = google_container_cluster.bq2pg.name
}

output "cluster_endpoint" {
  description = "IP address of the cluster's control plane."
  value       = google_container_cluster.bq2pg.endpoint
  sensitive   = true
}

output "sql_instance_connection_name" {
  description = "Cloud SQL connection name (PROJECT:REGION:INSTANCE), for the Cloud SQL Auth Proxy or connectors if you use them."
  value       = google_sql_database_instance.bq2pg.connection_name
}

output "sql_private_ip" {
  description = "Private IP address of the Cloud SQL instance, reachable from the cluster's pods."
  value       = google_sql_database_instance.bq2pg.private_ip_address
}

output "sql_server_ca_cert" {
  description = "PEM certificate of the Cloud SQL server CA: bq2pg's sslrootcert for sslmode=verify-ca (public, not a secret)."
  value       = google_sql_database_instance.bq2pg.server_ca_cert[0].cert
}

output "database_url" {
  description = "bq2pg's target URL, without the password (that comes from db_password_reference). sslrootcert is where you mount sql_server_ca_cert."
  value       = "postgresql://${var.database_user}@${google_sql_database_instance.bq2pg.private_ip_address}:5432/${var.database_name}?sslmode=verify-ca&sslrootcert=/etc/bq2pg/cloudsql-server-ca.pem"
}

output "db_password_secret_id" {
  description = "Secret Manager secret that holds the database password."
  value       = google_secret_manager_secret.db_password.secret_id
}

output "db_password_reference" {
  description = "The password as a bq2pg secret reference, for `targets.NAME.password` in bq2pg.yaml."
  value       = "$${gcp:projects/${var.project_id}/secrets/${google_secret_manager_secret.db_password.secret_id}/versions/latest}"
}

output "artifact_registry_url" {
  description = "Docker repository URL: push the image as URL/bq2pg:TAG and use that as the pods' image."
  value       = "${google_artifact_registry_repository.bq2pg.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.bq2pg.repository_id}"
}

output "billing_project_id" {
  description = "Project billed for BigQuery reads: bq2pg.yaml's sources.default.project."
  value       = local.billing_project
}
