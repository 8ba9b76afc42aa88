"""Transport-level guards applied before a body is read."""
