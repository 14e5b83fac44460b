# GKE Autopilot: Google runs the nodes; we pay for what the pods request. Workload Identity
# is always on in Autopilot (pool PROJECT.svc.id.goog), which is how bq2pg's pods get a
# Google identity without a key file (iam.tf).

# The nodes' own identity. Without one, Autopilot uses the Compute Engine default service
# account, which often holds Editor on the project; this one may only write logs and metrics
# (roles/container.defaultNodeServiceAccount) and pull from our repository (registry.tf).
resource "google_service_account" "nodes" {
  account_id   = "${var.name}-nodes"
  display_name = "GKE nodes of ${var.name}"
  description  = "Node identity of the ${var.name} Autopilot cluster: logs, metrics, image pulls only."

  depends_on = [google_project_service.apis]
}

resource "google_project_iam_member" "nodes_default" {
  project = var.project_id
  role    = "roles/container.defaultNodeServiceAccount"
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_container_cluster" "bq2pg" {
  #checkov:skip=CKV_GCP_12:Autopilot always runs GKE Dataplane V2, which enforces NetworkPolicy; the network_policy block configures the Calico add-on of Standard clusters, not Autopilot.
  #checkov:skip=CKV_GCP_66:No attestation pipeline signs the bq2pg image, so Binary Authorization could only enforce the allow-all default policy; images come from an immutable-tag repository instead.
  #checkov:skip=CKV_GCP_61:Autopilot enables intranode visibility by default (GKE docs, "Setting up intranode visibility"), and the subnet has flow logs (network.tf); the setting is left to Autopilot.
  #checkov:skip=CKV_GCP_69:Autopilot always runs the GKE metadata server (Workload Identity cannot be turned off); the node_config block checkov looks for does not exist on Autopilot.
  #checkov:skip=CKV_GCP_65:Google Groups for RBAC needs a gke-security-groups group in a Cloud Identity or Workspace domain, which not every adopter has; operators get cluster access through IAM roles, and bq2pg's pods need no RBAC.
  name     = var.name
  location = var.region

  enable_autopilot    = true
  deletion_protection = var.deletion_protection

  network    = google_compute_network.bq2pg.id
  subnetwork = google_compute_subnetwork.bq2pg.id

  # VPC-native: pods and Services take their addresses from the subnet's secondary ranges,
  # so the pods reach Cloud SQL's private IP over the VPC peering directly.
  ip_allocation_policy {
    cluster_secondary_range_name  = local.pods_range_name
    services_secondary_range_name = local.services_range_name
  }

  # Nodes have private IPs only; the control plane's public endpoint (if kept) answers only
  # the networks listed below.
  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = var.private_endpoint
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.master_authorized_networks
      content {
        cidr_block   = cidr_blocks.value.cidr_block
        display_name = cidr_blocks.value.display_name
      }
    }
  }

  release_channel {
    channel = var.release_channel
  }

  # Autopilot reads the node service account from the auto-provisioning defaults.
  cluster_autoscaling {
    auto_provisioning_defaults {
      service_account = google_service_account.nodes.email
      oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    }
  }

  # No client-certificate login to the API server: access goes through IAM (gcloud
  # credentials), which can be revoked; a client certificate could not.
  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  resource_labels = var.labels

  depends_on = [
    google_project_iam_member.nodes_default,
    google_compute_router_nat.bq2pg,
  ]
}
