"""CLI commands for this area (registered on radfinder.cli.app.app)."""
