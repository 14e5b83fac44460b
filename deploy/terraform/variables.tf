# Inputs. Every variable has a type and a description; those a person types in are
# validated here, so a typo fails at `terraform plan` instead of halfway through an apply.

# --- Project and naming ------------------------------------------------------------------

variable "project_id" {
  description = "Google Cloud project that holds the cluster, the database and the service accounts."
  type        = string

  validation {
    # Project IDs: 6-30 characters, lowercase letters, digits and hyphens, starting with a
    # letter and not ending with a hyphen.
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project ID (6-30 characters: a-z, 0-9, -), not a project name or number."
  }
}

variable "billing_project_id" {
  description = "Project billed for the BigQuery Storage Read sessions (bq2pg's `sources.*.project`); null means project_id."
  type        = string
  default     = null

  validation {
    condition     = var.billing_project_id == null ? true : can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.billing_project_id))
    error_message = "billing_project_id must be null or a project ID (6-30 characters: a-z, 0-9, -)."
  }
}

variable "region" {
  description = "Region of the cluster, the database, the subnet and (by default) the image repository, e.g. us-central1."
  type        = string
  default     = "us-central1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a region name such as us-central1 or europe-west4 (not a zone)."
  }
}

variable "name" {
  description = "Prefix of every resource name (network, cluster, instance, service accounts, secret)."
  type        = string
  default     = "bq2pg"

  validation {
    # Service account IDs are "<name>-nodes" and "<name>-app", at most 30 characters.
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.name))
    error_message = "name must be 3-24 characters of a-z, 0-9 and -, starting with a letter."
  }
}

variable "labels" {
  description = "Labels put on every resource that takes labels (the provider's default_labels)."
  type        = map(string)
  default = {
    app        = "bq2pg"
    managed-by = "terraform"
  }

  validation {
    condition = alltrue([
      for k, v in var.labels :
      can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))
    ])
    error_message = "Label keys must match ^[a-z][a-z0-9_-]{0,62}$ and values ^[a-z0-9_-]{0,63}$."
  }
}

variable "deletion_protection" {
  description = "Refuse to destroy the cluster and the database (Terraform and, for Cloud SQL, every other API too). Set false and apply before `terraform destroy`."
  type        = bool
  default     = true
}

# --- Network -----------------------------------------------------------------------------

variable "subnet_cidr" {
  description = "Primary range of the subnet (the nodes' addresses)."
  type        = string
  default     = "10.10.0.0/20"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be an IPv4 CIDR block such as 10.10.0.0/20."
  }
}

variable "pods_cidr" {
  description = "Secondary range of the subnet for the pods (VPC-native cluster)."
  type        = string
  default     = "10.20.0.0/16"

  validation {
    condition     = can(cidrhost(var.pods_cidr, 0))
    error_message = "pods_cidr must be an IPv4 CIDR block such as 10.20.0.0/16."
  }
}

variable "services_cidr" {
  description = "Secondary range of the subnet for the Kubernetes Services."
  type        = string
  default     = "10.30.0.0/20"

  validation {
    condition     = can(cidrhost(var.services_cidr, 0))
    error_message = "services_cidr must be an IPv4 CIDR block such as 10.30.0.0/20."
  }
}

variable "private_service_cidr" {
  description = "Range reserved for private services access (Cloud SQL's private IP is taken from it); /24 or larger."
  type        = string
  default     = "10.40.0.0/20"

  validation {
    # Google requires at least a /24 for a private services access allocation.
    condition     = can(cidrhost(var.private_service_cidr, 0)) && try(tonumber(split("/", var.private_service_cidr)[1]) <= 24, false)
    error_message = "private_service_cidr must be an IPv4 CIDR block of /24 or larger, such as 10.40.0.0/20."
  }
}

variable "enable_cloud_nat" {
  description = "Give the private nodes outbound internet access through Cloud NAT (needed to pull ghcr.io/bq2pg/bq2pg; not needed once the image is in the Artifact Registry repository)."
  type        = bool
  default     = true
}

# --- GKE Autopilot -----------------------------------------------------------------------

variable "release_channel" {
  description = "GKE release channel: how soon the cluster takes new Kubernetes versions."
  type        = string
  default     = "REGULAR"

  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE", "EXTENDED"], var.release_channel)
    error_message = "release_channel must be RAPID, REGULAR, STABLE or EXTENDED."
  }
}

variable "master_authorized_networks" {
  description = "CIDR blocks allowed to reach the cluster's control plane (kubectl, CI). Empty: only from inside the VPC."
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  default = []

  validation {
    condition     = alltrue([for n in var.master_authorized_networks : can(cidrhost(n.cidr_block, 0))])
    error_message = "Every master_authorized_networks[].cidr_block must be a CIDR block such as 203.0.113.0/24."
  }

  validation {
    # 0.0.0.0/0 would undo the point of the list.
    condition     = alltrue([for n in var.master_authorized_networks : !endswith(n.cidr_block, "/0")])
    error_message = "master_authorized_networks must not contain a /0 block."
  }
}

variable "private_endpoint" {
  description = "Give the control plane no public endpoint at all (kubectl then has to run from inside the VPC)."
  type        = bool
  default     = false
}

# --- Cloud SQL for PostgreSQL ------------------------------------------------------------

variable "postgres_version" {
  description = "Cloud SQL database version."
  type        = string
  default     = "POSTGRES_17"

  validation {
    condition     = contains(["POSTGRES_16", "POSTGRES_17"], var.postgres_version)
    error_message = "postgres_version must be POSTGRES_16 or POSTGRES_17."
  }
}

variable "sql_edition" {
  description = "Cloud SQL edition: ENTERPRISE (db-custom-* tiers) or ENTERPRISE_PLUS (db-perf-optimized-N-* tiers)."
  type        = string
  default     = "ENTERPRISE"

  validation {
    condition     = contains(["ENTERPRISE", "ENTERPRISE_PLUS"], var.sql_edition)
    error_message = "sql_edition must be ENTERPRISE or ENTERPRISE_PLUS."
  }
}

variable "sql_tier" {
  description = "Cloud SQL machine type: db-custom-<vCPUs>-<memory MB> (ENTERPRISE, at least 8 GB: maintenance_work_mem is 1 GB) or db-perf-optimized-N-<vCPUs> (ENTERPRISE_PLUS)."
  type        = string
  default     = "db-custom-4-16384"

  validation {
    # Shared-core tiers (db-f1-micro, db-g1-small) are left out: they have less memory than
    # the 1 GB maintenance_work_mem below, and no SLA.
    condition = (
      can(regex("^db-perf-optimized-N-[0-9]+$", var.sql_tier)) ||
      try(tonumber(regex("^db-custom-[0-9]+-([0-9]+)$", var.sql_tier)[0]) >= 8192, false)
    )
    error_message = "sql_tier must be db-custom-<vCPUs>-<MB> with at least 8192 MB, or db-perf-optimized-N-<vCPUs>."
  }
}

variable "availability_type" {
  description = "REGIONAL: a standby in a second zone with automatic failover (production). ZONAL: one zone, half the price."
  type        = string
  default     = "REGIONAL"

  validation {
    condition     = contains(["REGIONAL", "ZONAL"], var.availability_type)
    error_message = "availability_type must be REGIONAL or ZONAL."
  }
}

variable "disk_size_gb" {
  description = "Initial SSD size of the database in GB; it grows by itself (disk_autoresize) up to disk_autoresize_limit_gb."
  type        = number
  default     = 100

  validation {
    condition     = var.disk_size_gb >= 10 && floor(var.disk_size_gb) == var.disk_size_gb
    error_message = "disk_size_gb must be a whole number of at least 10."
  }
}

variable "disk_autoresize_limit_gb" {
  description = "Largest size the database disk may grow to, in GB (0: no limit). A disk never shrinks."
  type        = number
  default     = 0

  validation {
    condition     = var.disk_autoresize_limit_gb >= 0 && floor(var.disk_autoresize_limit_gb) == var.disk_autoresize_limit_gb
    error_message = "disk_autoresize_limit_gb must be 0 or a whole number of GB."
  }
}

variable "backup_start_time" {
  description = "UTC time (HH:MM) at which the daily backup starts."
  type        = string
  default     = "03:00"

  validation {
    condition     = can(regex("^([01][0-9]|2[0-3]):[0-5][0-9]$", var.backup_start_time))
    error_message = "backup_start_time must be HH:MM in 24-hour UTC time."
  }
}

variable "backup_retained_count" {
  description = "Number of daily backups kept."
  type        = number
  default     = 14

  validation {
    condition     = var.backup_retained_count >= 1 && var.backup_retained_count <= 365 && floor(var.backup_retained_count) == var.backup_retained_count
    error_message = "backup_retained_count must be a whole number from 1 to 365."
  }
}

variable "pitr_log_retention_days" {
  description = "Days of WAL kept for point-in-time recovery (1-7 on ENTERPRISE, up to 35 on ENTERPRISE_PLUS)."
  type        = number
  default     = 7

  validation {
    condition     = var.pitr_log_retention_days >= 1 && var.pitr_log_retention_days <= 35 && floor(var.pitr_log_retention_days) == var.pitr_log_retention_days
    error_message = "pitr_log_retention_days must be a whole number from 1 to 35."
  }
}

variable "sql_ssl_mode" {
  description = "TLS for database connections: ENCRYPTED_ONLY (TLS required; bq2pg uses sslmode=verify-ca with the server CA) or TRUSTED_CLIENT_CERTIFICATE_REQUIRED (also a client certificate per client)."
  type        = string
  default     = "ENCRYPTED_ONLY"

  validation {
    # ALLOW_UNENCRYPTED_AND_ENCRYPTED is left out on purpose: the password would cross the
    # network in clear to any pod that asks for a plain connection.
    condition     = contains(["ENCRYPTED_ONLY", "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"], var.sql_ssl_mode)
    error_message = "sql_ssl_mode must be ENCRYPTED_ONLY or TRUSTED_CLIENT_CERTIFICATE_REQUIRED."
  }
}

variable "database_name" {
  description = "PostgreSQL database bq2pg loads into and keeps its state in."
  type        = string
  default     = "bq2pg"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.database_name))
    error_message = "database_name must be a lowercase PostgreSQL identifier of at most 63 characters."
  }
}

variable "database_user" {
  description = "PostgreSQL role bq2pg logs in as (a Cloud SQL built-in user; its password goes to Secret Manager)."
  type        = string
  default     = "bq2pg"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.database_user))
    error_message = "database_user must be a lowercase PostgreSQL identifier of at most 63 characters."
  }
}

variable "extra_database_flags" {
  description = "More Cloud SQL database flags, name => value (in the flag's Cloud SQL unit). The flags set in sql.tf cannot be overridden here."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([
      for k in keys(var.extra_database_flags) : !contains([
        "maintenance_work_mem", "max_wal_size", "checkpoint_timeout",
        "max_parallel_maintenance_workers", "log_checkpoints", "log_connections",
        "log_disconnections", "log_lock_waits", "log_min_messages", "log_min_error_statement",
        "log_temp_files", "log_min_duration_statement", "log_statement",
        "cloudsql.enable_pgaudit", "pgaudit.log",
      ], k)
    ])
    error_message = "extra_database_flags must not repeat a flag that sql.tf already sets."
  }
}

# --- bq2pg's identity --------------------------------------------------------------------

variable "bigquery_datasets" {
  description = "Your own BigQuery datasets bq2pg reads, as \"project.dataset\" (roles/bigquery.dataViewer on each). Public datasets such as patents-public-data.patents need nothing."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for d in var.bigquery_datasets : can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]\\.[A-Za-z0-9_]{1,1024}$", d))])
    error_message = "Every bigquery_datasets entry must be \"project-id.dataset_id\"."
  }
}

variable "grant_bigquery_job_user" {
  description = "Also grant roles/bigquery.jobUser on the billing project, so `bq2pg plan` can price a read with a free dry-run query (without it the estimate comes from table metadata)."
  type        = bool
  default     = false
}

variable "k8s_namespace" {
  description = "Kubernetes namespace of bq2pg's pods (deploy/k8s uses bq2pg)."
  type        = string
  default     = "bq2pg"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.k8s_namespace))
    error_message = "k8s_namespace must be a DNS-1123 label (a-z, 0-9, -; at most 63 characters)."
  }
}

variable "k8s_service_account" {
  description = "Kubernetes ServiceAccount of bq2pg's pods, bound to the Google service account by Workload Identity (deploy/k8s uses bq2pg)."
  type        = string
  default     = "bq2pg"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.k8s_service_account))
    error_message = "k8s_service_account must be a DNS-1123 label (a-z, 0-9, -; at most 63 characters)."
  }
}

# --- Artifact Registry -------------------------------------------------------------------

variable "artifact_registry_location" {
  description = "Location of the Docker repository (a region, or us/europe/asia); null means region."
  type        = string
  default     = null

  validation {
    condition     = var.artifact_registry_location == null ? true : can(regex("^([a-z]+-[a-z]+[0-9]+|us|europe|asia)$", var.artifact_registry_location))
    error_message = "artifact_registry_location must be null, a region such as us-central1, or us, europe or asia."
  }
}

variable "immutable_tags" {
  description = "Refuse to move an existing image tag (a released 0.1.0 stays what was tested); false allows moving tags such as latest."
  type        = bool
  default     = true
}
