"""Pure helpers (layer L0): stdlib only."""
