"""operate stage."""
