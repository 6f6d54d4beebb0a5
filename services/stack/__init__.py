"""Running the whole stack locally under supervisord."""
