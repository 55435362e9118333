"""Renderers for `--format text|json|github|sarif` and git-compatible unified diffs."""

FORMATS = ("text", "json", "github", "sarif")
