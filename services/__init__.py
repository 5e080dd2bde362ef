"""Ray Serve reward services (see DESIGN.md)."""
