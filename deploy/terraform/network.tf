# A VPC of its own: one subnet for the cluster (with secondary ranges for pods and
# Services), a peering range for Cloud SQL's private IP, and Cloud NAT for outbound traffic.

resource "google_compute_network" "bq2pg" {
  name                    = var.name
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"

  depends_on = [google_project_service.apis]
}

resource "google_compute_subnetwork" "bq2pg" {
  name    = var.name
  region  = var.region
  network = google_compute_network.bq2pg.id

  ip_cidr_range = var.subnet_cidr

  # The nodes have no public IPs: Private Google Access lets them (and the pods) reach
  # BigQuery, Secret Manager and Artifact Registry on Google's network.
  private_ip_google_access = true

  secondary_ip_range {
    range_name    = local.pods_range_name
    ip_cidr_range = var.pods_cidr
  }

  secondary_ip_range {
    range_name    = local.services_range_name
    ip_cidr_range = var.services_cidr
  }

  # Flow logs for incident review; sampled and aggregated to keep the logging bill small.
  log_config {
    aggregation_interval = "INTERVAL_5_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# An explicit deny-all for inbound traffic, logged, just above the implied rule: GKE adds
# the allow rules it needs (control plane to nodes, load balancer health checks) at higher
# priority, and anything else that reaches the VPC is refused and shows up in the logs.
resource "google_compute_firewall" "deny_all_ingress" {
  name      = "${var.name}-deny-all-ingress"
  network   = google_compute_network.bq2pg.id
  direction = "INGRESS"
  priority  = 65534

  source_ranges = ["0.0.0.0/0"]

  deny {
    protocol = "all"
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# Private services access: Cloud SQL's private IP comes from this range, reached over a
# peering between this VPC and Google's service producer network.
resource "google_compute_global_address" "private_services" {
  name          = "${var.name}-private-services"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  address       = cidrhost(var.private_service_cidr, 0)
  prefix_length = tonumber(split("/", var.private_service_cidr)[1])
  network       = google_compute_network.bq2pg.id
}

resource "google_service_networking_connection" "private_services" {
  network                 = google_compute_network.bq2pg.id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.private_services.name]
}

# Cloud NAT: outbound internet for the private nodes, to pull ghcr.io/bq2pg/bq2pg.
# Nothing can connect in through it.
resource "google_compute_router" "bq2pg" {
  count = var.enable_cloud_nat ? 1 : 0

  name    = var.name
  region  = var.region
  network = google_compute_network.bq2pg.id
}

resource "google_compute_router_nat" "bq2pg" {
  count = var.enable_cloud_nat ? 1 : 0

  name                               = var.name
  router                             = google_compute_router.bq2pg[0].name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  subnetwork {
    name                    = google_compute_subnetwork.bq2pg.id
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}
