"""Model families: one file each, registered in models/registry.py."""
