"""Process-wide observability: structlog configuration and the one metrics registry."""
