"""End-to-end tests: whole realistic scripts run as is, migrated, and on 1 and 2 processes."""
