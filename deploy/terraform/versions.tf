# Terraform and provider versions.
#
# The configuration uses startswith()/endswith() and lifecycle preconditions (Terraform 1.3+)
# and Cloud SQL's `ssl_mode` (provider 6.0 removed the legacy `require_ssl`). It has not been
# run by terraform here (see README.md, "What was checked").
terraform {
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0.0, < 8.0.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.6.0, < 4.0.0"
    }
  }

  # The state holds the database password (random_password, the Secret Manager version and
  # the Cloud SQL user all keep it in plain text), so keep it in a bucket only operators can
  # read: uniform bucket-level access, versioning on, public access prevention enforced.
  # Create the bucket first, then uncomment and run `terraform init -migrate-state`.
  #
  # backend "gcs" {
  #   bucket = "my-project-bq2pg-tfstate"
  #   prefix = "bq2pg"
  # }
}
