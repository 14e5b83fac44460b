provider "google" {
  project = var.project_id
  region  = var.region

  # Every resource that takes labels gets these, so the bill can be split by app.
  default_labels = var.labels
}
