"""Test helpers shared across the test tree."""
