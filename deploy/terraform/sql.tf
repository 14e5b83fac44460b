# Cloud SQL for PostgreSQL: private IP only, TLS required, daily backups with point-in-time
# recovery, and the bulk-load settings `bq2pg doctor` advises.

resource "random_password" "db" {
  length = 32
  # Letters, digits, - and _ only: the password then survives being pasted into a
  # libpq URL or a shell without quoting.
  special          = true
  override_special = "-_"
}

resource "google_sql_database_instance" "bq2pg" {
  #checkov:skip=CKV_GCP_6:ssl_mode is ENCRYPTED_ONLY by default (TLS required on every connection; bq2pg verifies the server with sslmode=verify-ca); checkov passes only TRUSTED_CLIENT_CERTIFICATE_REQUIRED, which var.sql_ssl_mode offers for teams that issue client certificates.
  #checkov:skip=CKV_GCP_79:The default, POSTGRES_17, is a current supported major; moving to a newer major is a deliberate change of var.postgres_version after testing bq2pg against it, not a default to take blindly.
  #checkov:skip=CKV2_GCP_13:log_duration logs a line for every statement, and bq2pg's workers write a heartbeat every 2 s and its API polls run events every 0.5 s; Query Insights and log_lock_waits cover slow work without that volume.
  #checkov:skip=CKV_GCP_108:log_hostname makes the server do a reverse DNS lookup on every connection; the clients are pod IPs with no PTR records, so it only adds connection latency to what log_connections already logs (the client IP).
  name             = var.name
  region           = var.region
  database_version = var.postgres_version

  # Terraform refuses to destroy it; settings.deletion_protection_enabled below makes the
  # Cloud SQL API refuse too (console, gcloud).
  deletion_protection = var.deletion_protection

  settings {
    tier              = var.sql_tier
    edition           = var.sql_edition
    availability_type = var.availability_type

    disk_type             = "PD_SSD"
    disk_size             = var.disk_size_gb
    disk_autoresize       = true
    disk_autoresize_limit = var.disk_autoresize_limit_gb

    deletion_protection_enabled = var.deletion_protection
    user_labels                 = var.labels

    ip_configuration {
      # No public IP: the database is reachable only from the VPC (the cluster's pods),
      # through the private services access peering (network.tf).
      ipv4_enabled    = false
      private_network = google_compute_network.bq2pg.id
      ssl_mode        = var.sql_ssl_mode
    }

    backup_configuration {
      enabled    = true
      start_time = var.backup_start_time
      # Point-in-time recovery keeps the WAL; a REGIONAL instance requires it anyway.
      point_in_time_recovery_enabled = true
      transaction_log_retention_days = var.pitr_log_retention_days

      backup_retention_settings {
        retained_backups = var.backup_retained_count
        retention_unit   = "COUNT"
      }
    }

    # Sunday 04:00 UTC, on the later ("stable") update track.
    maintenance_window {
      day          = 7
      hour         = 4
      update_track = "stable"
    }

    insights_config {
      query_insights_enabled  = true
      record_application_tags = true
      record_client_address   = false
    }

    # --- Bulk-load tuning: bq2pg doctor's SETTING_RULES (src/bq2pg/doctor.py) -----------
    # A Cloud SQL flag takes a plain number in the setting's base unit, the unit
    # pg_settings.unit shows: kB for maintenance_work_mem, MB for max_wal_size, seconds for
    # checkpoint_timeout. tests/test_deploy_terraform.py checks these values against the
    # rules, so they follow the code.

    # 1 GB (1048576 kB): the primary-key and index builds after a load sort in memory.
    database_flags {
      name  = "maintenance_work_mem"
      value = "1048576"
    }

    # 4 GB (4096 MB): fewer checkpoints during a load, each of which writes full pages again.
    database_flags {
      name  = "max_wal_size"
      value = "4096"
    }

    # 15 min (900 s): spaces checkpoints out over a long load.
    database_flags {
      name  = "checkpoint_timeout"
      value = "900"
    }

    # The btree builds after a load use up to 4 parallel workers.
    database_flags {
      name  = "max_parallel_maintenance_workers"
      value = "4"
    }

    # Not set as flags, on purpose:
    # - wal_level: doctor suggests minimal (a replace's index builds then write no WAL). Cloud
    #   SQL has no wal_level flag: it keeps at least replica, because point-in-time recovery
    #   archives the WAL and the REGIONAL standby and read replicas stream it; minimal would
    #   make all three impossible. Doctor will keep warning about it here; that is expected.
    # - synchronous_commit: doctor only asks that it is not off; PostgreSQL's default (on)
    #   already passes, so there is nothing to set.
    # - default_toast_compression: doctor suggests lz4. It is a per-role setting, and we
    #   could not confirm that Cloud SQL lists it as a flag, so the README sets it with
    #   `ALTER ROLE ... SET default_toast_compression = 'lz4'` after the first apply (what
    #   doctor itself prints). If your Cloud SQL version lists the flag, put it in
    #   var.extra_database_flags instead.

    # --- Logging, for audits and incident review (CIS benchmark, checkov CKV_GCP_51-57,
    # 109-111) ------------------------------------------------------------------------
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }

    database_flags {
      name  = "log_connections"
      value = "on"
    }

    database_flags {
      name  = "log_disconnections"
      value = "on"
    }

    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }

    database_flags {
      name  = "log_min_messages"
      value = "warning"
    }

    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }

    # 0: log every temporary file (an index build that spills to disk shows up).
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }

    # -1: no statement logging by duration; statements can carry data.
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }

    # DDL only: bq2pg's CREATE/ALTER/DROP are logged, its COPY rows are not.
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }

    # pgAudit for role and DDL changes; it takes effect in a database after
    # `CREATE EXTENSION pgaudit` there.
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }

    database_flags {
      name  = "pgaudit.log"
      value = "ddl,role"
    }

    dynamic "database_flags" {
      for_each = var.extra_database_flags
      content {
        name  = database_flags.key
        value = database_flags.value
      }
    }
  }

  lifecycle {
    precondition {
      condition     = (var.sql_edition == "ENTERPRISE_PLUS") == startswith(var.sql_tier, "db-perf-optimized-N-")
      error_message = "ENTERPRISE_PLUS takes db-perf-optimized-N-* tiers and ENTERPRISE takes db-custom-* tiers."
    }
    precondition {
      condition     = var.sql_edition == "ENTERPRISE_PLUS" || var.pitr_log_retention_days <= 7
      error_message = "pitr_log_retention_days can exceed 7 only on ENTERPRISE_PLUS."
    }
  }

  # The private IP comes from the peering range, which must exist first (the instance does
  # not reference the connection, so Terraform cannot see the dependency by itself).
  depends_on = [google_service_networking_connection.private_services]
}

resource "google_sql_database" "bq2pg" {
  name     = var.database_name
  instance = google_sql_database_instance.bq2pg.name
}

resource "google_sql_user" "bq2pg" {
  name     = var.database_user
  instance = google_sql_database_instance.bq2pg.name
  type     = "BUILT_IN"
  password = random_password.db.result

  # PostgreSQL refuses to drop a role that still owns tables; on destroy, leave the role to
  # go with the instance instead of failing.
  deletion_policy = "ABANDON"
}
