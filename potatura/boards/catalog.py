"""Board catalog (placeholder until the catalog issue lands)."""
