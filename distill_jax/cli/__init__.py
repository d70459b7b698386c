"""Command-line entry points (absl); they parse flags and configs and call the library packages."""
