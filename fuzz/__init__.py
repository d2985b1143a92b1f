"""Fuzz targets for the gateway's parsers (run with ``make fuzz``)."""
