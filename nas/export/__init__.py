"""What leaves the search: model-factory entries (YAML + a timm module), the zoo that registers them with timm, and
timm's own scripts run with them registered."""
