"""Views of a campaign for people: results tables, the HTML report, live progress."""
