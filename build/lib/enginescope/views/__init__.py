"""Named incident queries and panel definitions shared by the dashboard and the config generator."""
