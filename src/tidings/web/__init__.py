"""The operator's dashboard and the inbox widget example (static pages and their data)."""
