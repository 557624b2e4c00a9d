"""torch modules built from `space.layout` plans, using timm's layers."""
