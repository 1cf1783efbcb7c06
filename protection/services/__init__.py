"""Business operations the views and jobs call."""
