"""Shipped YAML configs of :mod:`hyro_edu.tree_alignment.train`."""
