"""The campaign's spec: manifest source, items, templates, the plan and its diff."""
