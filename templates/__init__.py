"""Jinja2 templates for code the migrator generates whole (module form, launch snippets)."""
